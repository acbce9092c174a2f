"""The org model without a network: ids, seeding, writes and their change records."""

from __future__ import annotations

import time

import pytest

from sfamp_sandbox.salesforce.api_error import ApiError
from sfamp_sandbox.salesforce.cdc import RecordChange
from sfamp_sandbox.salesforce.ids import checksum, to_18
from sfamp_sandbox.salesforce.org import Org, Transaction
from sfamp_sandbox.salesforce.seed import seed


def test_ids_have_prefix_and_checksum() -> None:
    org = Org(time.time)
    ids = seed(org, "Plan__c", 100)
    assert all(i.startswith("a0B") and len(i) == 18 for i in ids)
    assert all(i[15:] == checksum(i[:15]) for i in ids)
    assert checksum("001RM000004UF9s") == "YAG"  # documented example


def test_seeding_many_records_keeps_creation_order() -> None:
    org = Org(time.time)
    accounts = seed(org, "Account", 20_000)
    contacts = seed(org, "Contact", 20_000)
    assert list(org.stores["Account"].records) == accounts == sorted(accounts)
    parents = {
        org.stores["Contact"].records[c][org.stores["Contact"].slot("AccountId")] for c in contacts
    }
    assert parents <= set(accounts)
    assert len(parents) > 1000


def test_to_18_accepts_15_and_rejects_bad_checksums() -> None:
    assert to_18("001RM000004UF9s") == "001RM000004UF9sYAG"
    assert to_18("001rm000004uf9syag") == "001RM000004UF9sYAG"  # 18-char ids ignore case
    with pytest.raises(ValueError, match="malformed"):
        to_18("001RM000004UF9s999")
    with pytest.raises(ValueError, match="malformed"):
        to_18("001-bad")


def test_writes_report_changes_with_one_transaction_per_request() -> None:
    changes: list[RecordChange] = []
    org = Org(lambda: 1_715_340_000.0, changes.append)
    tx = Transaction(org.admin.id, "com/salesforce/api/rest/62.0;client=x")
    first = org.create("Contact", {"FirstName": "Ada", "LastName": "Lovelace"}, tx)
    second = org.create("Contact", {"LastName": "Hopper", "Birthdate": "1906-12-09"}, tx)
    org.update("Contact", first, {"FirstName": None}, Transaction(org.admin.id))
    assert [c.sequence_number for c in changes] == [1, 2, 1]
    assert changes[0].transaction_key == changes[1].transaction_key != changes[2].transaction_key
    assert changes[0].fields["Name"] == {"FirstName": "Ada", "LastName": "Lovelace"}
    assert changes[0].fields["CreatedDate"] == "2024-05-10T11:20:00.000Z"
    assert changes[0].change_origin.endswith(";client=x")
    assert changes[1].fields["Birthdate"] == "1906-12-09"
    assert changes[2].changed_fields == ("LastModifiedDate", "Name.FirstName")
    assert changes[2].nulled_fields == ("Name.FirstName",)
    assert changes[2].fields == {
        "LastModifiedDate": "2024-05-10T11:20:00.000Z",
        "Name": {"FirstName": None},
    }
    assert second.startswith("003")


def test_values_are_type_checked() -> None:
    org = Org(time.time)
    tx = Transaction(org.admin.id)
    with pytest.raises(ApiError) as caught:
        org.create("Account", {"Name": "A", "NumberOfEmployees": "many"}, tx)
    assert caught.value.error_code == "JSON_PARSER_ERROR"
    with pytest.raises(ApiError) as caught:
        org.create("Account", {"Name": "A" * 300}, tx)
    assert caught.value.error_code == "STRING_TOO_LONG"
    record_id = org.create("Account", {"Name": "A", "Renewal_Date__c": "2025-01-31"}, tx)
    assert (
        org.live_record("Account", record_id)[org.stores["Account"].slot("Is_Active__c")] is False
    )
