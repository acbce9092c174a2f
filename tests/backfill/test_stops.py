"""``sfamp backfill`` stopping early, run as a user runs it (a subprocess, no TTY): a
signal, an error on a later page, a query Salesforce refuses, an unwritable checkpoint.
Each keeps a checkpoint of what was delivered and says what to do next in one line."""

from __future__ import annotations

import asyncio
import fcntl
import json
import signal
from pathlib import Path
from typing import Any

import orjson
import pytest

from sfamp_sandbox.amplitude.state import Fault
from tests.backfill.conftest import CliRun, Sandboxes, mapping
from tests.support.silent_kafka import silent_kafka

pytestmark = pytest.mark.integration

REST = ["--api", "rest", "--progress-interval", "0"]
WIDE = {"COLUMNS": "200"}  # the summary table unwrapped, as on a wide terminal


def saved_position(cwd: Path) -> dict[str, Any]:
    document = orjson.loads((cwd / ".sfamp" / "backfill-checkpoint.json").read_bytes())
    entry: dict[str, Any] = document["objects"]["Account"]
    assert not entry["complete"]
    position: dict[str, Any] = entry["position"]
    return position


def delivered(sandboxes: Sandboxes) -> set[str]:
    return {value for _group_type, value in sandboxes.groups()}


async def resume_to_the_end(
    sandboxes: Sandboxes, args: list[str], cwd: Path, expected_rows: int
) -> None:
    run = await CliRun.start([*args, "--resume", "--json"], sandboxes.environment(), cwd)
    code, out, err = await run.finish()
    assert code == 0, err
    summary = json.loads(out)
    assert summary["completed"]
    assert summary["rows_read"] == expected_rows


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
async def test_a_signal_keeps_what_was_delivered_and_says_rerun_with_resume(
    sandboxes: Sandboxes, mapping_file: Path, tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    ids = sorted(await sandboxes.seed("Account", 20_000))
    args = ["--mapping", str(mapping_file), *REST]
    run = await CliRun.start(args, sandboxes.environment(**WIDE), tmp_path)
    await run.wait_for_lines("backfill_progress", 1)
    # Amplitude now holds every request, so the signal finds the run mid-delivery.
    hold = Fault("timeout", remaining=10_000, delay_seconds=60, path="/2/httpapi")
    sandboxes.amplitude.state.add_fault(hold)
    run.process.send_signal(sig)
    exit_code, out, err = await run.finish()

    assert exit_code == code, err
    assert "Traceback" not in err
    assert f"interrupted by {sig.name}: checkpoint kept:" in err
    assert "rerun with --resume" in out  # the summary table's status
    position = saved_position(tmp_path)
    assert position["method"] == "rest"
    done = [record_id for record_id in ids if record_id <= position["last_id"]]
    assert len(done) >= 2_000
    assert set(done) <= delivered(sandboxes)  # the checkpoint claims only what Amplitude has

    sandboxes.amplitude.state.faults.clear()
    await resume_to_the_end(sandboxes, args, tmp_path, 20_000 - len(done))
    assert delivered(sandboxes) == set(ids)


async def test_a_limit_on_a_later_page_keeps_a_checkpoint_of_the_first(
    sandboxes: Sandboxes, mapping_file: Path, tmp_path: Path
) -> None:
    ids = sorted(await sandboxes.seed("Account", 5_000))
    args = ["--mapping", str(mapping_file), *REST]
    usage = sandboxes.salesforce.state.usage
    # Salesforce allows every call up to the first page, and no more. A dry run counts
    # them: the same calls, less its three pages, plus the server's time and page one.
    dry = await CliRun.start([*args, "--dry-run"], sandboxes.environment(), tmp_path)
    assert (await dry.finish())[0] == 0
    usage.max, usage.used = usage.used - 3 + 2, 0
    run = await CliRun.start(args, sandboxes.environment(**WIDE), tmp_path)
    code, out, err = await run.finish()

    assert code == 1
    assert "error: Salesforce API request limit reached" in err
    assert err.count("request limit reached") == 1, f"the reason once, as the error line: {err}"
    assert "rerun with --resume" in out
    # The first batch (1,999 records, a request's worth) was delivered; the one that
    # waited for page two's first record was not.
    assert saved_position(tmp_path)["last_id"] == ids[1_998]
    assert delivered(sandboxes) == set(ids[:1_999])

    usage.max, usage.used = 1_000_000, 0
    await resume_to_the_end(sandboxes, args, tmp_path, 3_001)
    assert delivered(sandboxes) == set(ids)


@pytest.mark.parametrize(
    "where", ["Industy = 'Energy'", "Industry = "], ids=["misspelt field", "malformed"]
)
@pytest.mark.parametrize("on_delete", ["ignore", "mark"])  # mark: the recycle bin is read first
async def test_resume_is_not_suggested_when_salesforce_refuses_the_query(
    sandboxes: Sandboxes, tmp_path: Path, where: str, on_delete: str
) -> None:
    await sandboxes.seed("Account", 50)
    document = mapping().model_dump(mode="json")
    document["mappings"][0]["on_delete"] = on_delete
    mapping_file = tmp_path / "mapping.json"
    mapping_file.write_text(json.dumps(document))
    args = ["--mapping", str(mapping_file), "--where", where]
    run = await CliRun.start(args, sandboxes.environment(**WIDE), tmp_path)
    code, out, err = await run.finish()

    assert code == 1
    assert "Traceback" not in err
    assert "--resume" not in out + err
    assert "resuming cannot help" in err
    assert out == ""  # nothing was sent: the reason and what to do, no summary
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert sandboxes.requests == 0


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
async def test_amplitude_down_before_the_first_batch_says_run_again(
    sandboxes: Sandboxes, mapping_file: Path, tmp_path: Path, as_json: bool
) -> None:
    await sandboxes.seed("Account", 50)
    sandboxes.amplitude.state.add_fault(Fault("503", remaining=10_000))
    args = ["--mapping", str(mapping_file), *REST, *(["--json"] if as_json else [])]
    environment = sandboxes.environment(SFAMP_AMPLITUDE__RETRY_DEADLINE_SECONDS="1", **WIDE)
    code, out, err = await (await CliRun.start(args, environment, tmp_path)).finish()

    assert code == 1
    assert "Traceback" not in err
    (error,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert error.startswith("error: Amplitude still answers 503 after"), err
    assert error.endswith("gave up, as the next would come past the 1 s retry deadline"), err
    assert "no batch was confirmed delivered yet; run again" in err
    if as_json:
        summary = json.loads(out)  # a script still gets the summary
        assert summary["completed"] is False
        assert summary["next_step"] == "no batch was confirmed delivered yet; run again"
        # What it tried is counted: every request the sandbox answered, the retries.
        assert summary["requests"] == sandboxes.requests >= 2, summary
        assert summary["amplitude_retries"] == summary["requests"] - 1
    else:
        assert out == ""


async def test_an_unwritable_checkpoint_fails_in_one_line_before_anything_is_sent(
    sandboxes: Sandboxes, mapping_file: Path, tmp_path: Path
) -> None:
    await sandboxes.seed("Account", 3_000)
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a directory cannot be made where a file is, even for root
    checkpoint = blocker / "checkpoint.json"
    args = ["--mapping", str(mapping_file), "--checkpoint", str(checkpoint)]
    run = await CliRun.start(args, sandboxes.environment(**WIDE), tmp_path)
    code, out, err = await run.finish()

    assert code == 1
    assert err.strip() == (
        f"error: cannot write the backfill checkpoint {checkpoint}: {blocker} is not a "
        "directory; "
        "choose a writable, persistent path with --checkpoint"
    )
    assert out == ""
    assert sandboxes.requests == 0


async def test_resume_or_start_starts_once_then_skips_what_is_done(
    sandboxes: Sandboxes, mapping_file: Path, tmp_path: Path
) -> None:
    await sandboxes.seed("Account", 300)
    args = ["--mapping", str(mapping_file), "--resume-or-start", "--json"]
    summaries = []
    for _ in range(2):
        run = await CliRun.start(args, sandboxes.environment(), tmp_path)
        code, out, err = await run.finish()
        assert code == 0, err
        summaries.append(json.loads(out))

    first, second = summaries
    assert (first["resumed"], first["rows_read"]) == (False, 300)
    assert (second["resumed"], second["rows_read"]) == (True, 0)
    assert second["objects"][0]["already_done"]


async def test_a_refused_amplitude_key_is_the_reason_alone_with_no_summary(
    sandboxes: Sandboxes, mapping_file: Path, tmp_path: Path
) -> None:
    await sandboxes.seed("Account", 20)
    env = {**sandboxes.environment(**WIDE), "SFAMP_AMPLITUDE__API_KEY": "not-a-key"}
    run = await CliRun.start(["--mapping", str(mapping_file)], env, tmp_path)
    code, out, err = await run.finish()

    assert code == 1
    assert out == ""  # no summary of a run that sent nothing
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: Amplitude refused the API key: check SFAMP_AMPLITUDE__API_KEY and that "
        "SFAMP_AMPLITUDE__REGION is the project's (us or eu)"
    ]
    assert err.rstrip().endswith(
        f"{errors[0]}\n  no batch was confirmed delivered yet; "
        "run again once the problem above is fixed"
    )


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
async def test_a_refused_salesforce_login_says_what_to_do_and_gives_scripts_the_summary(
    sandboxes: Sandboxes, mapping_file: Path, tmp_path: Path, as_json: bool
) -> None:
    # Refused while the mapping is checked against the org, before the run itself.
    env = {**sandboxes.environment(**WIDE), "SFAMP_SALESFORCE__PASSWORD": "wrong"}
    args = ["--mapping", str(mapping_file), *(["--json"] if as_json else [])]
    run = await CliRun.start(args, env, tmp_path)
    code, out, err = await run.finish()

    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert "Salesforce refused the password login" in errors[0]
    assert err.rstrip().endswith(
        f"{errors[0]}\n  nothing was read or sent; run again once the problem above is fixed"
    )
    if as_json:
        summary = json.loads(out)
        assert summary["completed"] is False
        assert summary["error_type"] == "SalesforceAuthError"
        assert summary["next_step"].endswith("once the problem above is fixed")
    else:
        assert out == ""


async def test_a_missing_amplitude_key_is_said_before_salesforce_is_asked(
    sandboxes: Sandboxes, mapping_file: Path, tmp_path: Path
) -> None:
    env = sandboxes.environment(**WIDE)
    del env["SFAMP_AMPLITUDE__API_KEY"]
    run = await CliRun.start(["--mapping", str(mapping_file)], env, tmp_path)
    code, out, err = await run.finish()

    assert (code, out) == (1, "")
    assert "SFAMP_AMPLITUDE__API_KEY: required to send to Amplitude" in err
    assert "backfill_object_started" not in err
    assert sandboxes.requests == 0
    dry = await CliRun.start(["--mapping", str(mapping_file), "--dry-run"], env, tmp_path)
    code, _, err = await dry.finish()
    assert code == 0, err  # a dry run sends nothing: it needs no key


async def test_a_signal_before_any_batch_was_delivered_prints_no_table(
    sandboxes: Sandboxes, mapping_file: Path, tmp_path: Path
) -> None:
    await sandboxes.seed("Account", 500)
    sandboxes.amplitude.state.latency.ms = 20_000  # the first batch stays in flight
    args = ["--mapping", str(mapping_file), *REST]
    run = await CliRun.start(args, sandboxes.environment(**WIDE), tmp_path)
    await run.wait_for_lines("backfill_object_started", 1)
    run.process.send_signal(signal.SIGINT)
    exit_code, out, err = await run.finish()

    assert exit_code == 130, err
    assert out == ""  # nothing was delivered: no table, as for an error
    assert err.strip().splitlines()[-1] == (
        "interrupted by SIGINT: no batch was confirmed delivered yet; run again"
    )
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
async def test_a_signal_while_the_mapping_is_checked_says_so_in_one_line(
    sandboxes: Sandboxes, mapping_file: Path, tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    await sandboxes.seed("Account", 10)
    sandboxes.salesforce.state.latency.ms = 3_000  # the check's describe is still out
    args = ["--mapping", str(mapping_file), *REST]
    run = await CliRun.start(args, sandboxes.environment(**WIDE), tmp_path)
    await run.wait_for_lines("salesforce_login", 1)  # logged in, checking the mapping
    run.process.send_signal(sig)
    exit_code, out, err = await run.finish()

    assert exit_code == code, err
    assert out == ""
    assert err.strip().splitlines()[-1] == (
        f"interrupted by {sig.name}: no batch was confirmed delivered yet; run again"
    )
    assert "Traceback" not in err
    assert not delivered(sandboxes)


async def test_a_signal_while_kafka_does_not_answer_leaves_no_client_open(
    sandboxes: Sandboxes, mapping_file: Path, tmp_path: Path
) -> None:
    # The published mapping is read first; a broker that accepts and never answers holds
    # that read until the signal comes.
    async with silent_kafka() as kafka:
        env = sandboxes.environment(**WIDE)
        env["SFAMP_KAFKA__BOOTSTRAP_SERVERS"] = kafka.bootstrap
        run = await CliRun.start(["--mapping", str(mapping_file), *REST], env, tmp_path)
        await asyncio.wait_for(kafka.connected.wait(), 30)
        run.process.send_signal(signal.SIGINT)
        exit_code, out, err = await run.finish()

    assert exit_code == 130, err
    assert out == ""
    assert err.strip().splitlines()[-1] == (
        "interrupted by SIGINT: no batch was confirmed delivered yet; run again"
    )
    assert "Unclosed" not in err, err
    assert "Traceback" not in err


async def test_a_second_backfill_on_one_checkpoint_says_so_in_one_line(
    sandboxes: Sandboxes, mapping_file: Path, tmp_path: Path
) -> None:
    """Two runs saving into one checkpoint would leave a resume either's position."""
    await sandboxes.seed("Account", 30)
    checkpoint = tmp_path / "state" / "backfill-checkpoint.json"
    checkpoint.parent.mkdir()
    earlier = checkpoint.read_bytes() if checkpoint.exists() else None
    args = ["--mapping", str(mapping_file), "--checkpoint", str(checkpoint)]
    with (checkpoint.parent / f"{checkpoint.name}.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running backfill holds it
        run = await CliRun.start(args, sandboxes.environment(), tmp_path)
        code, out, err = await run.finish()
    assert (code, out) == (1, "")
    # Log lines of the start (the login) may come first: the reason is the last line.
    assert err.strip().splitlines()[-1] == (
        f"error: a backfill is already running with the checkpoint {checkpoint} (another "
        "sfamp backfill): run this one once it has ended"
    )
    assert sandboxes.requests == 0
    assert (checkpoint.read_bytes() if checkpoint.exists() else None) == earlier
