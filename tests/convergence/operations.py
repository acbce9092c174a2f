"""What the randomized convergence scenario does, drawn from a seed (pure: no I/O).

:func:`choose_op` and :func:`plan_round` draw from a ``random.Random`` and a :class:`Model`
of the org (which ids are live, deleted, person accounts), so one seed gives one sequence
of operations and process events; :mod:`tests.convergence.scenario` carries them out.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from sfamp_sandbox.salesforce.objects import FEATURES, INDUSTRIES, REGIONS, TIERS

ACCOUNT, PLAN = "Account", "Plan__c"
MAPPING: Final[dict[str, Any]] = {
    "version": 1,
    "sync_cadence": {"mode": "interval", "every_seconds": 1},
    "mappings": [
        {
            "sfdc_object": ACCOUNT,
            "group_type": "account",
            "group_name_field": "Id",
            "group_properties": [
                {"sfdc_field": "Name", "amplitude_property": "name"},
                {"sfdc_field": "Industry", "amplitude_property": "industry"},
                {"sfdc_field": "AnnualRevenue", "amplitude_property": "revenue"},
                {"sfdc_field": "NumberOfEmployees", "amplitude_property": "employees"},
                {"sfdc_field": "Regions__c", "amplitude_property": "regions"},
                {"sfdc_field": "Is_Active__c", "amplitude_property": "active"},
                {"sfdc_field": "Renewal_Date__c", "amplitude_property": "renewal"},
                {"sfdc_field": "BillingAddress", "amplitude_property": "billing"},
            ],
            "on_delete": "mark",
        },
        {
            # Named by a field that change events carry only when it changes: updates
            # look the group name up at flush time.
            "sfdc_object": ACCOUNT,
            "group_type": "account_ext",
            "group_name_field": "External_Id__c",
            "group_properties": [
                {"sfdc_field": "Name", "amplitude_property": "name"},
                {"sfdc_field": "Tier__c", "amplitude_property": "tier"},
                {"sfdc_field": "Churn_Risk__c", "amplitude_property": "churn_risk"},
            ],
            "on_delete": "unset",
        },
        {
            "sfdc_object": PLAN,
            "group_type": "plan",
            "group_name_field": "Id",
            "group_properties": [
                {"sfdc_field": "Tier__c", "amplitude_property": "tier"},
                {"sfdc_field": "Seats__c", "amplitude_property": "seats"},
                {"sfdc_field": "Features__c", "amplitude_property": "features"},
                {"sfdc_field": "Active__c", "amplitude_property": "active"},
                {"sfdc_field": "Trial_Ends__c", "amplitude_property": "trial_ends"},
                {"sfdc_field": "Monthly_Price__c", "amplitude_property": "price"},
            ],
        },
    ],
}

# How often each kind of operation is drawn. External_Id__c never changes after a create:
# Amplitude cannot rename a group, so the old group would stay (documented, not a fault).
WEIGHTS: Final[dict[str, int]] = {
    "create": 5,
    "create_person": 1,
    "update": 24,
    "multi_update": 3,
    "delete": 3,
    "undelete": 2,
    "gap_create": 1,
    "gap_update": 2,
    "gap_delete": 1,
    "gap_undelete": 1,
    "gap_overflow": 1,
}
OP_KINDS: Final = tuple(WEIGHTS)
# Amplitude sandbox faults, one burst at a time (each fails the next ``count`` requests).
BURSTS: Final[tuple[dict[str, Any], ...]] = (
    {"kind": "429", "count": 4, "retry_after": 0},
    {"kind": "503", "count": 2},
    {"kind": "500", "count": 3},
    {"kind": "timeout", "count": 1, "delay_seconds": 2},
    {"kind": "500_after_apply", "count": 2},
)
Values = dict[str, Any]


# -- choosing what happens (pure) -----------------------------------------------------------


def _maybe(rng: random.Random, make: Callable[[], Any], null_share: float = 0.2) -> Any:
    return None if rng.random() < null_share else make()


def _date(rng: random.Random) -> str:
    return f"20{rng.randint(24, 27)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _picks(rng: random.Random, choices: tuple[str, ...]) -> str:
    return ";".join(sorted(rng.sample(choices, rng.randint(1, 3))))


def account_field_makers(rng: random.Random) -> dict[str, Callable[[], Any]]:
    """Every mapped Account field a write may set, each giving a fresh value or a null."""
    city = ("Oslo", "Lyon", "Austin", "Kyoto", "São Paulo")
    return {
        "Industry": lambda: _maybe(rng, lambda: rng.choice(INDUSTRIES)),
        "AnnualRevenue": lambda: _maybe(rng, lambda: rng.randint(1, 9_000) * 1000.0 + 0.5),
        "NumberOfEmployees": lambda: _maybe(rng, lambda: rng.randint(1, 50_000)),
        "Regions__c": lambda: _maybe(rng, lambda: _picks(rng, REGIONS)),
        "Is_Active__c": lambda: rng.random() < 0.5,
        "Renewal_Date__c": lambda: _maybe(rng, lambda: _date(rng)),
        "BillingCity": lambda: _maybe(rng, lambda: rng.choice(city)),
        "BillingCountry": lambda: _maybe(rng, lambda: rng.choice(("NO", "FR", "US", "JP"))),
        "Tier__c": lambda: _maybe(rng, lambda: rng.choice(TIERS)),
        "Churn_Risk__c": lambda: _maybe(rng, lambda: round(rng.uniform(0, 60), 2)),
    }


def plan_field_makers(rng: random.Random) -> dict[str, Callable[[], Any]]:
    return {
        "Tier__c": lambda: _maybe(rng, lambda: rng.choice(TIERS)),
        "Seats__c": lambda: _maybe(rng, lambda: float(rng.randint(1, 500))),
        "Features__c": lambda: _maybe(rng, lambda: _picks(rng, FEATURES)),
        "Active__c": lambda: rng.random() < 0.5,
        "Trial_Ends__c": lambda: _maybe(
            rng, lambda: f"{_date(rng)}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:07Z"
        ),
        "Monthly_Price__c": lambda: _maybe(rng, lambda: float(rng.randint(10, 5000))),
    }


@dataclass
class Model:
    """What the driver knows of the org: live and deleted ids per object, person accounts."""

    live: dict[str, list[str]] = field(default_factory=lambda: {ACCOUNT: [], PLAN: []})
    deleted: dict[str, list[str]] = field(default_factory=lambda: {ACCOUNT: [], PLAN: []})
    persons: set[str] = field(default_factory=set)
    created: int = 0

    def add(self, obj: str, ids: Iterable[str], *, person: bool = False) -> None:
        for record_id in ids:
            self.live[obj].append(record_id)
            if person:
                self.persons.add(record_id)

    def move(self, obj: str, record_id: str, *, deleted: bool) -> None:
        source, target = (self.live, self.deleted) if deleted else (self.deleted, self.live)
        source[obj].remove(record_id)
        target[obj].append(record_id)


@dataclass(frozen=True)
class Op:
    """One operation: ``values[i]`` is written to ``ids[i]`` (``multi_update``: ``values[0]``
    to all of them); ``new`` are records to create."""

    kind: str
    obj: str
    ids: tuple[str, ...] = ()
    values: tuple[Values, ...] = ()
    new: tuple[Values, ...] = ()


def _change(rng: random.Random, model: Model, obj: str, record_id: str | None) -> Values:
    makers = account_field_makers(rng) if obj == ACCOUNT else plan_field_makers(rng)
    values = {name: makers[name]() for name in rng.sample(sorted(makers), rng.randint(1, 3))}
    if obj == ACCOUNT and rng.random() < 0.3:
        model.created += 1
        if record_id in model.persons:
            values["LastName"] = f"Person {model.created}"
        else:
            values["Name"] = f"Company {model.created} ünïcode"
    return values


def _new_record(rng: random.Random, model: Model, obj: str, *, person: bool, seed: int) -> Values:
    model.created += 1
    n = model.created
    makers = account_field_makers(rng) if obj == ACCOUNT else plan_field_makers(rng)
    values = {name: make() for name, make in makers.items()}
    if obj == PLAN:
        return {"Name": f"Plan {n}", **values}
    values["External_Id__c"] = f"RND-{seed}-{n:05d}"
    if person:
        return {"IsPersonAccount": True, "FirstName": "Ada", "LastName": f"Person {n}", **values}
    return {"Name": f"Company {n}", **values}


def feasible(kind: str, model: Model, obj: str) -> bool:
    """Whether the model has records for ``kind`` on ``obj`` (one live record stays)."""
    if kind in {"undelete", "gap_undelete"}:
        return bool(model.deleted[obj])
    if kind in {"create", "gap_create"}:
        return True
    if kind == "create_person":
        return obj == ACCOUNT
    if kind in {"multi_update", "gap_overflow"}:
        return len(model.live[obj]) >= 2
    return len(model.live[obj]) > 1  # keep one live record of each object


def choose_op(rng: random.Random, model: Model, kinds: Iterable[str], *, seed: int = 0) -> Op:
    """The next operation, drawn from ``kinds`` among those the model makes possible
    (on an Account three times in four); ``seed`` makes created external ids unique."""
    given = set(kinds)
    wanted = [k for k in OP_KINDS if k in given]
    objects = [o for o in (ACCOUNT, PLAN) if any(feasible(k, model, o) for k in wanted)]
    if not objects:
        raise ValueError(f"none of {wanted} is possible on the org as it is")
    obj = objects[0] if len(objects) == 1 or rng.random() < 0.75 else objects[1]
    allowed = [k for k in wanted if feasible(k, model, obj)]
    kind = rng.choices(allowed, weights=[WEIGHTS[k] for k in allowed])[0]
    live, deleted = model.live[obj], model.deleted[obj]
    if kind in {"create", "create_person", "gap_create"}:
        new = _new_record(rng, model, obj, person=kind == "create_person", seed=seed)
        return Op(kind, obj, new=(new,))
    if kind in {"undelete", "gap_undelete"}:
        return Op(kind, obj, (rng.choice(deleted),))
    if kind in {"delete", "gap_delete"}:
        return Op(kind, obj, (rng.choice(live),))
    if kind == "update":
        record_id = rng.choice(live)
        return Op(kind, obj, (record_id,), (_change(rng, model, obj, record_id),))
    ids = tuple(rng.sample(live, min(len(live), rng.randint(2, 4))))
    if kind == "multi_update":  # one merged event: the same values, no per-record names
        values = _change(rng, model, obj, None)
        values.pop("Name", None)
        return Op(kind, obj, ids, (values or {"Is_Active__c": rng.random() < 0.5},))
    changes = tuple(_change(rng, model, obj, record_id) for record_id in ids)
    if kind == "gap_update":
        return Op(kind, obj, ids, changes)
    new = _new_record(rng, model, obj, person=False, seed=seed)
    return Op(kind, obj, ids, changes, (new,))  # gap_overflow


@dataclass(frozen=True)
class RoundPlan:
    """One round: ``first`` the kinds its first operations take (every kind once, so a
    short run still covers them all, when the org allows), process events by the index of
    the operation they come before, and the Amplitude faults of its bursts."""

    steps: int
    first: tuple[str, ...]
    events: dict[int, list[str]]
    bursts: tuple[dict[str, Any], ...]


def plan_round(
    rng: random.Random,
    steps: int,
    kinds: Iterable[str],
    *,
    kills: int,
    backfills: int,
    bursts: int,
) -> RoundPlan:
    ordered = sorted(set(kinds))
    first = tuple(rng.sample(ordered, len(ordered)))
    events: dict[int, list[str]] = {}
    for name, count in (("kill", kills), ("backfill", backfills), ("burst", bursts)):
        for _ in range(count):
            events.setdefault(rng.randrange(steps // 5, steps), []).append(name)
    chosen = tuple(rng.choice(BURSTS) for _ in range(bursts))
    return RoundPlan(steps, first, dict(sorted(events.items())), chosen)
