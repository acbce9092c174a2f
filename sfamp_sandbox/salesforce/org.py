"""The in-memory org: one ordered record store per object, writes that emit CDC changes.

Records are immutable tuples (slot order = the object's stored fields); a write replaces the
tuple. Readers that hold references (a Bulk job's snapshot, a query cursor) therefore keep
seeing the data as it was when they took it, as Salesforce's result sets do.

Change events apply the API user's field-level security (:attr:`Org.security`) whoever made
the change. Writes through the API (``Transaction.api``) are held to it as well; the control
API, an administrator, is not, and may also create person accounts.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sfamp_sandbox.salesforce import changes, person
from sfamp_sandbox.salesforce.api_error import (
    ApiError,
    invalid_type,
    no_such_column,
    not_found,
    not_writable,
)
from sfamp_sandbox.salesforce.cdc import RecordChange
from sfamp_sandbox.salesforce.ids import IdSequence, make_id, to_18
from sfamp_sandbox.salesforce.objects import OBJECTS, find_object
from sfamp_sandbox.salesforce.schema import FieldDef, ObjectDef
from sfamp_sandbox.salesforce.security import FieldSecurity
from sfamp_sandbox.salesforce.values import coerce

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
    """One request's commit: one transaction key, sequence numbers 1..n. ``api`` marks a
    write made through the API as the integration user, held to its field-level security."""

    user_id: str
    origin: str = DEFAULT_ORIGIN
    key: str = ""
    sequence: int = 0
    api: bool = False

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
        self.security = FieldSecurity()

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

    def _writable(self, obj: ObjectDef, name: str, creating: bool, tx: Transaction) -> FieldDef:
        field = obj.find(name)
        if field is None or (tx.api and self.security.hides(obj.name, field.name)):
            raise no_such_column(name, obj.name)
        if field.name == "Id":
            raise ApiError(
                400, "INVALID_FIELD", "The Id field should not be specified in the sobject data."
            )
        # Only an administrator (the control API) makes a person account here; a real org
        # does it through the person account record type.
        admin_only = creating and not tx.api and field.name == "IsPersonAccount"
        if not (field.createable if creating else field.updateable) and not admin_only:
            raise not_writable(field.name)
        return field

    def _apply(
        self,
        obj: ObjectDef,
        base: list[Any],
        values: Mapping[str, Any],
        tx: Transaction,
        *,
        creating: bool,
    ) -> list[str]:
        names = []
        for key, value in values.items():
            if key == "attributes":
                continue
            field = self._writable(obj, key, creating, tx)
            base[obj.slots[field.name]] = coerce(field, value)
            names.append(field.name)
        person.check_writes(obj, names, person.is_person(obj, base))
        person.compose_name(obj, base)
        return names

    def _stamp(
        self, obj: ObjectDef, row: list[Any], user_id: str, *, created: bool, by_user: bool = True
    ) -> None:
        """Audit stamps of a write; a system change (``by_user`` false) moves only
        ``SystemModstamp``, as background recalculations do."""
        now = self.now_ms()
        slots = obj.slots
        if created:
            row[slots["CreatedDate"]] = now
            row[slots["CreatedById"]] = user_id
        if by_user:
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

    def create(
        self, object_name: str, values: Mapping[str, Any], tx: Transaction, *, emit: bool = True
    ) -> str:
        """Add a record; ``emit`` false stores it without a change event (a silent load)."""
        store = self.store(object_name)
        obj = store.obj
        row = self.blank_row(obj, "", tx.user_id)
        self._apply(obj, row, values, tx, creating=True)
        missing = person.missing_fields(obj, row)
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
        if emit:
            body = changes.full_body(obj, record, self.security.hidden(obj.name))
            self._emit(self._change(obj, "CREATE", [record_id], tx, fields=body))
        return record_id

    def update(
        self,
        object_name: str,
        record_id: str,
        values: Mapping[str, Any],
        tx: Transaction,
        *,
        emit: bool = True,
    ) -> None:
        """Change a record. With ``emit`` false no change event is published and only
        ``SystemModstamp`` moves, as when Salesforce recalculates a value in the background."""
        store = self.store(object_name)
        old = self._for_write(store, record_id)
        row = list(old)
        self._apply(store.obj, row, values, tx, creating=False)
        self._stamp(store.obj, row, tx.user_id, created=False, by_user=emit)
        new = tuple(row)
        store.records[new[0]] = new
        if not emit:
            return
        hidden = self.security.hidden(store.obj.name)
        body, changed, nulled = changes.update_body(store.obj, old, new, hidden)
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

    def delete(
        self, object_name: str, record_id: str, tx: Transaction, *, emit: bool = True
    ) -> None:
        """Move a record to the recycle bin; ``emit`` false publishes no DELETE event."""
        store = self.store(object_name)
        record = self._for_write(store, record_id)
        self._set_deleted(store, record, True, tx.user_id)
        if emit:
            self._emit(self._change(store.obj, "DELETE", [record[0]], tx))

    def undelete(
        self, object_name: str, record_id: str, tx: Transaction, *, emit: bool = True
    ) -> None:
        """Restore a record from the recycle bin; ``emit`` false publishes no UNDELETE event."""
        store = self.store(object_name)
        record = self.find_record(store.obj.name, record_id)
        if record is None:
            raise not_found()
        if not record[1]:
            raise ApiError(400, "UNDELETE_FAILED", "Entity is not in the recycle bin")
        new = self._set_deleted(store, record, False, tx.user_id)
        if emit:
            body = changes.full_body(store.obj, new, self.security.hidden(store.obj.name))
            self._emit(self._change(store.obj, "UNDELETE", [new[0]], tx, fields=body))

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
            names = self._apply(store.obj, row, values, tx, creating=False)
            self._stamp(store.obj, row, tx.user_id, created=False)
            new = tuple(row)
            store.records[new[0]] = new
            updated.append(new[0])
        if updated:
            hidden = self.security.hidden(store.obj.name)
            body, changed, nulled = changes.merged_update_body(store.obj, names, new, hidden)
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
        hidden = self.security.hidden(store.obj.name)
        for record_id in ids:
            body = changes.full_body(store.obj, store.records[record_id], hidden)
            self._emit(self._change(store.obj, "CREATE", [record_id], tx, fields=body))

    def reset(self) -> None:
        """Forget every record and restore every field's security."""
        self.stores = {name: ObjectStore(obj) for name, obj in OBJECTS.items()}
        self.security.clear()
