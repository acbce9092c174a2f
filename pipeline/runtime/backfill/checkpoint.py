"""Where a backfill keeps its state: the checkpoint file and the sink for rejected
identifications (``sfamp.dlq``, or a file when Kafka does not answer)."""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, Literal

import orjson
import structlog

from pipeline.amplitude import DeliveryReport
from pipeline.amplitude.payload import to_identification
from pipeline.config.settings import Settings
from pipeline.errors import ConfigError, KafkaError
from pipeline.kafka.admin import ensure_topics, sfamp_topics
from pipeline.kafka.producer import ChangeProducer
from pipeline.kafka.records import DlqEntry, rejection_id
from pipeline.kafka.topics import TopicNames
from pipeline.runtime.backfill.read import ReadPosition

DEFAULT_STATE_DIR: Final = Path(".sfamp")
DEFAULT_CHECKPOINT: Final = DEFAULT_STATE_DIR / "backfill-checkpoint.json"
REJECTED_FILE: Final = "backfill-rejected.jsonl"
CHECKPOINT_VERSION: Final = 1
KAFKA_PROBE_SECONDS: Final = 5.0

DlqMode = Literal["auto", "kafka", "file"]
log = structlog.get_logger(__name__)


@dataclass(slots=True)
class ObjectCheckpoint:
    """One object's saved state: the read position, whether it is complete (snapshot and
    catch-up), and the catch-up state of the run that started it."""

    position: ReadPosition
    complete: bool
    catch_up: dict[str, Any]


