"""The in-memory org: one ordered record store per object, writes that emit CDC changes.

Records are immutable tuples (slot order = the object's stored fields); a write replaces the
tuple. Readers that hold references (a Bulk job's snapshot, a query cursor) therefore keep
seeing the data as it was when they took it, as Salesforce's result sets do.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.sandbox.salesforce import changes
from pipeline.sandbox.salesforce.api_error import ApiError, invalid_type, not_found
from pipeline.sandbox.salesforce.cdc import RecordChange
from pipeline.sandbox.salesforce.ids import IdSequence, make_id, to_18
from pipeline.sandbox.salesforce.objects import OBJECTS, find_object
from pipeline.sandbox.salesforce.schema import FieldDef, ObjectDef
from pipeline.sandbox.salesforce.values import coerce

Record = tuple[Any, ...]
ChangeSink = Callable[[RecordChange], object]
DEFAULT_ORIGIN = "com/salesforce/api/rest/62.0"
AUDIT_FIELDS = frozenset(
    {
        "Id",
        "IsDeleted",
        "CreatedDate",
        "CreatedById",
        "LastModifiedDate",
        "LastModifiedById",
        "SystemModstamp",
    }
)


@dataclass(frozen=True, slots=True)
class User:
    id: str
    username: str
    name: str
    email: str


@dataclass(slots=True)
class Transaction:
    """One API request's commit: one transaction key, sequence numbers 1..n."""

    user_id: str
    origin: str = DEFAULT_ORIGIN
    key: str = ""
    sequence: int = 0

    def __post_init__(self) -> None:
        self.key = self.key or str(uuid.uuid4())

    def next_sequence(self) -> int:
        self.sequence += 1
        return self.sequence


class ObjectStore:
    """Records of one object, in creation (= Id) order, deleted ones included."""

    def __init__(self, obj: ObjectDef) -> None:
        self.obj = obj
        self.ids = IdSequence(obj.key_prefix)
        self.records: dict[str, Record] = {}

    def slot(self, name: str) -> int:
        return self.obj.slots[name]


