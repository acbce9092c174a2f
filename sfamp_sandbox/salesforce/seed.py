"""Generated demo data: realistic-looking records, many of them, fast.

Values come from a seeded PRNG so a given (object, count, seed) always yields the same data.
Records are assembled straight into their stored tuple form; ~20,000 records take a fraction
of a second and a million a few seconds.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from sfamp_sandbox.salesforce.objects import (
    ACCOUNT_TYPES,
    FEATURES,
    INDUSTRIES,
    LEAD_SOURCES,
    RATINGS,
    REGIONS,
    SALUTATIONS,
    STAGES,
    TIERS,
)
from sfamp_sandbox.salesforce.org import Org, Transaction
from sfamp_sandbox.salesforce.person import person_name
from sfamp_sandbox.salesforce.schema import ObjectDef

CITIES = (
    ("San Francisco", "CA", "94105", "United States"),
    ("New York", "NY", "10001", "United States"),
    ("Austin", "TX", "73301", "United States"),
    ("London", None, "EC1A 1BB", "United Kingdom"),
    ("Berlin", None, "10115", "Germany"),
    ("Sydney", "NSW", "2000", "Australia"),
)
FIRST_NAMES = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Linus", "Margaret", "Dennis")
LAST_NAMES = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Torvalds", "Hamilton")
DAY_MS = 86_400_000
ValueMaker = Callable[[int, random.Random, list[str]], dict[str, Any]]


def _date(rng: random.Random) -> str:
    return f"20{rng.randint(24, 27)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _account(n: int, rng: random.Random, parents: list[str]) -> dict[str, Any]:
    city, state, postal, country = rng.choice(CITIES)
    employees = rng.randint(1, 50_000)
    return {
        "Name": f"Account {n:07d}",
        "Type": rng.choice(ACCOUNT_TYPES),
        "Industry": rng.choice(INDUSTRIES),
        "Rating": rng.choice(RATINGS),
        "BillingStreet": f"{rng.randint(1, 999)} Market Street",
        "BillingCity": city,
        "BillingState": state,
        "BillingPostalCode": postal,
        "BillingCountry": country,
        "Phone": f"+1 415 555 {n % 10000:04d}",
        "Website": f"https://account{n}.example.com",
        "AnnualRevenue": float(employees * rng.randint(50, 400) * 1000),
        "NumberOfEmployees": employees,
        "External_Id__c": f"EXT-{n:07d}",
        "Tier__c": rng.choice(TIERS),
        "Regions__c": ";".join(sorted(rng.sample(REGIONS, rng.randint(1, 2)))),
        "Is_Active__c": rng.random() < 0.8,
        "Health_Score__c": round(rng.uniform(0, 100), 1),
        "Churn_Risk__c": round(rng.uniform(0, 60), 2),
        "Renewal_Date__c": _date(rng),
        "Billing_Email__c": f"billing@account{n}.example.com",
    }


def _person_account(n: int, rng: random.Random, parents: list[str]) -> dict[str, Any]:
    values = _account(n, rng, parents)
    first, last = rng.choice(FIRST_NAMES), f"{rng.choice(LAST_NAMES)} {n}"
    values.update(
        IsPersonAccount=True,
        Salutation=rng.choice(SALUTATIONS),
        FirstName=first,
        LastName=last,
        Name=person_name(first, last),
    )
    return values


def _contact(n: int, rng: random.Random, parents: list[str]) -> dict[str, Any]:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    return {
        "AccountId": rng.choice(parents) if parents else None,
        "FirstName": first,
        "LastName": f"{last} {n}",
        "Email": f"{first.lower()}.{n}@example.com",
        "Title": rng.choice(("CEO", "CTO", "VP Sales", "Engineer", "Analyst")),
        "LeadSource": rng.choice(LEAD_SOURCES),
        "Birthdate": f"19{rng.randint(60, 99)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "HasOptedOutOfEmail": rng.random() < 0.1,
    }


def _opportunity(n: int, rng: random.Random, parents: list[str]) -> dict[str, Any]:
    stage = rng.choice(STAGES)
    return {
        "AccountId": rng.choice(parents) if parents else None,
        "Name": f"Opportunity {n:07d}",
        "StageName": stage,
        "Amount": float(rng.randint(1, 500) * 1000),
        "Probability": 100.0 if stage == "Closed Won" else float(rng.choice((10, 20, 50, 75))),
        "CloseDate": _date(rng),
        "Type": rng.choice(("New Business", "Existing Business")),
        "IsClosed": stage.startswith("Closed"),
        "IsWon": stage == "Closed Won",
    }


def _plan(n: int, rng: random.Random, parents: list[str]) -> dict[str, Any]:
    return {
        "Name": f"Plan {n:07d}",
        "Account__c": rng.choice(parents) if parents else None,
        "Plan_Code__c": f"PLN-{n:07d}",
        "Tier__c": rng.choice(TIERS),
        "Features__c": ";".join(sorted(rng.sample(FEATURES, rng.randint(1, 3)))),
        "Seats__c": float(rng.randint(1, 500)),
        "Monthly_Price__c": float(rng.randint(10, 5000)),
        "Active__c": rng.random() < 0.9,
        "Start_Date__c": _date(rng),
        "Trial_Ends__c": rng.randint(1_700_000_000, 1_800_000_000) * 1000,
        "Portal_Url__c": f"https://portal.example.com/plans/{n}",
    }


MAKERS: dict[str, ValueMaker] = {
    "Account": _account,
    "Contact": _contact,
    "Opportunity": _opportunity,
    "Plan__c": _plan,
}


def _assemble(obj: ObjectDef, template: list[Any], values: dict[str, Any]) -> tuple[Any, ...]:
    row = template.copy()
    slots = obj.slots
    for name, value in values.items():
        row[slots[name]] = value
    return tuple(row)


def seed(
    org: Org,
    object_name: str,
    count: int,
    *,
    emit_events: bool = False,
    seed_value: int | None = None,
    person_accounts: bool = False,
    age_seconds: float = 0,
) -> list[str]:
    """Add ``count`` generated records and return their ids. Children get a random parent
    among the first 10,000 Accounts. With ``emit_events`` each record publishes a CREATE (one
    transaction for the whole seed), otherwise seeding is silent, as a data load before CDC
    was enabled would be. ``person_accounts`` makes generated Accounts person accounts.
    ``age_seconds`` dates the records that long ago (``CreatedDate``, ``LastModifiedDate``,
    ``SystemModstamp``), as records loaded long before, not just now."""
    if not age_seconds >= 0:
        raise ValueError("age_seconds must be a number of seconds, 0 or more")
    store = org.store(object_name)
    obj = store.obj
    rng = random.Random(seed_value if seed_value is not None else len(store.records))
    parents = [] if obj.name == "Account" else list(org.stores["Account"].records)[:10_000]
    template = org.blank_row(obj, "", org.admin.id)
    stamp = org.now_ms() - int(age_seconds) * 1000
    for name in ("CreatedDate", "LastModifiedDate", "SystemModstamp"):
        template[obj.slots[name]] = stamp
    template[obj.slots["CreatedById"]] = template[obj.slots["LastModifiedById"]] = org.admin.id
    make = _person_account if person_accounts and obj.name == "Account" else MAKERS[obj.name]
    first = len(store.records) + 1
    ids = store.ids.take(count)
    records = store.records
    for offset, record_id in enumerate(ids):
        values = make(first + offset, rng, parents)
        values["Id"] = record_id
        records[record_id] = _assemble(obj, template, values)
    if emit_events:
        org.emit_creates(obj.name, ids, Transaction(org.admin.id))
    return ids
