"""Full-snapshot backfill: every mapped record, read once and delivered as group updates.

Two users share this package:

- ``sfamp backfill`` calls :func:`run_backfill` (``run.py``): read each object
  (Bulk API 2.0 first, REST query for small objects or when Bulk is
  unavailable), turn every record into a *full* change envelope, transform it
  with the same pure code as the stream
  (:func:`~pipeline.transform.apply.changes_for_config`), coalesce a batch, and
  send it with the same Amplitude client.
- the streaming service re-syncs one object after ``GAP_OVERFLOW`` or an expired
  replay id with :func:`read_batches` (``read.py``), writing the records to
  Kafka as envelopes.

Newest wins over the stream: a snapshot's page is read at one moment and delivered
later, so each snapshot (backfill and re-sync alike) ends with catch-up reads of the
records changed since it started, on Salesforce's clock, until a round finds nothing
new (``catch_up.py``).

Checkpoints follow the project rule: a position (Bulk job id + page locator +
rows done in that page, or the last Id of a REST read ordered by Id) is written
only after Amplitude accepted the batch before it, or the rejected part of it
went to the DLQ (``checkpoint.py``). A killed run therefore re-sends at most one
batch on ``--resume``; ``$set``/``$unset`` make that harmless. ``report.py``
holds what a run found and did.
"""

from pipeline.runtime.backfill.catch_up import CatchUp, begin_catch_up
from pipeline.runtime.backfill.checkpoint import (
    DEFAULT_CHECKPOINT,
    DEFAULT_STATE_DIR,
    REJECTED_FILE,
    CheckpointFile,
    DlqMode,
    RejectSink,
)
from pipeline.runtime.backfill.read import (
    DEFAULT_REST_MAX_RECORDS,
    Api,
    ReadOptions,
    ReadPosition,
    RecordBatch,
    count_records,
    read_batches,
    read_object,
    snapshot_fields,
)
from pipeline.runtime.backfill.report import (
    BackfillProgress,
    BackfillSummary,
    DuplicateGroups,
    LogProgress,
    ObjectSummary,
)
from pipeline.runtime.backfill.run import run_backfill, selected_objects
from pipeline.runtime.tasks import StopRequest

__all__ = [
    "DEFAULT_CHECKPOINT",
    "DEFAULT_REST_MAX_RECORDS",
    "DEFAULT_STATE_DIR",
    "REJECTED_FILE",
    "Api",
    "BackfillProgress",
    "BackfillSummary",
    "CatchUp",
    "CheckpointFile",
    "DlqMode",
    "DuplicateGroups",
    "LogProgress",
    "ObjectSummary",
    "ReadOptions",
    "ReadPosition",
    "RecordBatch",
    "RejectSink",
    "StopRequest",
    "begin_catch_up",
    "count_records",
    "read_batches",
    "read_object",
    "run_backfill",
    "selected_objects",
    "snapshot_fields",
]
