"""A seeded randomized scenario: churn the Salesforce sandbox while ``sfamp run`` is killed,
Amplitude fails and backfills run, then let the convergence oracle judge the end state.

:mod:`tests.convergence.operations` decides what happens from the seed; :class:`Scenario`
carries it out against a :class:`SandboxStack`: record writes through the Salesforce control
API, merged (multi-record) updates, gap events after silent writes (the only way sfamp can
learn of those changes is the gap re-read or the overflow's re-sync), ``sfamp backfill`` as a
concurrent child process, Amplitude 429/5xx/timeout bursts, and SIGKILL + restart of the
``sfamp run`` child. Process events come by operation count, never by wall time, and
nothing waits for time to pass.

Used by tests/convergence/test_randomized.py (a short fixed seed) and
benchmarks/soak_convergence.py (the same mix for minutes).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from pipeline.sandbox_stack import SandboxStack
from tests.runtime.conftest import Org, wait_until
from tests.support.processes import BackfillProcess, ServiceProcess

from .operations import (
    ACCOUNT,
    MAPPING,
    OP_KINDS,
    PLAN,
    Model,
    Op,
    RoundPlan,
    choose_op,
    feasible,
    plan_round,
)
from .oracle import ConvergenceReport, check_convergence

__all__ = ["MAPPING", "OP_KINDS", "Scenario", "Tally"]


@dataclass
class Tally:
    """What a scenario did: record writes Salesforce committed (a merged update counts each
    record), operations by kind, kills survived, backfills run, Amplitude bursts."""

    changes: int = 0
    ops: Counter[str] = field(default_factory=Counter)
    kills: int = 0
    backfills: int = 0
    bursts: int = 0


def service_environment(stack: SandboxStack, topic_prefix: str, mapping: Path) -> dict[str, str]:
    """``SFAMP_*`` for the children: short sessions and retry deadlines, quick drains."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFAMP_")}
    env.update(stack.environment(topic_prefix))
    env.update(
        {
            "SFAMP_MAPPING_FILE": str(mapping),
            "SFAMP_KAFKA__PARTITIONS": "3",
            "SFAMP_KAFKA__CONSUMER_SESSION_TIMEOUT_SECONDS": "3",
            "SFAMP_KAFKA__METADATA_MAX_AGE_SECONDS": "2",
            "SFAMP_AMPLITUDE__RETRY_DEADLINE_SECONDS": "3",
            "SFAMP_AMPLITUDE__MIN_429_WAIT_SECONDS": "0.05",
            "SFAMP_AMPLITUDE__TIMEOUT_SECONDS": "1",
            "SFAMP_RUNTIME__HEALTH_HOST": "127.0.0.1",
            "SFAMP_RUNTIME__DRAIN_TIMEOUT_SECONDS": "5",
            "SFAMP_RUNTIME__LOG_FORMAT": "json",
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        }
    )
    return env


