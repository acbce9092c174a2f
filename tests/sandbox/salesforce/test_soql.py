"""SOQL subset: parser shapes and errors, and evaluation against an in-memory org."""

from __future__ import annotations

import pytest

from sfamp_sandbox.salesforce.api_error import ApiError
from sfamp_sandbox.salesforce.org import Org, Transaction
from sfamp_sandbox.salesforce.query import compile_query
from sfamp_sandbox.salesforce.soql import BoolOp, Comparison, Literal, Not, parse

NOW = 1_715_340_000.0  # 2024-05-10T11:20:00Z


def test_parses_field_list_where_order_limit() -> None:
    query = parse(
        "SELECT Id, Name, Account.Name FROM Contact "
        "WHERE (LastName = 'X' OR Email LIKE '%@acme.com') AND CreatedDate >= 2024-01-01T00:00:00Z "
        "ORDER BY LastName DESC NULLS LAST, Id LIMIT 10"
    )
    assert [f.path for f in query.fields] == ["Id", "Name", "Account.Name"]
    assert query.object_name == "Contact"
    assert isinstance(query.where, BoolOp)
    assert query.where.op == "AND"
    assert isinstance(query.where.items[0], BoolOp)
    assert query.where.items[0].op == "OR"
    assert query.where.items[1] == Comparison(
        query.where.items[1].field, ">=", Literal("datetime", "2024-01-01T00:00:00Z")
    )
    assert [(o.field.path, o.descending, o.nulls_first) for o in query.order_by] == [
        ("LastName", True, False),
        ("Id", False, True),
    ]
    assert query.limit == 10


def test_parses_count_in_not_in_and_literals() -> None:
    query = parse(
        "select count() from Account where Industry in ('A', 'B') and not Type != null "
        "and Id not in ('001') and IsDeleted = false and Renewal_Date__c > TODAY "
        "and Health_Score__c < -1.5 and CreatedDate = LAST_N_DAYS:7"
    )
    assert query.count
    assert query.fields == ()
    assert isinstance(query.where, BoolOp)
    ops = list(query.where.items)
    assert isinstance(ops[0], Comparison)
    assert ops[0].op == "in"
    assert isinstance(ops[1], Not)
    assert isinstance(ops[2], Comparison)
    assert ops[2].op == "notin"
    assert ops[3] == Comparison(ops[3].field, "=", Literal("boolean", False))  # type: ignore[union-attr]
    assert ops[4].value == Literal("dateword", ("TODAY", 0))  # type: ignore[union-attr]
    assert ops[5].value == Literal("number", -1.5)  # type: ignore[union-attr]
    assert ops[6].value == Literal("dateword", ("LAST_N_DAYS", 7))  # type: ignore[union-attr]


def test_string_escapes() -> None:
    query = parse(r"SELECT Id FROM Account WHERE Name = 'O\'Brien \\ Co'")
    assert isinstance(query.where, Comparison)
    assert query.where.value == Literal("string", "O'Brien \\ Co")


