"""Where a backfill's time goes: every HTTP request on a timeline, and optionally a profile.

Starts the sandboxes in child processes, one each (as ``bench_backfill.py`` does;
``--one-process``: both in one), seeds
``--records`` Accounts, sets ``--latency-ms`` and runs :func:`run_backfill`
in this process with every HTTP request recorded (start, end, what, bytes). It
prints the requests grouped into phases (runs of the same kind of request), the
delivered batches, the CPU time of this process, and with ``--profile`` a
pyinstrument profile (``pip install pyinstrument``; not a project dependency).

With ``--cpu-every S`` it also prints who used the two cores when: per slice of S
seconds, the share of one core that sfamp (this process) and each sandbox spent
(Linux ``/proc``; 100% is one core busy for the whole slice).

    .venv/bin/python benchmarks/trace_backfill.py [--records N] [--latency-ms MS]
        [--transport httpapi] [--profile] [--one-process] [--cpu-every S]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import os
import re
import resource
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from bench_backfill import (
    MAPPING,
    Sandboxes,
    cpu_seconds,
    reset,
    seed,
    set_latency,
    sfamp_environment,
)

HERE = Path(__file__).resolve().parent


@dataclass(slots=True)
class Call:
    kind: str
    started: float
    ended: float
    sent: int
    received: int
    status: int


CALLS: list[Call] = []
BATCHES: list[tuple[float, int, int]] = []
GC_SECONDS = [0.0, 0.0]  # time in the cyclic collector: young and middle, full
_GC_STARTED = [0.0]


def timed_collections(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _GC_STARTED[0] = time.perf_counter()
    else:
        GC_SECONDS[info["generation"] == 2] += time.perf_counter() - _GC_STARTED[0]


_ORIGINAL_SEND = httpx.AsyncClient.send


class CpuTimeline:
    """CPU seconds of this process and of each sandbox, read every ``every`` seconds by a
    thread of its own while the backfill runs (the event loop is not asked)."""

    def __init__(self, pids: dict[str, int], every: float) -> None:
        self._pids = {"sfamp": os.getpid(), **pids}
        self._every = every
        self._samples: list[tuple[float, list[float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> CpuTimeline:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while True:
            now = time.perf_counter()
            self._samples.append((now, [cpu_seconds(pid) for pid in self._pids.values()]))
            if self._stop.wait(self._every):
                return

    def lines(self, origin: float) -> list[str]:
        """One line per slice: its start (s after ``origin``) and each process's share of
        one core over it."""
        names = list(self._pids)
        lines = [" " * 10 + "".join(f"{name:>12}" for name in names)]
        for (start, before), (end, after) in itertools.pairwise(self._samples):
            shares = [(b - a) / (end - start) * 100 for a, b in zip(before, after, strict=True)]
            lines.append(
                f"  {start - origin:6.2f} s" + "".join(f"{share:11.0f}%" for share in shares)
            )
        return lines


def kind_of(request: httpx.Request) -> str:
    """A short name for what a request does: ``bulk results``, ``query page``, ``amplitude``..."""
    path = request.url.path
    if "/__sandbox" in path:
        return "control"
    if path.endswith(("/2/httpapi", "/groupidentify")):
        return "amplitude"
    if "/jobs/query" in path:
        if path.endswith("/results"):
            return "bulk results"
        if request.method == "POST":
            return "bulk create"
        return "bulk delete" if request.method == "DELETE" else "bulk poll"
    if "/queryAll" in path or "/query" in path:
        soql = request.url.params.get("q", "")
        if "COUNT()" in soql:
            return "count"
        return "query first page" if soql else "query next page"
    if "oauth2" in path:
        return "login"
    return re.sub(r"/services/data/v[\d.]+", "", path) or "/"


async def recorded_send(
    self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any
) -> httpx.Response:
    started = time.perf_counter()
    response = await _ORIGINAL_SEND(self, request, **kwargs)
    if not kwargs.get("stream"):
        await response.aread()
    size = len(request.content) if request.content else 0
    received = len(response.content) if not kwargs.get("stream") else 0
    call = Call(
        kind_of(request), started, time.perf_counter(), size, received, response.status_code
    )
    CALLS.append(call)
    return response


class TracedProgress:
    def start_object(
        self, sfdc_object: str, total: int | None, method: str, *, done: int = 0
    ) -> None:
        BATCHES.append((time.perf_counter(), 0, 0))

    def advance(self, sfdc_object: str, rows: int, identifications: int) -> None:
        BATCHES.append((time.perf_counter(), rows, identifications))

    def catching_up(self, sfdc_object: str, /) -> None:
        return None

    def finish_object(self, summary: Any) -> None:
        return None


async def backfill(work: Path) -> Any:
    from pipeline.config.mapping import MappingConfig
    from pipeline.config.settings import Settings
    from pipeline.runtime.backfill import run_backfill

    settings = Settings()
    config = MappingConfig.model_validate(MAPPING)
    return await run_backfill(
        settings, config, checkpoint_path=work / "checkpoint", dlq="file",
        progress=TracedProgress(),
    )  # fmt: skip


def phases(origin: float) -> list[str]:
    """Consecutive requests of one kind as one line: count, span, bytes."""
    lines: list[str] = []
    ordered = sorted(CALLS, key=lambda call: call.started)
    group: list[Call] = []
    for call in [*ordered, None]:
        if group and (call is None or call.kind != group[0].kind):
            first, last = group[0].started - origin, max(c.ended for c in group) - origin
            busy = sum(c.ended - c.started for c in group)
            received = sum(c.received for c in group) / 1e6
            sent = sum(c.sent for c in group) / 1e6
            lines.append(
                f"  {first:7.3f}-{last:7.3f} s  {group[0].kind:<18} x{len(group):<4} "
                f"busy {busy:6.2f} s, sent {sent:6.2f} MB, received {received:6.2f} MB"
            )
            group = []
        if call is not None:
            group.append(call)
    return lines


def main(arguments: argparse.Namespace) -> None:
    sandboxes = Sandboxes("request", split=not arguments.one_process)
    urls = sandboxes.urls
    try:
        with httpx.Client(timeout=600) as http:
            reset(http, urls, org=True)
            seed(http, urls, arguments.records, fresh=arguments.fresh)
            set_latency(http, urls, arguments.latency_ms)
        environment = sfamp_environment(urls) | {"SFAMP_AMPLITUDE__TRANSPORT": arguments.transport}
        os.environ.update({k: v for k, v in environment.items() if k.startswith("SFAMP_")})
        httpx.AsyncClient.send = recorded_send  # type: ignore[method-assign]
        profiler = None
        if arguments.profile:
            from pyinstrument import Profiler

            profiler = Profiler(async_mode="enabled")
            profiler.start()
        import pipeline.runtime.backfill  # noqa: F401 - imports are not the backfill's time
        from pipeline.gc_tuning import startup_objects_frozen, tune_gc

        tune_gc()  # as the CLI does, and with the objects alive at the start frozen
        timeline = None
        if arguments.cpu_every:
            pids = dict(zip(sandboxes.parts, sandboxes.urls["pids"], strict=True))
            timeline = CpuTimeline(pids, arguments.cpu_every)
        with (
            startup_objects_frozen(),
            tempfile.TemporaryDirectory() as work,
            timeline or contextlib.nullcontext(),
        ):
            gc.callbacks.append(timed_collections)  # after the collection before the freeze
            cpu, origin = (time.process_time(), sandboxes.cpu_seconds()), time.perf_counter()
            summary = asyncio.run(backfill(Path(work)))
            wall = time.perf_counter() - origin
        cpu = (time.process_time() - cpu[0], sandboxes.cpu_seconds() - cpu[1])
        if profiler is not None:
            profiler.stop()
        report(summary, origin, wall, cpu, arguments)
        if timeline is not None:
            print(f"CPU, share of one core per {arguments.cpu_every:g} s:")
            print("\n".join(timeline.lines(origin)))
        if profiler is not None:
            print(profiler.output_text(unicode=True, color=False, show_all=False))
    finally:
        sandboxes.close(timeout=30)


def report(
    summary: Any,
    origin: float,
    wall: float,
    cpu: tuple[float, float],
    arguments: argparse.Namespace,
) -> None:
    print(
        f"{arguments.records:,} {'fresh' if arguments.fresh else 'aged'} records at "
        f"{arguments.latency_ms} ms, {arguments.transport}: "
        f"{wall:.2f} s wall; CPU {cpu[0]:.2f} s in sfamp, {cpu[1]:.2f} s in the sandboxes; "
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; "
        f"{summary.total('requests')} Amplitude requests, {summary.api_calls} Salesforce calls"
    )
    print(
        f"garbage collector: {GC_SECONDS[0]:.2f} s in young and middle collections, "
        f"{GC_SECONDS[1]:.2f} s in full ones"
    )
    print("requests (runs of one kind):")
    print("\n".join(phases(origin)))
    print("batches settled (s: rows, identifications):")
    print("  " + ", ".join(f"{t - origin:.2f}: {r}/{i}" for t, r, i in BATCHES[1:]))
    for item in summary.objects:
        print(
            f"  {item.sfdc_object}: rows {item.rows_read}, caught up {item.caught_up} in "
            f"{item.catch_up_rounds} rounds, identifications {item.identifications}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--transport", default="httpapi", choices=["httpapi", "groupidentify"])
    parser.add_argument("--profile", action="store_true", help="pyinstrument profile (CPU)")
    parser.add_argument(
        "--cpu-every", type=float, default=0.0, metavar="S",
        help="print each process's CPU per slice of S seconds (0: not)",
    )  # fmt: skip
    parser.add_argument(
        "--one-process", action="store_true",
        help="both sandboxes in one process (default: a process each)",
    )  # fmt: skip
    parser.add_argument(
        "--fresh", action="store_true",
        help="seed records stamped just now (default: 30 days ago), inside the catch-up window",
    )  # fmt: skip
    main(parser.parse_args())
