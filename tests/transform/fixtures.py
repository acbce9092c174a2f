"""Describe answers and CDC messages shaped like the Salesforce reference (2.3, 4.3-4.7)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.config.mapping import MappingConfig, ObjectMapping, PropertyMapping
from pipeline.transform.schema import ObjectSchema, schema_from_describe

ACCOUNT_ID = "001RM000004UF9sYAG"
OTHER_ACCOUNT_ID = "001RM000004UF9tYAG"
CONTACT_ID = "003RM000001aBcDYAU"
ADDRESS_PARTS = ("Street", "City", "State", "PostalCode", "Country", "Latitude")


def describe_field(name: str, sf_type: str, **extra: Any) -> dict[str, Any]:
    field = {
        "name": name,
        "type": sf_type,
        "label": name,
        "nillable": True,
        "calculated": False,
        "unique": False,
        "idLookup": False,
        "externalId": False,
        "compoundFieldName": None,
        "picklistValues": [],
        "referenceTo": [],
    }
    field.update(extra)
    return field


def address_fields(parent: str) -> list[dict[str, Any]]:
    prefix = parent.removesuffix("Address")
    return [
        describe_field(
            f"{prefix}{part}",
            "double" if part == "Latitude" else "string",
            compoundFieldName=parent,
        )
        for part in ADDRESS_PARTS
    ]


ACCOUNT_DESCRIBE: dict[str, Any] = {
    "name": "Account",
    "fields": [
        describe_field("Id", "id", idLookup=True, nillable=False),
        describe_field("Name", "string", nameField=True, extraTypeInfo="switchablepersonname"),
        # Person accounts: the parts of a person's Name (null on business accounts).
        describe_field("Salutation", "picklist", compoundFieldName="Name"),
        describe_field("FirstName", "string", compoundFieldName="Name"),
        describe_field("LastName", "string", compoundFieldName="Name"),
        describe_field("IsPersonAccount", "boolean"),
        describe_field("SystemModstamp", "datetime"),
        describe_field("LastActivityDate", "date"),
        describe_field("Industry", "picklist"),
        describe_field("AnnualRevenue", "currency"),
        describe_field("NumberOfEmployees", "int"),
        describe_field("Fax", "phone"),
        describe_field("Description", "textarea"),
        describe_field("Active__c", "boolean"),
        describe_field("Tags__c", "multipicklist"),
        describe_field("Since__c", "date"),
        describe_field("LastModifiedDate", "datetime"),
        describe_field("Score__c", "double", calculated=True),
        describe_field("Ext_Key__c", "string", externalId=True, unique=True, idLookup=True),
        describe_field("BillingAddress", "address"),
        *address_fields("BillingAddress"),
        describe_field("Loc__c", "location"),
        describe_field("Loc__Latitude__s", "double", compoundFieldName="Loc__c"),
        describe_field("Loc__Longitude__s", "double", compoundFieldName="Loc__c"),
    ],
}

CONTACT_DESCRIBE: dict[str, Any] = {
    "name": "Contact",
    "fields": [
        describe_field("Id", "id", idLookup=True),
        describe_field("Name", "string"),
        describe_field("Salutation", "picklist", compoundFieldName="Name"),
        describe_field("FirstName", "string", compoundFieldName="Name"),
        describe_field("LastName", "string", compoundFieldName="Name"),
        describe_field("Email", "email", idLookup=True),
        describe_field("MailingAddress", "address"),
        *address_fields("MailingAddress"),
    ],
}


def account_schema() -> ObjectSchema:
    return schema_from_describe(ACCOUNT_DESCRIBE)


def contact_schema() -> ObjectSchema:
    return schema_from_describe(CONTACT_DESCRIBE)


def mapping(
    fields: dict[str, str],
    *,
    sfdc_object: str = "Account",
    group_type: str = "account",
    group_name_field: str = "Id",
    on_delete: str = "ignore",
) -> ObjectMapping:
    return ObjectMapping.model_validate(
        {
            "sfdc_object": sfdc_object,
            "group_type": group_type,
            "group_name_field": group_name_field,
            "group_properties": [
                PropertyMapping(sfdc_field=field, amplitude_property=prop)
                for field, prop in fields.items()
            ],
            "on_delete": on_delete,
        }
    )


def cdc_message(
    change_type: str,
    record_ids: Sequence[str] = (ACCOUNT_ID,),
    body: dict[str, Any] | None = None,
    *,
    entity: str = "Account",
    changed: Sequence[str] = (),
    commit_ts: int = 1714157000000,
    commit_number: int = 1100670840000,
    sequence_number: int = 1,
    replay_id: int = 18098167,
    **header_extra: Any,
) -> dict[str, Any]:
    header = {
        "entityName": entity,
        "recordIds": list(record_ids),
        "changeType": change_type,
        "changeOrigin": "com/salesforce/api/rest/66.0;client=backfill-svc",
        "transactionKey": "00005e1a-9e62-2554-3880-3c3718bd6308",
        "sequenceNumber": sequence_number,
        "commitTimestamp": commit_ts,
        "commitNumber": commit_number,
        "commitUser": "005RM000001hv4SYAQ",
        "changedFields": list(changed),
        **header_extra,
    }
    return {
        "channel": f"/data/{entity}ChangeEvent",
        "data": {
            "schema": "V2MGwDA2aIP0yQS98S2L6Q",
            "event": {"replayId": replay_id},
            "payload": {"ChangeEventHeader": header, **(body or {})},
        },
    }


# Reference 4.5: the composed CREATE.
CREATE_BODY: dict[str, Any] = {
    "Name": "Acme",
    "Industry": "Biotechnology",
    "BillingAddress": {
        "Street": "415 Mission Street",
        "City": "San Francisco",
        "State": "CA",
        "PostalCode": "94105",
        "Country": "United States",
    },
    "OwnerId": "005RM000001hv4SYAQ",
    "CreatedDate": "2024-04-26T18:38:05.000Z",
    "CreatedById": "005RM000001hv4SYAQ",
    "LastModifiedDate": "2024-04-26T18:38:05.000Z",
    "LastModifiedById": "005RM000001hv4SYAQ",
}

# Reference 4.5: the composed UPDATE (BillingCity changed, Fax cleared).
UPDATE_BODY: dict[str, Any] = {
    "BillingAddress": {"City": "Oakland"},
    "Fax": None,
    "LastModifiedDate": "2024-04-26T18:43:20.000Z",
}
UPDATE_CHANGED = ("BillingAddress.City", "Fax", "LastModifiedDate")


def account_config(properties: dict[str, str], on_delete: str = "ignore") -> MappingConfig:
    """One Account mapping, groups named by Id, of ``properties`` (field -> property)."""
    return MappingConfig.model_validate(
        {
            "version": 1,
            "sync_cadence": {"mode": "daily", "at": "00:00"},
            "mappings": [
                {
                    "sfdc_object": "Account",
                    "group_type": "account",
                    "group_name_field": "Id",
                    "group_properties": [
                        {"sfdc_field": name, "amplitude_property": prop}
                        for name, prop in properties.items()
                    ],
                    "on_delete": on_delete,
                }
            ],
        }
    )
