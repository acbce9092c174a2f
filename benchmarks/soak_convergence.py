"""Soak: the randomized convergence scenario for minutes; Amplitude must end equal to Salesforce.

Starts the embedded broker and both sandboxes, seeds Accounts and Plans, runs ``sfamp run``
as a child process and the initial ``sfamp backfill``, then repeats rounds of the scenario of
tests/convergence/test_randomized.py (creates, updates with nulls, deletes, undeletes,
merged updates, gap events after silent writes, overflows, a concurrent ``sfamp backfill``,
Amplitude 429/5xx/timeout bursts, and a SIGKILL + restart of the service) until the time is
up. After each round the churn stops and the convergence oracle compares every Amplitude
group with the mapping applied to every current Salesforce record. Prints changes applied,
kills survived, backfills run and mismatches (target 0), and the first mismatches' story.

    .venv/bin/python benchmarks/soak_convergence.py --minutes N [--seed S] [--leave-out KIND]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests package

from pipeline.sandbox_stack import SandboxStack
from tests.convergence.oracle import ConvergenceReport
from tests.convergence.scenario import OP_KINDS, Scenario

TARGET_MISMATCHES = 0
SETTLE_SECONDS = 90.0
STEPS_PER_ROUND = 100


@dataclass
class Soak:
    """Per round: seconds to converge (None: not within SETTLE_SECONDS); every wrong
    group or property seen at the end of any round."""

    settle_times: list[float | None] = field(default_factory=list)
    wrong: set[tuple[str, str, str]] = field(default_factory=set)

    def record(self, report: ConvergenceReport, seconds: float) -> set[tuple[str, str, str]]:
        """Note a round's end; answers what is wrong that no earlier round found."""
        self.settle_times.append(seconds if report.ok else None)
        found = {(g.group_type, g.group_value, "(missing)") for g in report.missing}
        found |= {(t, v, "(extra)") for (t, v), _ in report.extra}
        found |= {(m.group_type, m.group_value, m.prop) for m in report.mismatches}
        new, self.wrong = found - self.wrong, self.wrong | found
        return new


async def soak_round(scenario: Scenario, soak: Soak, number: int, apart: bool) -> None:
    if not apart:
        await scenario.round(STEPS_PER_ROUND, kills=1, backfills=1, bursts=2)
    elif number % 2:
        await scenario.round(STEPS_PER_ROUND, kills=1, backfills=0, bursts=2)
    else:
        await scenario.faults_used()
        await scenario.round(STEPS_PER_ROUND, kills=1, backfills=1, bursts=0)
    stopped = time.monotonic()
    await scenario.settle()  # the backfill has ended, the service is ready
    report = await scenario.converge(SETTLE_SECONDS)
    seconds = time.monotonic() - stopped
    new = soak.record(report, seconds)
    if report.ok:
        print(f"  round {number}: converged {seconds:.1f} s after the churn stopped", flush=True)
        return
    print(
        f"  round {number}: NOT converged {seconds:.0f} s after the churn stopped, {len(new)} new"
    )
    if new:  # the story of what this round got wrong, once
        print("\n".join("    " + line for line in report.describe().splitlines()))
        print("    what happened to them:")
        print("\n".join("    " + line for line in scenario.trace(report).splitlines()))


async def run(
    minutes: float, seed: int, leave_out: list[str], quiet: list[str], apart: bool
) -> Soak:
    kinds = [kind for kind in OP_KINDS if kind not in leave_out]
    soak = Soak()
    options = {"bulk_job_seconds": 0.0, "poll_timeout": 5.0}
    async with SandboxStack(salesforce_options=options) as stack:
        with tempfile.TemporaryDirectory() as tmp:
            prefix = f"soak{uuid.uuid4().hex[:8]}"
            async with Scenario(
                stack, Path(tmp), prefix, seed=seed, kinds=kinds, not_while_backfilling=quiet
            ) as scenario:
                await scenario.start(accounts=200, plans=50)
                deadline = time.monotonic() + minutes * 60
                number = 0
                while time.monotonic() < deadline:
                    number += 1
                    await soak_round(scenario, soak, number, apart)
                await scenario.service.terminate()
            print_summary(minutes, seed, kinds, quiet, apart, scenario, soak)
    return soak


def print_summary(
    minutes: float,
    seed: int,
    kinds: list[str],
    quiet: list[str],
    apart: bool,
    scenario: Scenario,
    soak: Soak,
) -> None:
    tally = scenario.tally
    settled = [s for s in soak.settle_times if s is not None]
    mix = ", ".join(f"{kind} {count}" for kind, count in tally.ops.most_common())
    left_out = sorted(set(OP_KINDS) - set(kinds))
    print(f"soak {minutes:g} min, seed {seed}, {len(soak.settle_times)} rounds")
    if left_out:
        print(f"  left out            {', '.join(left_out)}")
    if quiet:
        print(f"  not while a backfill runs: {', '.join(sorted(quiet))}")
    if apart:
        print("  backfills in rounds of their own, without Amplitude bursts")
    print(f"  changes applied     {tally.changes:,} ({sum(tally.ops.values()):,} operations)")
    print(f"  operations          {mix}")
    print(f"  kills survived      {tally.kills}")
    print(f"  backfills run       {tally.backfills}")
    print(f"  amplitude bursts    {tally.bursts}")
    if settled:
        print(
            f"  converged           {len(settled)} of {len(soak.settle_times)} rounds, "
            f"slowest {max(settled):.1f} s after the churn stopped"
        )
    mismatches = len(soak.wrong)
    verdict = "PASS" if mismatches <= TARGET_MISMATCHES else "BELOW target"
    print(f"  mismatches          {mismatches}: {verdict} (target {TARGET_MISMATCHES})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=2.0, help="how long to churn")
    parser.add_argument("--seed", type=int, default=1306, help="the scenario's random seed")
    parser.add_argument(
        "--leave-out",
        action="append",
        default=[],
        choices=OP_KINDS,
        metavar="KIND",
        help=f"an operation kind not to draw (repeatable): {', '.join(OP_KINDS)}",
    )
    parser.add_argument(
        "--not-while-backfilling",
        action="append",
        default=[],
        choices=OP_KINDS,
        metavar="KIND",
        help="an operation kind not to draw while a backfill runs (repeatable)",
    )
    parser.add_argument(
        "--backfills-apart",
        action="store_true",
        help="run backfills in rounds of their own, without Amplitude bursts",
    )
    args = parser.parse_args()
    quiet, apart = args.not_while_backfilling, args.backfills_apart
    soak = asyncio.run(run(args.minutes, args.seed, args.leave_out, quiet, apart))
    sys.exit(0 if len(soak.wrong) <= TARGET_MISMATCHES else 1)


if __name__ == "__main__":
    main()
