"""The randomized scenario's choices: one seed, one sequence; only possible operations."""

from __future__ import annotations

import random

import pytest

from .operations import ACCOUNT, OP_KINDS, PLAN, Model, Op, choose_op, plan_round


def _draw(seed: int, count: int, kinds: tuple[str, ...] = OP_KINDS) -> list[Op]:
    """``count`` operations against a model that the draws themselves keep up to date."""
    rng, model = random.Random(seed), Model()
    model.add(ACCOUNT, [f"001{n:015d}" for n in range(5)])
    model.add(PLAN, [f"a0B{n:015d}" for n in range(3)])
    ops = []
    for n in range(count):
        op = choose_op(rng, model, kinds, seed=seed)
        assert set(op.ids) <= set(model.live[op.obj] + model.deleted[op.obj])
        if op.kind in {"undelete", "gap_undelete"}:
            assert op.ids[0] in model.deleted[op.obj]
            model.move(op.obj, op.ids[0], deleted=False)
        elif op.kind in {"delete", "gap_delete"}:
            model.move(op.obj, op.ids[0], deleted=True)
        else:
            assert set(op.ids) <= set(model.live[op.obj]), f"{op} names a deleted record"
        model.add(op.obj, [f"new-{n}-{i}" for i in range(len(op.new))])
        ops.append(op)
    return ops


def test_one_seed_gives_one_sequence() -> None:
    assert _draw(7, 300) == _draw(7, 300)
    assert _draw(7, 300) != _draw(8, 300)


def test_every_kind_is_drawn_and_one_record_of_each_object_stays_live() -> None:
    ops = _draw(3, 2000)
    assert {op.kind for op in ops} == set(OP_KINDS)
    assert {op.obj for op in ops} == {ACCOUNT, PLAN}
    assert all(op.obj == ACCOUNT for op in ops if op.kind == "create_person")


def test_kinds_left_out_are_never_drawn() -> None:
    kept = tuple(kind for kind in OP_KINDS if kind not in {"gap_update", "delete"})
    assert {op.kind for op in _draw(5, 1000, kept)} <= set(kept)


def test_a_round_covers_every_kind_first_and_places_its_process_events() -> None:
    plan = plan_round(random.Random(1), 60, OP_KINDS, kills=2, backfills=1, bursts=3)
    assert sorted(plan.first) == sorted(OP_KINDS)
    placed = [event for events in plan.events.values() for event in events]
    assert sorted(placed) == ["backfill", "burst", "burst", "burst", "kill", "kill"]
    assert all(12 <= step < 60 for step in plan.events)
    assert len(plan.bursts) == 3


def test_nothing_possible_is_a_clear_error() -> None:
    model = Model()
    with pytest.raises(ValueError, match="none of"):
        choose_op(random.Random(1), model, ["undelete"])