class CheckpointFile:
    """Per object: a fingerprint of what is read, the position delivered so far, and
    what its catch-up needs (the snapshot's start, the reads delivered since).

    Written atomically (temporary file + rename) after every delivered batch.
    A fingerprint that no longer matches (other fields, mapping or ``--where``)
    makes ``--resume`` start that object again rather than skip rows it never sent.

    The catch-up's ``seen`` chunks (8 bytes per delivered read, a million after a
    bulk load) grow with the run, so they are not rewritten with every batch: they
    go to a file beside the checkpoint, one per object (``<checkpoint>.<Object>.seen``,
    a chunk a line), appended before the checkpoint that counts them is written; the
    checkpoint keeps its name and valid length, and a resumed run reads that much.
    """

    def __init__(self, path: Path, objects: dict[str, dict[str, Any]] | None = None) -> None:
        self.path = path
        self.objects: dict[str, dict[str, Any]] = objects or {}
        self.saved = False
        # Per object: the chunks already in its seen file, and the file's valid length.
        self._seen_written: dict[str, tuple[list[str], int]] = {}
        self._replaced: bytes | None = None  # the checkpoint begin() replaced, as it was

    @classmethod
    def load(cls, path: Path) -> CheckpointFile:
        try:
            data = orjson.loads(path.read_bytes())
        except FileNotFoundError as exc:
            raise ConfigError(
                f"no backfill checkpoint at {path}; run without --resume to start one"
            ) from exc
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read the backfill checkpoint {path}: {exc}") from exc
        if not isinstance(data, dict) or data.get("version") != CHECKPOINT_VERSION:
            raise ConfigError(
                f"{path} is not a backfill checkpoint of version {CHECKPOINT_VERSION}"
            )
        found = cls(path, dict(data.get("objects") or {}))
        found.saved = True
        return found

    def check_writable(self) -> None:
        """Fail before anything is sent when the checkpoint could not be written later."""
        try:
            if self.path.is_dir():
                raise IsADirectoryError(errno.EISDIR, "it is a directory")
            for parent in (self.path.parent, *self.path.parent.parents):
                if parent.exists():
                    if not parent.is_dir():
                        raise NotADirectoryError(errno.ENOTDIR, f"{parent} is not a directory")
                    break
            self.path.parent.mkdir(parents=True, exist_ok=True)
            probe = self._temporary()
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise self._unwritable(exc) from exc

    def begin(self) -> None:
        """Start a new run's checkpoint, with no object in it, before anything is read.

        A finished run's checkpoint left in place would make a ``--resume`` (or
        ``--resume-or-start``) after this run stops early skip every object as done,
        sending nothing this run was started to send.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                self._replaced = self.path.read_bytes()
            self._write({})
        except OSError as exc:
            raise self._unwritable(exc) from exc

    def put_back(self) -> bool:
        """The checkpoint :meth:`begin` replaced, written back while this run has saved
        nothing (it was refused before it confirmed a batch: its key, say); True when one
        was. An interrupted run's stays replaced: a ``--resume`` then starts this run."""
        if self.saved or self._replaced is None:
            return False
        temporary = self._temporary()
        temporary.write_bytes(self._replaced)
        os.replace(temporary, self.path)
        return True

    def _write(self, objects: dict[str, dict[str, Any]]) -> None:
        document = {
            "version": CHECKPOINT_VERSION,
            "updated_at_ms": int(time.time() * 1000),
            "objects": objects,
        }
        temporary = self._temporary()
        temporary.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
        os.replace(temporary, self.path)

    def entry(self, sfdc_object: str, fingerprint: str) -> ObjectCheckpoint | None:
        entry = self.objects.get(sfdc_object)
        if entry is None:
            return None
        if entry.get("fingerprint") != fingerprint:
            log.warning(
                "backfill_checkpoint_mismatch",
                object=sfdc_object,
                action="start over",
                detail=f"the mapping of {sfdc_object} (or --where) changed since the "
                "checkpoint was written: every record is read again, with what it maps now",
            )
            return None
        position = ReadPosition.from_json(entry.get("position") or {})
        # Checkpoints written before catch-up reads existed: done once read.
        complete = bool(entry.get("complete", position.finished))
        catch_up = dict(entry.get("catch_up") or {})
        if isinstance(entry.get("seen_bytes"), int):
            catch_up["seen"] = self._read_seen(sfdc_object, entry["seen_bytes"])
        return ObjectCheckpoint(position, complete, catch_up)

    def save(
        self,
        sfdc_object: str,
        fingerprint: str,
        position: ReadPosition,
        *,
        catch_up: dict[str, Any] | None = None,
        complete: bool = False,
    ) -> None:
        state = dict(catch_up or {})
        seen = state.pop("seen", None)
        entry = _entry(fingerprint, position, complete, state)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(seen, list):
                entry["seen_file"] = self._seen_path(sfdc_object).name
                entry["seen_bytes"] = self._write_seen(sfdc_object, seen)
            self.objects[sfdc_object] = entry
            self._write(self.objects)
        except OSError as exc:
            raise self._unwritable(exc) from exc
        self.saved = True

    def hold(self, sfdc_object: str, fingerprint: str) -> None:
        """A new entry (nothing read yet) kept in memory: the next :meth:`save` writes it."""
        self.objects[sfdc_object] = _entry(fingerprint, ReadPosition(), False, {})

    def _temporary(self) -> Path:
        return self.path.with_name(self.path.name + ".tmp")

    def _seen_path(self, sfdc_object: str) -> Path:
        return self.path.with_name(f"{self.path.name}.{sfdc_object}.seen")

    def _write_seen(self, sfdc_object: str, chunks: list[str]) -> int:
        """Append the chunks not yet in the object's seen file; answers its valid length.

        Bytes past the valid length (appended by a run that stopped before its
        checkpoint counted them) are cut first; chunks that do not continue what the
        file holds (a catch-up started over) replace it.
        """
        written, size = self._seen_written.get(sfdc_object, ([], 0))
        if chunks[: len(written)] != written:
            written, size = [], 0
        fresh = chunks[len(written) :]
        path = self._seen_path(sfdc_object)
        with path.open("r+b" if size and path.exists() else "wb") as out:
            out.truncate(size)
            out.seek(size)
            data = "".join(f"{chunk}\n" for chunk in fresh).encode()
            out.write(data)
        self._seen_written[sfdc_object] = (written + fresh, size + len(data))
        return size + len(data)

    def _read_seen(self, sfdc_object: str, size: int) -> list[str]:
        """The chunks a checkpoint counted; none (sent again, harmlessly) when unreadable."""
        try:
            with self._seen_path(sfdc_object).open("rb") as saved:
                data = saved.read(size)
        except OSError as exc:
            log.warning("backfill_checkpoint_seen_unreadable", object=sfdc_object, reason=str(exc))
            return []
        if len(data) != size:
            log.warning("backfill_checkpoint_seen_short", object=sfdc_object, expected=size)
            return []
        chunks = data.decode("ascii", "replace").splitlines()
        self._seen_written[sfdc_object] = (chunks, size)
        return chunks

    def _unwritable(self, exc: OSError) -> ConfigError:
        reason = exc.strerror or str(exc)
        return ConfigError(
            f"cannot write the backfill checkpoint {self.path}: {reason}; "
            "choose a writable, persistent path with --checkpoint"
        )


