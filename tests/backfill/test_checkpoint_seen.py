"""The catch-up's delivered reads go to a file beside the checkpoint, appended batch by
batch, so a checkpoint after every batch writes what is new, not the whole run again."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from structlog.testing import capture_logs

from pipeline.runtime.backfill.catch_up import CatchUp, catch_up_for
from pipeline.runtime.backfill.checkpoint import CheckpointFile
from pipeline.runtime.backfill.read import ReadPosition

START = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)


class NoOrg:
    async def server_time(self) -> datetime | None:
        return START

    def query(self, soql: str, *, all_rows: bool = False) -> Any:
        raise AssertionError("not read here")


def reads(first: int, count: int) -> list[dict[str, Any]]:
    stamp = "2024-05-10T12:00:00.000+0000"
    return [{"Id": f"001{n:015d}", "SystemModstamp": stamp} for n in range(first, first + count)]


def save(file: CheckpointFile, catch_up: CatchUp) -> None:
    file.save("Account", "f", ReadPosition("bulk", "750X"), catch_up=catch_up.to_json())


def test_each_save_appends_only_the_new_reads(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.json"
    file, catch_up = CheckpointFile(path), CatchUp(NoOrg(), "Account", ["Id"], START)
    sizes = []
    for batch in range(4):
        catch_up.track(reads(batch * 1000, 1000))
        save(file, catch_up)
        sizes.append((tmp_path / "checkpoint.json.Account.seen").stat().st_size)
    assert sizes == [sizes[0] * n for n in range(1, 5)]  # 1,000 keys more each time
    entry = orjson.loads(path.read_bytes())["objects"]["Account"]
    assert "seen" not in entry["catch_up"]
    assert entry["seen_bytes"] == sizes[-1]
    assert len(path.read_bytes()) < 1_000

    saved = CheckpointFile.load(path).entry("Account", "f")
    assert saved is not None
    resumed = catch_up_for(NoOrg(), "Account", ["Id"], START, seen=saved.catch_up["seen"])
    assert resumed.seen == catch_up.seen
    assert len(resumed.seen) == 4000


def test_a_resume_reads_what_the_checkpoint_counted_and_continues_from_there(
    tmp_path: Path,
) -> None:
    path = tmp_path / "checkpoint.json"
    file, catch_up = CheckpointFile(path), CatchUp(NoOrg(), "Account", ["Id"], START)
    catch_up.track(reads(0, 10))
    save(file, catch_up)
    counted = set(catch_up.seen)
    # A run that stopped between appending its reads and writing its checkpoint.
    with (tmp_path / "checkpoint.json.Account.seen").open("ab") as seen:
        seen.write(b"AAAAAAAAAAA=\n")

    loaded = CheckpointFile.load(path)
    saved = loaded.entry("Account", "f")
    assert saved is not None
    resumed = catch_up_for(NoOrg(), "Account", ["Id"], START, seen=saved.catch_up["seen"])
    assert resumed.seen == counted
    resumed.track(reads(10, 5))
    save(loaded, resumed)

    again = CheckpointFile.load(path).entry("Account", "f")
    assert again is not None
    final = catch_up_for(NoOrg(), "Account", ["Id"], START, seen=again.catch_up["seen"])
    assert final.seen == resumed.seen
    assert len(final.seen) == 15


def test_a_catch_up_started_over_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.json"
    file = CheckpointFile(path)
    first = CatchUp(NoOrg(), "Account", ["Id"], START)
    first.track(reads(0, 100))
    save(file, first)
    other = CatchUp(NoOrg(), "Account", ["Id"], START)
    other.track(reads(500, 3))
    save(file, other)

    saved = CheckpointFile.load(path).entry("Account", "f")
    assert saved is not None
    resumed = catch_up_for(NoOrg(), "Account", ["Id"], START, seen=saved.catch_up["seen"])
    assert resumed.seen == other.seen


def test_an_object_whose_mapping_changed_starts_over_and_says_why(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.json"
    CheckpointFile(path).save("Account", "before", ReadPosition("bulk", "750X"))
    file = CheckpointFile.load(path)
    assert file.entry("Account", "before") is not None
    with capture_logs() as logs:
        assert file.entry("Account", "after") is None  # read again from the first record
    assert logs == [
        {
            "event": "backfill_checkpoint_mismatch",
            "log_level": "warning",
            "object": "Account",
            "action": "start over",
            "detail": "the mapping of Account (or --where) changed since the checkpoint was "
            "written: every record is read again, with what it maps now",
        }
    ]
