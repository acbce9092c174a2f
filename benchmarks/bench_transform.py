"""Envelopes per second through decode -> transform -> coalesce, the pure core of deliver.

Builds a realistic mix of Account change envelopes (70% updates of 2-3 fields
including a compound address component, 20% creates with the full body, 10%
deletes) over a pool of records, encodes them once, then times on one core:
decoding alone, decoding plus applying the mappings, and the whole path
including coalescing into group updates, for one mapping of Account and for two
(two group types fed by the same change). The target is far above 50,000/s.

    .venv/bin/python benchmarks/bench_transform.py [--envelopes N] [--records N]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.config.mapping import MappingConfig
from pipeline.transform.apply import PropertyChanges, changes_for_config
from pipeline.transform.coalesce import Coalescer
from pipeline.transform.envelope import ChangeEnvelope, decode, encode
from pipeline.transform.schema import ObjectSchema, schema_from_describe

TARGET = 50_000
INDUSTRIES = ("Energy", "Biotechnology", "Mining", "Retail", "Banking")
CONFIG = MappingConfig.model_validate(
    {
        "sync_cadence": {"mode": "interval", "every_seconds": 60},
        "mappings": [
            {
                "sfdc_object": "Account",
                "group_type": "account",
                "group_name_field": "Id",
                "group_properties": [
                    {"sfdc_field": "Name", "amplitude_property": "name"},
                    {"sfdc_field": "Industry", "amplitude_property": "industry"},
                    {"sfdc_field": "AnnualRevenue", "amplitude_property": "revenue"},
                    {"sfdc_field": "Tags__c", "amplitude_property": "tags"},
                    {"sfdc_field": "LastModifiedDate", "amplitude_property": "modified"},
                    {"sfdc_field": "BillingAddress", "amplitude_property": "billing"},
                ],
                "on_delete": "mark",
            },
            {
                "sfdc_object": "Account",
                "group_type": "industry_account",
                "group_name_field": "Id",
                "group_properties": [{"sfdc_field": "BillingCity", "amplitude_property": "city"}],
            },
        ],
    }
)


def account_schema() -> ObjectSchema:
    def field(name: str, sf_type: str, parent: str | None = None) -> dict[str, Any]:
        return {"name": name, "type": sf_type, "compoundFieldName": parent}

    parts = ("Street", "City", "State", "PostalCode", "Country")
    return schema_from_describe(
        {
            "name": "Account",
            "fields": [
                field("Id", "id"),
                field("Name", "string"),
                field("Industry", "picklist"),
                field("AnnualRevenue", "currency"),
                field("Tags__c", "multipicklist"),
                field("LastModifiedDate", "datetime"),
                field("BillingAddress", "address"),
                *(field(f"Billing{p}", "string", "BillingAddress") for p in parts),
            ],
        }
    )


def make_envelope(rng: random.Random, seq: int, records: int) -> ChangeEnvelope:
    record_id = f"001RM{rng.randrange(records):013d}"
    roll = rng.random()
    common: dict[str, Any] = {
        "object": "Account",
        "record_id": record_id,
        "commit_ts": 1714157000000 + seq,
        "commit_number": 1100670840000 + seq,
        "transaction_key": f"0000{seq:08x}-a642-11e2-c29b-229c6786473e",
        "sequence_number": 1,
        "channel": "/data/AccountChangeEvent",
        "replay_id": 18098167 + seq,
    }
    modified = "2024-04-26T18:43:20.000Z"
    fields: dict[str, Any]
    if roll < 0.7:
        fields = {
            "Industry": rng.choice(INDUSTRIES),
            "BillingAddress": {"City": f"City {seq % 97}"},
            "LastModifiedDate": modified,
        }
        changed = ("Industry", "BillingAddress.City", "LastModifiedDate")
        return ChangeEnvelope(op="update", changed=changed, fields=fields, **common)
    if roll < 0.9:
        fields = {
            "Name": f"Account {seq}",
            "Industry": rng.choice(INDUSTRIES),
            "AnnualRevenue": rng.randrange(10**7) * 1.0,
            "Tags__c": "Strategic;EMEA",
            "BillingAddress": {"Street": "415 Mission St", "City": "San Francisco", "State": "CA"},
            "OwnerId": "005RM000001hv4SYAQ",
            "CreatedDate": modified,
            "LastModifiedDate": modified,
        }
        return ChangeEnvelope(op="create", fields=fields, **common)
    return ChangeEnvelope(op="delete", **common)


def timed(label: str, raw: Sequence[bytes], work: Callable[[Sequence[bytes]], int]) -> float:
    start = time.perf_counter()
    produced = work(raw)
    seconds = time.perf_counter() - start
    rate = len(raw) / seconds
    print(f"  {label:<44} {rate:>9,.0f} envelopes/s  ({seconds:.3f} s, {produced:,} out)")
    return rate


def decode_only(raw: Sequence[bytes]) -> int:
    for item in raw:
        decode(item)
    return len(raw)


def decode_and_transform(
    config: MappingConfig, schema: ObjectSchema
) -> Callable[[Sequence[bytes]], int]:
    def work(raw: Sequence[bytes]) -> int:
        count = 0
        for item in raw:
            for _, outcome in changes_for_config(decode(item), config, schema):
                count += 1 if isinstance(outcome, PropertyChanges) else 0
        return count

    return work


def whole_path(
    config: MappingConfig, schema: ObjectSchema, max_groups: int
) -> Callable[[Sequence[bytes]], int]:
    def work(raw: Sequence[bytes]) -> int:
        coalescer = Coalescer(max_groups=max_groups)
        groups = 0
        for item in raw:
            for _, outcome in changes_for_config(decode(item), config, schema):
                if isinstance(outcome, PropertyChanges):
                    if coalescer.is_full():
                        groups += len(coalescer.drain())
                    coalescer.add(outcome)
        return groups + len(coalescer.drain())

    return work


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envelopes", type=int, default=200_000)
    parser.add_argument("--records", type=int, default=20_000, help="distinct record ids")
    parser.add_argument("--max-groups", type=int, default=50_000, help="coalescer bound")
    args = parser.parse_args(argv)

    rng = random.Random(7)
    raw = [encode(make_envelope(rng, seq, args.records)) for seq in range(args.envelopes)]
    schema = account_schema()
    mean_size = sum(map(len, raw)) / len(raw)
    print(f"{args.envelopes:,} envelopes over {args.records:,} records, {mean_size:.0f} B each")
    timed("decode", raw, decode_only)
    one = MappingConfig(sync_cadence=CONFIG.sync_cadence, mappings=CONFIG.mappings[:1])
    rates = {}
    for label, config in (("1 mapping", one), ("2 mappings", CONFIG)):
        timed(f"decode + transform, {label}", raw, decode_and_transform(config, schema))
        work = whole_path(config, schema, args.max_groups)
        rates[label] = timed(f"decode + transform + coalesce, {label}", raw, work)
    for label, rate in rates.items():
        verdict = "ok" if rate >= TARGET else "below target"
        print(f"  whole path, {label}: {rate / TARGET:.1f}x the {TARGET:,}/s target ({verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