class Org:
    """Records of the sandbox org and every committed write as a :class:`RecordChange`."""

    def __init__(self, clock: Callable[[], float], sink: ChangeSink | None = None) -> None:
        self.clock = clock
        self.sink = sink
        self.org_id = make_id("00D", 4_000_001)
        self.admin = User(
            make_id("005", 4_000_001),
            "admin@sandbox.example",
            "Sandbox Admin",
            "admin@sandbox.example",
        )
        self.users = {self.admin.id: self.admin}
        self.stores = {name: ObjectStore(obj) for name, obj in OBJECTS.items()}

    # -- reading ------------------------------------------------------------------------------

    def store(self, object_name: str) -> ObjectStore:
        obj = find_object(object_name)
        if obj is None:
            raise invalid_type(object_name)
        return self.stores[obj.name]

    def find_record(self, object_name: str, record_id: str) -> Record | None:
        """A live or deleted record by 15/18-char id; None when unknown or malformed."""
        try:
            full = to_18(record_id)
        except ValueError:
            return None
        return self.store(object_name).records.get(full)

    def live_record(self, object_name: str, record_id: str) -> Record:
        record = self.find_record(object_name, record_id)
        if record is None or record[1]:
            raise not_found()
        return record

    def user_by_name(self, username: str) -> User | None:
        return next((u for u in self.users.values() if u.username == username), None)

    # -- writing ------------------------------------------------------------------------------

    def now_ms(self) -> int:
        # Salesforce audit stamps have whole-second precision.
        return int(self.clock()) * 1000

    def _emit(self, change: RecordChange) -> None:
        if self.sink is not None:
            self.sink(change)

    def _change(
        self, obj: ObjectDef, kind: str, ids: Iterable[str], tx: Transaction, **kw: Any
    ) -> RecordChange:
        return RecordChange(
            entity_name=obj.name,
            change_type=kind,
            record_ids=tuple(ids),
            fields=kw.pop("fields", {}),
            commit_user=tx.user_id,
            change_origin=tx.origin,
            transaction_key=tx.key,
            sequence_number=tx.next_sequence(),
            **kw,
        )

    def _writable(self, obj: ObjectDef, name: str, creating: bool) -> FieldDef:
        field = obj.find(name)
        if field is None:
            raise ApiError(
                400,
                "INVALID_FIELD",
                f"No such column '{name}' on sobject of type {obj.name}",
                (name,),
            )
        if field.name == "Id":
            raise ApiError(
                400, "INVALID_FIELD", "The Id field should not be specified in the sobject data."
            )
        if not (field.createable if creating else field.updateable):
            raise ApiError(
                400,
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {field.name}. Please check the security settings"
                " of this field and verify that it is read/write for your profile or permission"
                " set.",
                (field.name,),
            )
        return field

    def _apply(
        self,
        obj: ObjectDef,
        base: list[Any],
        values: Mapping[str, Any],
        creating: bool,
    ) -> list[str]:
        names = []
        for key, value in values.items():
            if key == "attributes":
                continue
            field = self._writable(obj, key, creating)
            base[obj.slots[field.name]] = coerce(field, value)
            names.append(field.name)
        return names

    def _stamp(self, obj: ObjectDef, row: list[Any], user_id: str, *, created: bool) -> None:
        now = self.now_ms()
        slots = obj.slots
        if created:
            row[slots["CreatedDate"]] = now
            row[slots["CreatedById"]] = user_id
        row[slots["LastModifiedDate"]] = now
        row[slots["LastModifiedById"]] = user_id
        row[slots["SystemModstamp"]] = now

    def blank_row(self, obj: ObjectDef, record_id: str, owner_id: str) -> list[Any]:
        row: list[Any] = [None] * len(obj.stored_names)
        for name, slot in obj.slots.items():
            if obj.by_name[name].type == "boolean":
                row[slot] = False
        row[obj.slots["Id"]] = record_id
        row[obj.slots["OwnerId"]] = owner_id
        return row

    def create(self, object_name: str, values: Mapping[str, Any], tx: Transaction) -> str:
        store = self.store(object_name)
        obj = store.obj
        row = self.blank_row(obj, "", tx.user_id)
        self._apply(obj, row, values, creating=True)
        missing = [f.name for f in obj.fields if f.required and row[obj.slots[f.name]] is None]
        if missing:
            raise ApiError(
                400,
                "REQUIRED_FIELD_MISSING",
                f"Required fields are missing: [{', '.join(missing)}]",
                tuple(missing),
            )
        record_id = store.ids.next_id()
        row[obj.slots["Id"]] = record_id
        self._stamp(obj, row, tx.user_id, created=True)
        record = tuple(row)
        store.records[record_id] = record
        self._emit(
            self._change(obj, "CREATE", [record_id], tx, fields=changes.full_body(obj, record))
        )
        return record_id

    def update(
        self, object_name: str, record_id: str, values: Mapping[str, Any], tx: Transaction
    ) -> None:
        store = self.store(object_name)
        old = self._for_write(store, record_id)
        row = list(old)
        self._apply(store.obj, row, values, creating=False)
        self._stamp(store.obj, row, tx.user_id, created=False)
        new = tuple(row)
        store.records[new[0]] = new
        body, changed, nulled = changes.update_body(store.obj, old, new)
        self._emit(
            self._change(
                store.obj,
                "UPDATE",
                [new[0]],
                tx,
                fields=body,
                changed_fields=changed,
                nulled_fields=nulled,
            )
        )

    def _for_write(self, store: ObjectStore, record_id: str) -> Record:
        record = self.find_record(store.obj.name, record_id)
        if record is None:
            raise not_found()
        if record[1]:
            raise ApiError(404, "ENTITY_IS_DELETED", "entity is deleted")
        return record

    def _set_deleted(
        self,
        store: ObjectStore,
        record: Record,
        deleted: bool,
        user_id: str,
    ) -> Record:
        row = list(record)
        row[1] = deleted
        row[store.slot("SystemModstamp")] = self.now_ms()
        if not deleted:
            self._stamp(store.obj, row, user_id, created=False)
        new = tuple(row)
        store.records[new[0]] = new
        return new

    def delete(self, object_name: str, record_id: str, tx: Transaction) -> None:
        store = self.store(object_name)
        record = self._for_write(store, record_id)
        self._set_deleted(store, record, True, tx.user_id)
        self._emit(self._change(store.obj, "DELETE", [record[0]], tx))

    def undelete(self, object_name: str, record_id: str, tx: Transaction) -> None:
        store = self.store(object_name)
        record = self.find_record(store.obj.name, record_id)
        if record is None:
            raise not_found()
        if not record[1]:
            raise ApiError(400, "UNDELETE_FAILED", "Entity is not in the recycle bin")
        new = self._set_deleted(store, record, False, tx.user_id)
        self._emit(
            self._change(
                store.obj, "UNDELETE", [new[0]], tx, fields=changes.full_body(store.obj, new)
            )
        )

    def multi_update(
        self, object_name: str, ids: Iterable[str], values: Mapping[str, Any], tx: Transaction
    ) -> list[str]:
        """Give many records the same values in one transaction: one merged UPDATE event."""
        store = self.store(object_name)
        updated: list[str] = []
        names: list[str] = []
        new: Record = ()
        for record_id in ids:
            row = list(self._for_write(store, record_id))
            names = self._apply(store.obj, row, values, creating=False)
            self._stamp(store.obj, row, tx.user_id, created=False)
            new = tuple(row)
            store.records[new[0]] = new
            updated.append(new[0])
        if updated:
            body, changed, nulled = changes.merged_update_body(store.obj, names, new)
            self._emit(
                self._change(
                    store.obj,
                    "UPDATE",
                    updated,
                    tx,
                    fields=body,
                    changed_fields=changed,
                    nulled_fields=nulled,
                )
            )
        return updated

    def emit_gap(
        self, object_name: str, change_type: str, ids: Iterable[str], tx: Transaction
    ) -> None:
        """A header-only GAP_* or GAP_OVERFLOW event, as Salesforce sends when it cannot build
        the full event."""
        obj = self.store(object_name).obj
        self._emit(self._change(obj, change_type, [to_18(i) for i in ids], tx))

    def emit_creates(self, object_name: str, ids: Iterable[str], tx: Transaction) -> None:
        """CREATE events for records already stored (seeded data made visible to CDC)."""
        store = self.store(object_name)
        for record_id in ids:
            body = changes.full_body(store.obj, store.records[record_id])
            self._emit(self._change(store.obj, "CREATE", [record_id], tx, fields=body))

    def reset(self) -> None:
        self.stores = {name: ObjectStore(obj) for name, obj in OBJECTS.items()}