class RejectSink:
    """Where rejected identifications go: ``sfamp.dlq`` when Kafka answers, else a file.

    Opened on the first rejection only, so a clean run never needs Kafka. In
    ``auto`` mode Kafka gets :data:`KAFKA_PROBE_SECONDS` to answer.
    """

    def __init__(self, settings: Settings, mode: DlqMode, file: Path) -> None:
        self._settings = settings
        self._mode = mode
        self._file = file
        self._producer: ChangeProducer | None = None
        self._stack = contextlib.AsyncExitStack()
        self.destination: str | None = None

    async def write(self, entries: Sequence[DlqEntry]) -> None:
        if not entries:
            return
        if self.destination is None:
            await self._open()
        if self._producer is not None:
            topic = TopicNames(self._settings.kafka.topic_prefix).dlq
            await self._producer.send_all([(topic, *entry.encode()) for entry in entries])
            return
        with self._file.open("ab") as out:
            for entry in entries:
                out.write(orjson.dumps(asdict(entry)) + b"\n")

    async def _open(self) -> None:
        if self._mode != "file":
            kafka = self._settings.kafka
            if self._mode == "auto":
                timeout = min(kafka.request_timeout_seconds, KAFKA_PROBE_SECONDS)
                kafka = kafka.model_copy(update={"request_timeout_seconds": timeout})
            try:
                # Made as the service makes it (one partition), not by a broker's defaults
                # on the first write, or refused where the cluster creates no topics.
                dlq = TopicNames(kafka.topic_prefix).dlq
                await ensure_topics(kafka, [s for s in sfamp_topics(kafka, []) if s.name == dlq])
                self._producer = await self._stack.enter_async_context(ChangeProducer(kafka))
                self.destination = f"kafka:{dlq}"
                return
            except KafkaError as exc:
                if self._mode == "kafka":
                    raise
                log.warning("backfill_dlq_kafka_unreachable", reason=str(exc), file=str(self._file))
        self._file.parent.mkdir(parents=True, exist_ok=True)
        self.destination = f"file:{self._file}"

    async def aclose(self) -> None:
        await self._stack.aclose()


def rejected_entries(report: DeliveryReport, sfdc_object: str, now_ms: int) -> list[DlqEntry]:
    entries = []
    for rejection in report.rejected:
        update = rejection.update
        key = f"{update.group_type}:{update.group_value}"
        identification = to_identification(update)
        entries.append(
            DlqEntry(
                id=rejection_id("backfill", key, identification),
                reason="rejected",
                detail=f"Amplitude answered {rejection.status}: {rejection.reason}",
                at_ms=now_ms,
                key=key,
                payload=identification,
                extra={"source": "backfill", "object": sfdc_object},
            )
        )
    return entries


def _entry(
    fingerprint: str, position: ReadPosition, complete: bool, catch_up: dict[str, Any]
) -> dict[str, Any]:
    """An object's entry as the file holds it (its seen keys apart)."""
    return {
        "fingerprint": fingerprint,
        "position": position.to_json(),
        "complete": complete,
        "catch_up": catch_up,
    }