class Scenario:
    """Runs the operations against a started :class:`SandboxStack`; ``async with`` kills
    the children and closes the control client on the way out."""

    def __init__(
        self,
        stack: SandboxStack,
        workdir: Path,
        topic_prefix: str,
        *,
        seed: int,
        kinds: Iterable[str] = OP_KINDS,
        not_while_backfilling: Iterable[str] = (),
        pause: float = 0.02,
    ) -> None:
        self.stack, self.workdir, self.seed = stack, workdir, seed
        self.rng = random.Random(seed)
        self.kinds = frozenset(kinds)
        self.not_while_backfilling = frozenset(not_while_backfilling)
        self.pause = pause
        self.model = Model()
        self.tally = Tally()
        self.org = Org(stack)
        mapping = workdir / "mapping.json"
        mapping.write_text(json.dumps(MAPPING))
        self.env = service_environment(stack, topic_prefix, mapping)
        self.service = ServiceProcess(self.env, workdir, "all", "service")
        self.backfill: BackfillProcess | None = None
        self.journal: list[tuple[float, str]] = []  # (wall time, what the driver did)

    async def __aenter__(self) -> Scenario:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.service.kill()
        if self.backfill is not None:
            self.backfill.kill()
        await self.org.close()

    async def start(self, *, accounts: int, plans: int) -> None:
        """Existing records, seeded silently; the service; and the initial backfill, the
        only path that brings those records, run to its end as a user would. (Were the churn
        to start first, a seeded record that the stream changed in part and that was deleted
        before the backfill read it would rightly keep only that part, while the oracle
        expects a deleted record's group, when there is one, to hold all its values.)"""
        self.model.add(ACCOUNT, await self.org.seed(ACCOUNT, accounts))
        self.model.add(PLAN, await self.org.seed(PLAN, plans))
        self.note("seeded; service starting")
        self.service.start()
        await self.service.ready()
        await self._backfill()
        await self._finish_backfill()

    async def round(self, steps: int, *, kills: int, backfills: int, bursts: int) -> None:
        """``steps`` operations with process events among them."""
        plan = plan_round(
            self.rng, steps, self.kinds, kills=kills, backfills=backfills, bursts=bursts
        )
        await self.run(plan)

    async def run(self, plan: RoundPlan) -> None:
        """Carry out a round. With ``not_while_backfilling`` set, those kinds are not drawn
        from a backfill's start to the round's end, and the round waits for the backfill."""
        bursts = iter(plan.bursts)
        backfilling = False
        for step in range(plan.steps):
            for event in plan.events.get(step, ()):
                if event == "kill":
                    await self._kill_and_restart()
                elif event == "backfill":
                    await self._backfill()
                    backfilling = True
                else:
                    await self._burst(next(bursts))
            first = plan.first[step] if step < len(plan.first) else None
            await self.apply(self._next_op(first, backfilling))
            await asyncio.sleep(self.pause)  # pacing only: nothing waits on time passing
        if backfilling and self.not_while_backfilling:
            await self._finish_backfill()

    def _next_op(self, first: str | None, backfilling: bool) -> Op:
        kinds = self.kinds - self.not_while_backfilling if backfilling else self.kinds
        if first in kinds and any(feasible(first, self.model, o) for o in (ACCOUNT, PLAN)):
            kinds = frozenset({first})
        return choose_op(self.rng, self.model, kinds, seed=self.seed)

    async def settle(self) -> None:
        """Let the last backfill finish (it must succeed) and the service be ready."""
        await self._finish_backfill()
        await self.service.ready()

    async def faults_used(self) -> None:
        """Wait until Amplitude has answered with every scripted fault."""
        assert self.stack.amplitude is not None
        state = self.stack.amplitude.state
        await wait_until(lambda: not state.faults, timeout=60, what="the faults to be used")

    def check(self) -> ConvergenceReport:
        assert self.stack.salesforce is not None
        assert self.stack.amplitude is not None
        return check_convergence(self.stack.salesforce, self.stack.amplitude, MAPPING)

    async def converge(self, timeout: float) -> ConvergenceReport:
        """The first report that is ok, or the last one after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        report = self.check()
        while not report.ok and loop.time() < deadline:
            await asyncio.sleep(0.2)
            report = self.check()
        return report

    # -- process events

    async def _kill_and_restart(self) -> None:
        await self.service.ready()  # each kill hits a running service
        self.service.kill()  # SIGKILL: no drain, no commit, no goodbye
        self.tally.kills += 1
        self.note(f"kill {self.tally.kills} and restart")
        self.service.start()  # the churn goes on while it starts

    async def _finish_backfill(self) -> None:
        if self.backfill is None:
            return
        code = await self.backfill.finished()
        self.note(f"{self.backfill.log.stem} ended {code}")
        if code != 0:
            tail = self.backfill.log.read_text()[-3000:]
            raise AssertionError(f"sfamp backfill exited {code}:\n{tail}")
        self.backfill = None

    async def _backfill(self) -> None:
        await self._finish_backfill()
        self.tally.backfills += 1
        n = self.tally.backfills
        args = ["--api", self.rng.choice(("rest", "bulk")), "--json", "--dlq", "kafka"]
        args += ["--checkpoint", str(self.workdir / f"backfill-{n}.json")]
        # A burst must not exhaust the backfill's retries: it alone brings seeded records.
        env = {**self.env, "SFAMP_AMPLITUDE__RETRY_DEADLINE_SECONDS": "60"}
        self.backfill = BackfillProcess(env, self.workdir, f"backfill-{n}", args).start()
        self.note(f"backfill-{n} started: {' '.join(args)}")

    async def _burst(self, fault: dict[str, Any]) -> None:
        assert self.stack.amplitude is not None
        async with httpx.AsyncClient(base_url=self.stack.amplitude.base_url) as http:
            answer = await http.post("/__sandbox/faults", json=fault)
        assert answer.status_code < 300, answer.text
        self.tally.bursts += 1
        self.note(f"amplitude burst {fault}")

    # -- record operations

    async def apply(self, op: Op) -> None:
        """Carry out one operation through the Salesforce sandbox's control API. A gap
        operation creates or updates silently (no change event; a delete or undelete has
        its event as well), then sends the gap event that names the records, as Salesforce
        does when it cannot build the full events."""
        org, obj, kind = self.org, op.obj, op.kind
        silent = kind.startswith("gap_")
        named = list(op.ids)
        for values in op.new:
            record_id = await org.create(obj, **values, emit_events=not silent)
            self.model.add(obj, [record_id], person=kind == "create_person")
            named.append(record_id)
        if kind in {"update", "gap_update", "gap_overflow"}:
            for record_id, values in zip(op.ids, op.values, strict=True):
                await org.update(obj, record_id, **values, emit_events=not silent)
        elif kind == "multi_update":
            await org.multi_update(obj, named, **op.values[0])
        elif kind in {"delete", "gap_delete"}:
            await org.delete(obj, named[0])
            self.model.move(obj, named[0], deleted=True)
        elif kind in {"undelete", "gap_undelete"}:
            await org.undelete(obj, named[0])
            self.model.move(obj, named[0], deleted=False)
        if kind == "gap_overflow":
            await org.gap_overflow(obj)
        elif silent:
            await org.gap(obj, named, kind.upper())
        self.tally.ops[kind] += 1
        self.tally.changes += len(named)
        self.note(f"op {kind} {obj} {named} {list(op.values) + list(op.new)}")

    def note(self, text: str) -> None:
        self.journal.append((time.time(), text))

    def trace(self, report: ConvergenceReport, *, most: int = 3) -> str:
        """What happened to the first ``most`` wrong groups: the process events, the
        operations that named their records, and each request Amplitude applied to them
        (times in seconds from the scenario's start)."""
        keys = [(m.group_type, m.group_value, m.sources) for m in report.mismatches]
        keys += [(g.group_type, g.group_value, tuple(g.sources)) for g in report.missing]
        keys += [(t, v, ()) for (t, v), _ in report.extra]
        chosen = list(dict.fromkeys(keys))[:most]
        ids = {source.split()[1] for *_, sources in chosen for source in sources}
        lines = [
            (at, text)
            for at, text in self.journal
            if not text.startswith("op ") or any(i in text for i in ids)
        ]
        assert self.stack.amplitude is not None
        history = self.stack.amplitude.state.store("us").history
        for group_type, value, _ in chosen:
            for entry in history.get((group_type, value), ()):
                lines.append((entry["at"], f"amplitude {group_type}/{value} {entry['operations']}"))
        start = self.journal[0][0] if self.journal else 0.0
        return "\n".join(f"{at - start:8.3f} {text}" for at, text in sorted(lines))
