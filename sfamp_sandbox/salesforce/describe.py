"""Describe metadata (global, per object, basic info) built from the object definitions."""

from __future__ import annotations

from typing import Any

from sfamp_sandbox.salesforce.objects import OBJECTS
from sfamp_sandbox.salesforce.schema import NUMBER_TYPES, SOAP_TYPES, FieldDef, ObjectDef
from sfamp_sandbox.salesforce.security import permissionable


def object_urls(obj: ObjectDef, version: str) -> dict[str, str]:
    base = f"/services/data/v{version}/sobjects/{obj.name}"
    return {
        "sobject": base,
        "describe": f"{base}/describe",
        "rowTemplate": f"{base}/{{ID}}",
    }


def object_summary(obj: ObjectDef, version: str) -> dict[str, Any]:
    """One entry of the global describe."""
    return {
        "name": obj.name,
        "label": obj.label,
        "labelPlural": obj.label_plural,
        "keyPrefix": obj.key_prefix,
        "custom": obj.custom,
        "customSetting": False,
        "createable": True,
        "updateable": True,
        "deletable": True,
        "undeletable": True,
        "queryable": True,
        "retrieveable": True,
        "replicateable": True,
        "searchable": True,
        "triggerable": True,
        "layoutable": True,
        "mergeable": obj.name in {"Account", "Contact"},
        "mruEnabled": True,
        "feedEnabled": not obj.custom,
        "activateable": False,
        "deprecatedAndHidden": False,
        "urls": object_urls(obj, version),
    }


def change_event_summary(obj: ObjectDef, version: str) -> dict[str, Any]:
    """Change events are listed as objects too, not queryable."""
    name = f"{obj.name[:-1]}ChangeEvent" if obj.custom else f"{obj.name}ChangeEvent"
    summary = object_summary(obj, version)
    summary.update(
        name=name,
        label=f"{obj.label} Change Event",
        labelPlural=f"{obj.label} Change Events",
        keyPrefix=None,
        createable=False,
        updateable=False,
        deletable=False,
        undeletable=False,
        queryable=False,
        retrieveable=False,
        replicateable=False,
        searchable=False,
        layoutable=False,
        mergeable=False,
        urls={
            "sobject": f"/services/data/v{version}/sobjects/{name}",
            "eventSchema": f"/services/data/v{version}/sobjects/{name}/eventSchema",
        },
    )
    return summary


def global_describe(version: str) -> dict[str, Any]:
    sobjects = [object_summary(o, version) for o in OBJECTS.values()]
    sobjects += [change_event_summary(o, version) for o in OBJECTS.values()]
    return {"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": sobjects}


def _picklist(field: FieldDef) -> list[dict[str, Any]]:
    return [
        {"active": True, "defaultValue": False, "label": v, "value": v, "validFor": None}
        for v in field.picklist
    ]


def describe_field(field: FieldDef) -> dict[str, Any]:
    text_like = field.type not in NUMBER_TYPES and field.type not in {"boolean", "date", "datetime"}
    length = field.length if text_like else 0
    return {
        "name": field.name,
        "label": field.label,
        "type": field.type,
        "soapType": SOAP_TYPES.get(field.type, "xsd:string"),
        "length": length,
        "byteLength": length * 3,
        "precision": field.precision,
        "scale": field.scale,
        "digits": field.precision if field.type == "int" else 0,
        "nillable": field.nillable,
        "unique": field.unique,
        "caseSensitive": False,
        "idLookup": field.id_lookup,
        "externalId": field.external_id,
        "createable": field.createable,
        "updateable": field.updateable,
        "defaultedOnCreate": field.defaulted,
        "defaultValue": False if field.type == "boolean" else None,
        "defaultValueFormula": None,
        "calculated": field.calculated,
        "calculatedFormula": field.formula,
        "autoNumber": False,
        "filterable": field.type not in {"textarea", "address"},
        "sortable": field.type not in {"textarea", "multipicklist", "address"},
        "groupable": field.type in {"string", "picklist", "boolean", "id", "reference", "date"},
        "aggregatable": field.type not in {"textarea", "multipicklist", "address", "boolean"},
        "custom": field.custom,
        "compoundFieldName": field.compound,
        "picklistValues": _picklist(field),
        "restrictedPicklist": False,
        "dependentPicklist": False,
        "controllerName": None,
        "referenceTo": list(field.reference_to),
        "relationshipName": field.relationship_name,
        "polymorphicForeignKey": False,
        "cascadeDelete": False,
        "restrictedDelete": False,
        "namePointing": False,
        "nameField": field.name_field,
        "htmlFormatted": False,
        "encrypted": False,
        "deprecatedAndHidden": False,
        "permissionable": permissionable(field),
        "extraTypeInfo": field.extra_type_info,
        "inlineHelpText": None,
        "highScaleNumber": False,
    }


def child_relationships(obj: ObjectDef) -> list[dict[str, Any]]:
    found = []
    for child in OBJECTS.values():
        for field in child.fields:
            if obj.name in field.reference_to and field.relationship_name not in {None, "Owner"}:
                plural = child.label_plural.replace(" ", "")
                name = f"{plural}__r" if child.custom else plural
                found.append(
                    {
                        "childSObject": child.name,
                        "field": field.name,
                        "relationshipName": name,
                        "cascadeDelete": False,
                        "restrictedDelete": False,
                        "deprecatedAndHidden": False,
                    }
                )
    return found


def describe_object(
    obj: ObjectDef, version: str, hidden: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The object as a user sees it: fields ``hidden`` from them by field-level security are
    left out, as if they did not exist."""
    described = object_summary(obj, version)
    described.update(
        fields=[describe_field(f) for f in obj.fields if f.name not in hidden],
        childRelationships=child_relationships(obj),
        recordTypeInfos=[
            {
                "active": True,
                "available": True,
                "defaultRecordTypeMapping": True,
                "developerName": "Master",
                "master": True,
                "name": "Master",
                "recordTypeId": "012000000000000AAA",
            }
        ],
    )
    return described


def basic_info(obj: ObjectDef, version: str, recent: list[dict[str, Any]]) -> dict[str, Any]:
    return {"objectDescribe": object_summary(obj, version), "recentItems": recent}