@pytest.mark.parametrize(
    ("text", "column", "token"),
    [
        ("SELECT Id FORM Account", 11, "FORM"),
        ("SELECT Id FROM Account WHERE", 29, "<EOF>"),
        ("SELECT Id FROM Account LIMIT x", 30, "x"),
        ("SELECT FROM Account", 8, "FROM"),
        ("SELECT Id FROM Account WHERE Name = 'a' GROUP BY Name", 41, "GROUP"),
    ],
)
def test_syntax_errors_point_at_the_token(text: str, column: int, token: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse(text)
    assert caught.value.error_code == "MALFORMED_QUERY"
    assert f"ERROR at Row:1:Column:{column}\n" in caught.value.message
    assert caught.value.message.endswith(f"unexpected token: {token}")
    assert caught.value.message.split("\n")[2] == " " * (column - 1) + "^"


def _org() -> Org:
    org = Org(lambda: NOW)
    tx = Transaction(org.admin.id)
    rows = [
        {"Name": "Acme", "Industry": "Energy", "NumberOfEmployees": 10, "AnnualRevenue": 1000.0},
        {"Name": "Globex", "Industry": "Banking", "NumberOfEmployees": 500},
        {"Name": "initech", "Industry": None, "BillingCity": "Austin"},
        {"Name": "Umbrella", "Industry": "Energy", "Renewal_Date__c": "2024-05-10"},
    ]
    for values in rows:
        org.create("Account", values, tx)
    org.create("Contact", {"LastName": "Lee", "FirstName": "Ann"}, tx)
    return org


def _names(org: Org, text: str, include_deleted: bool = False) -> list[str]:
    compiled = compile_query(org, text)
    name = next(c for c in compiled.columns if c.name == "Name")
    return [name.get(r) for r in compiled.run(org, include_deleted=include_deleted)]


def test_where_order_limit_evaluate() -> None:
    org = _org()
    assert _names(org, "SELECT Name FROM Account WHERE Industry = 'energy' ORDER BY Name") == [
        "Acme",
        "Umbrella",
    ]
    assert _names(org, "SELECT Name FROM Account WHERE Industry = null") == ["initech"]
    assert _names(org, "SELECT Name FROM Account ORDER BY Name DESC LIMIT 2") == [
        "Umbrella",
        "initech",
    ]
    assert _names(
        org, "SELECT Name FROM Account WHERE NumberOfEmployees > 5 AND NOT Name LIKE 'g%'"
    ) == ["Acme"]
    assert _names(
        org, "SELECT Name FROM Account WHERE Industry NOT IN ('Energy') ORDER BY Industry"
    ) == ["initech", "Globex"]
    assert _names(org, "SELECT Name FROM Account WHERE Renewal_Date__c = TODAY") == ["Umbrella"]
    assert _names(org, "SELECT Name FROM Account WHERE CreatedDate = TODAY LIMIT 1") == ["Acme"]
    assert _names(org, "SELECT Name FROM Account WHERE CreatedDate < YESTERDAY") == []
    assert _names(
        org, "SELECT Name FROM Account WHERE CreatedDate >= 2024-05-10T11:20:00.000+0000 LIMIT 1"
    ) == ["Acme"]


def test_deleted_rows_only_with_query_all_and_derived_fields() -> None:
    org = _org()
    acme = compile_query(org, "SELECT Id FROM Account WHERE Name = 'Acme'").run(
        org, include_deleted=False
    )[0][0]
    org.delete("Account", acme, Transaction(org.admin.id))
    assert "Acme" not in _names(org, "SELECT Name FROM Account")
    assert _names(org, "SELECT Name FROM Account WHERE IsDeleted = true", True) == ["Acme"]
    compiled = compile_query(org, "SELECT Name, FirstName FROM Contact WHERE Name = 'ann lee'")
    assert [
        c.get(r) for r in compiled.run(org, include_deleted=False) for c in compiled.columns
    ] == [
        "Ann Lee",
        "Ann",
    ]
    compiled = compile_query(org, "SELECT Revenue_Per_Employee__c FROM Account WHERE Name='Globex'")
    assert compiled.columns[0].get(compiled.run(org, include_deleted=False)[0]) is None


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("SELECT Id, Bogus__c FROM Account", "INVALID_FIELD"),
        ("SELECT Id FROM Account WHERE Nope = 1", "INVALID_FIELD"),
        ("SELECT Id, Owner.Bogus FROM Account", "INVALID_FIELD"),
        ("SELECT Id FROM Widget__c", "INVALID_TYPE"),
        ("SELECT Id FROM Account WHERE Name = 5", "INVALID_QUERY_FILTER_OPERATOR"),
    ],
)
def test_resolution_errors(text: str, code: str) -> None:
    with pytest.raises(ApiError) as caught:
        compile_query(_org(), text)
    assert caught.value.error_code == code


def test_invalid_field_message_names_column_and_entity() -> None:
    with pytest.raises(ApiError) as caught:
        compile_query(_org(), "SELECT Id, Bogus__c FROM Account")
    assert "No such column 'Bogus__c' on entity 'Account'" in caught.value.message
    assert "ERROR at Row:1:Column:12" in caught.value.message
