"""What the org offers the form: which fields name one group per record."""

from __future__ import annotations

from pipeline.console.catalog import NOT_NAMING, field_options


def _field(name: str, kind: str = "string", **flags: bool) -> dict[str, object]:
    return {"name": name, "label": name, "type": kind, **flags}


def test_only_id_and_unique_fields_name_one_group_per_record() -> None:
    """Id lookup fields (Account.Name, Contact.Email) and external ids without the unique
    flag repeat in real orgs: they go with the other fields, with the hint."""
    options = field_options(
        {
            "fields": [
                _field("Name", idLookup=True),
                _field("Email", "email", idLookup=True),
                _field("Legacy_Key__c", externalId=True, idLookup=True),
                _field("Code__c", unique=True),
                _field("Erp_Id__c", externalId=True, unique=True, idLookup=True),
                _field("Industry", "picklist"),
                _field("Id", "id", idLookup=True),
            ]
        }
    )

    assert [o.name for o in options] == [
        "Id",
        "Code__c",
        "Erp_Id__c",
        "Email",
        "Industry",
        "Legacy_Key__c",
        "Name",
    ]
    naming = {o.name: o.names_group for o in options}
    assert naming == {
        "Id": True,
        "Code__c": True,
        "Erp_Id__c": True,
        "Email": False,
        "Industry": False,
        "Legacy_Key__c": False,
        "Name": False,
    }
    by_name = {o.name: o for o in options}
    assert by_name["Name"].group_name_text == f"Name (Name, string): {NOT_NAMING}"
    assert by_name["Erp_Id__c"].group_name_text == "Erp_Id__c (Erp_Id__c, string)"
