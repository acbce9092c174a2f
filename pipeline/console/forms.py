"""The Mapping setup form as data: form fields to a mapping document and back.

Pure: no I/O. The document is exactly what ``sfamp config validate`` reads, so
the page validates it with the same code, and each problem's JSON path is turned
back into the id of the control it is about (:func:`control_for`).

Field names: ``cadence_mode``, ``cadence_at``, ``cadence_every``; ``reconcile_mode``,
``reconcile_at``, ``reconcile_minute``;
``m<i>.sfdc_object``, ``m<i>.group_type``, ``m<i>.group_name_field``,
``m<i>.on_delete``; ``m<i>.p<j>.sfdc_field``, ``m<i>.p<j>.amplitude_property``.
Each section and row keeps the number it was drawn with (its ``key``) for as long
as the page shows it: a removal deletes only its own controls and an addition
takes the next free number, so the controls around them are never redrawn. Reading
sorts by number; a problem's path, which counts positions, is turned back into
the keys of the controls it is about.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pipeline.errors import Problem

ON_DELETE: Final = ("ignore", "mark", "unset")
CADENCE_MODES: Final = ("daily", "hourly", "interval")
RECONCILE_MODES: Final = ("daily", "hourly", "off")
DEFAULT_AT: Final = "00:00"
DEFAULT_RECONCILE_AT: Final = "03:00"
_SECTION = re.compile(r"^m(\d+)\.(sfdc_object|group_type|group_name_field|on_delete)$")
_ROW = re.compile(r"^m(\d+)\.p(\d+)\.(sfdc_field|amplitude_property)$")
_WHOLE = re.compile(r"[+-]?[0-9]{1,18}")
_PATH = re.compile(r"^\$\.mappings\[(\d+)\](?:\.(\w+)(?:\[(\d+)\](?:\.(\w+))?)?)?$")
_PATH_START = re.compile(r"^\$\.mappings\[(\d+)\](?:\.(\w+)(?:\[(\d+)\](?:\.(\w+))?)?)?")
_CADENCE_CONTROLS: Final = {
    "$.sync_cadence": "cadence_mode",
    "$.sync_cadence.mode": "cadence_mode",
    "$.sync_cadence.at": "cadence_at",
    "$.sync_cadence.every_seconds": "cadence_every",
    "$.reconcile": "reconcile_mode",
    "$.reconcile.mode": "reconcile_mode",
    "$.reconcile.at": "reconcile_at",
    "$.reconcile.minute": "reconcile_minute",
    "$.mappings": "add_mapping",
}


@dataclass
class RowForm:
    sfdc_field: str = ""
    amplitude_property: str = ""
    key: int = 0


@dataclass
class SectionForm:
    sfdc_object: str = ""
    group_type: str = ""
    group_name_field: str = ""
    on_delete: str = "ignore"
    rows: list[RowForm] = field(default_factory=list)
    key: int = 0

    def row(self, key: int) -> RowForm | None:
        return next((row for row in self.rows if row.key == key), None)


@dataclass(frozen=True, slots=True)
class Change:
    """What a structural action changed, by keys: the page redraws only that part.

    ``kind`` is ``cadence`` or ``reconcile`` (a schedule mode: its details),
    ``object`` (a section's object: the controls listing its fields),
    ``add_mapping``/``remove_mapping`` (a section) or ``add_property``/
    ``remove_property`` (a row of ``section``).
    """

    kind: str
    section: int | None = None
    row: int | None = None


@dataclass
class MappingForm:
    """What the form holds, whether or not it is a valid mapping."""

    cadence_mode: str = "daily"
    cadence_at: str = DEFAULT_AT
    cadence_every: str = "60"
    reconcile_mode: str = "daily"
    reconcile_at: str = DEFAULT_RECONCILE_AT
    reconcile_minute: str = "0"
    sections: list[SectionForm] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        """The mapping document the form stands for; an empty field is left out (required)."""
        return {
            "version": 1,
            "sync_cadence": self._cadence(),
            "reconcile": self._reconcile(),
            "mappings": [_section_document(section) for section in self.sections],
        }

    def _cadence(self) -> dict[str, Any]:
        if self.cadence_mode == "daily":
            return {"mode": "daily", "at": self.cadence_at}
        if self.cadence_mode == "interval":
            return {"mode": "interval", "every_seconds": _whole(self.cadence_every)}
        return {"mode": self.cadence_mode}

    def _reconcile(self) -> dict[str, Any]:
        if self.reconcile_mode == "daily":
            return {"mode": "daily", "at": self.reconcile_at}
        if self.reconcile_mode == "hourly":
            return {"mode": "hourly", "minute": _whole(self.reconcile_minute)}
        return {"mode": self.reconcile_mode}

    def shown_controls(self) -> list[str]:
        """The schedule controls the current modes show (the others are not drawn)."""
        cadence = {"daily": ["cadence_at"], "interval": ["cadence_every"]}
        reconcile = {"daily": ["reconcile_at"], "hourly": ["reconcile_minute"]}
        return [
            "cadence_mode",
            *cadence.get(self.cadence_mode, []),
            "reconcile_mode",
            *reconcile.get(self.reconcile_mode, []),
        ]

    def section(self, key: int) -> SectionForm | None:
        return next((section for section in self.sections if section.key == key), None)

    def apply(self, action: str) -> Change | None:
        """A structural change by keys: ``add_mapping``, ``remove_mapping:<m>``,
        ``add_property:<m>``, ``remove_property:<m>:<p>``; ``cadence``, ``reconcile`` and
        ``object:<m>`` change nothing here but name the part to redraw. None: no change
        (an unknown action, or a section or row already gone)."""
        name, _, where = action.partition(":")
        at = [int(part) for part in where.split(":") if part.isdigit()]
        if name in ("cadence", "reconcile"):
            return Change(name)
        if name == "add_mapping":
            key = _next_key(self.sections)
            self.sections.append(SectionForm(key=key, rows=[RowForm()]))
            return Change(name, key)
        section = self.section(at[0]) if at else None
        if section is None:
            return None
        if name == "object":
            return Change(name, section.key)
        if name == "remove_mapping":
            self.sections = [s for s in self.sections if s is not section]
            return Change(name, section.key)
        if name == "add_property":
            section.rows.append(RowForm(key=_next_key(section.rows)))
            return Change(name, section.key, section.rows[-1].key)
        row = section.row(at[1]) if name == "remove_property" and len(at) == 2 else None
        if row is None:
            return None
        section.rows = [r for r in section.rows if r is not row]
        return Change(name, section.key, row.key)


def _whole(text: str) -> int | str:
    """A control's text as the whole number it spells (``-1`` too, for the range check
    to name), else as the text it is (for the type check to name)."""
    text = text.strip()
    return int(text) if _WHOLE.fullmatch(text) else text


def _next_key(items: list[SectionForm] | list[RowForm]) -> int:
    return max((item.key for item in items), default=-1) + 1


def _section_document(section: SectionForm) -> dict[str, Any]:
    entry: dict[str, Any] = {
        key: value
        for key in ("sfdc_object", "group_type", "group_name_field")
        if (value := getattr(section, key))
    }
    entry["group_properties"] = [
        {k: v for k in ("sfdc_field", "amplitude_property") if (v := getattr(row, k))}
        for row in section.rows
    ]
    entry["on_delete"] = section.on_delete
    return entry


def form_from_fields(fields: Mapping[str, str]) -> MappingForm:
    """Read the posted form (unknown names, such as the CSRF token, are ignored)."""
    form = MappingForm(
        cadence_mode=fields.get("cadence_mode", "daily"),
        # A time typed empty stays empty, for validation to refuse (the mapping's default
        # would otherwise take its place unseen); one not drawn takes the default.
        cadence_at=fields.get("cadence_at", DEFAULT_AT).strip(),
        cadence_every=fields.get("cadence_every", "60"),
        reconcile_mode=fields.get("reconcile_mode", "daily"),
        reconcile_at=fields.get("reconcile_at", DEFAULT_RECONCILE_AT).strip(),
        reconcile_minute=fields.get("reconcile_minute", "0"),
    )
    sections: dict[int, SectionForm] = {}
    rows: dict[tuple[int, int], RowForm] = {}
    for name, value in fields.items():
        if match := _SECTION.match(name):
            m = int(match[1])
            section = sections.setdefault(m, SectionForm(key=m))
            setattr(section, match[2], value.strip())
        elif match := _ROW.match(name):
            m, p = int(match[1]), int(match[2])
            sections.setdefault(m, SectionForm(key=m))
            row = rows.setdefault((m, p), RowForm(key=p))
            setattr(row, match[3], value.strip())
    for (m, _), row in sorted(rows.items()):
        sections[m].rows.append(row)
    form.sections = [sections[m] for m in sorted(sections)]
    return form


def form_from_document(document: object) -> MappingForm:
    """Fill the form from an imported (or published) document, as far as it has the shape."""
    doc: dict[str, Any] = document if isinstance(document, dict) else {}
    cadence = _part(doc, "sync_cadence", dict)
    reconcile = _part(doc, "reconcile", dict)
    form = MappingForm(
        cadence_mode=_text(cadence.get("mode")) or "daily",
        cadence_at=_text(cadence.get("at")) or DEFAULT_AT,
        cadence_every=_text(cadence.get("every_seconds")) or "60",
        reconcile_mode=_text(reconcile.get("mode")) or "daily",
        reconcile_at=_text(reconcile.get("at")) or DEFAULT_RECONCILE_AT,
        reconcile_minute=_text(reconcile.get("minute")) or "0",
    )
    entries = [entry for entry in _part(doc, "mappings", list) if isinstance(entry, dict)]
    for m, entry in enumerate(entries):
        props = entry.get("group_properties")
        rows = [p for p in (props if isinstance(props, list) else []) if isinstance(p, dict)]
        form.sections.append(
            SectionForm(
                sfdc_object=_text(entry.get("sfdc_object")),
                group_type=_text(entry.get("group_type")),
                group_name_field=_text(entry.get("group_name_field")),
                on_delete=_text(entry.get("on_delete")) or "ignore",
                rows=[
                    RowForm(_text(row.get("sfdc_field")), _text(row.get("amplitude_property")), p)
                    for p, row in enumerate(rows)
                ],
                key=m,
            )
        )
    return form


def _part(doc: dict[str, Any], key: str, kind: type[Any]) -> Any:
    value = doc.get(key)
    return value if isinstance(value, kind) else kind()


def _text(value: object) -> str:
    return "" if value is None or isinstance(value, dict | list) else str(value)


def control_for(path: str, form: MappingForm | None = None) -> str | None:
    """The id of the control a JSON path is about, or None (shown in the list only).

    Paths count positions; with ``form``, the ids carry its sections' and rows' keys.
    """
    if path in _CADENCE_CONTROLS:
        return _CADENCE_CONTROLS[path]
    match = _PATH.match(path)
    if match is None:
        return None
    m, key, p, row_key = match.groups()
    section = form.sections[int(m)] if form and int(m) < len(form.sections) else None
    if section is not None:
        m = str(section.key)
        if p is not None and int(p) < len(section.rows):
            p = str(section.rows[int(p)].key)
    if key is None:
        return f"m{m}-section"
    if key != "group_properties":
        return f"m{m}-{key}"
    if p is None:
        return f"m{m}-add_property"
    return f"m{m}-p{p}-{row_key}" if row_key else f"m{m}-p{p}-row"


def messages_by_control(
    problems: list[Problem], form: MappingForm | None = None
) -> dict[str, list[str]]:
    """Each control's failures, in the order validation reported them."""
    found: dict[str, list[str]] = {}
    for problem in problems:
        control = control_for(problem.path, form)
        if control is not None:
            found.setdefault(control, []).append(problem.message)
    return found


# Top to bottom as the page draws them: the schedules, then each section's controls.
_SCHEDULE_ORDER: Final = ("$.sync_cadence", "$.reconcile")
_SCHEDULE_DETAILS: Final = ("mode", "at", "every_seconds", "minute")
_SECTION_ORDER: Final = ("sfdc_object", "group_type", "group_name_field", "group_properties")
_ROW_ORDER: Final = ("sfdc_field", "amplitude_property")
_LAST: Final = 1 << 30


def form_position(path: str) -> tuple[int, ...]:
    """Where the control a problem's path is about stands on the page, as a sort key.

    The document as a whole and unknown keys first, then Sync Cadence and Reconcile
    (mode before details), each section in turn (object, group type, name field, the
    rows in order, On delete), and the list of sections (shown by its add button) last.
    Positions are numbers: section 10 comes after section 2.
    """
    for rank, block in enumerate(_SCHEDULE_ORDER, start=1):
        if path == block or path.startswith(block + "."):
            detail = path[len(block) + 1 :].split(".")[0]
            return (rank, _rank(detail, _SCHEDULE_DETAILS) if detail else -1)
    match = _PATH_START.match(path)
    if match is None:
        return (4,) if path == "$.mappings" else (0,)
    m, key, p, row_key = match.groups()
    if key is None:
        return (3, int(m), -1)
    if key != "group_properties":
        return (3, int(m), _rank(key, (*_SECTION_ORDER, "on_delete")))
    if p is None:
        return (3, int(m), 3, _LAST)
    return (3, int(m), 3, int(p), _rank(row_key, _ROW_ORDER) if row_key else -1)


def _rank(name: str, order: tuple[str, ...]) -> int:
    return order.index(name) if name in order else len(order)


def in_form_order(problems: list[Problem]) -> list[Problem]:
    """``problems`` as the page draws their controls (stable for one control's messages)."""
    return sorted(problems, key=lambda problem: form_position(problem.path))


def control_ids(form: MappingForm) -> list[str]:
    """Every control that can carry a message, for clearing the old ones."""
    ids = [*form.shown_controls(), "add_mapping"]
    for section in form.sections:
        m = section.key
        keys = ("section", "sfdc_object", "group_type", "group_name_field", "on_delete")
        ids += [f"m{m}-{key}" for key in keys] + [f"m{m}-add_property"]
        for row in section.rows:
            p = row.key
            ids += [f"m{m}-p{p}-{key}" for key in ("row", "sfdc_field", "amplitude_property")]
    return ids


def left_out_by_form(document: dict[str, Any]) -> list[str]:
    """The JSON paths (``$.mappings[0].on_delet``) of what filling the form from
    ``document`` would leave out or change: a key the form has no control for, an
    object or a list where a control holds text, an entry that is not an object.

    Values are compared as the controls hold them (text), so a value the form shows
    as it was (``30.0`` seconds, an empty name) is kept; a default the form adds for a
    key the document lacks (the ``on_delete`` it shows) is not a change, but one it
    would put in place of a null or an empty text is.
    """
    return list(_left_out(document, form_from_document(document).document(), "$"))


def _left_out(value: object, kept: object, path: str) -> Iterator[str]:
    if isinstance(value, dict):
        if not isinstance(kept, dict):
            yield path
            return
        for key, item in value.items():
            inner = f"{path}.{key}"
            if key in kept:
                yield from _left_out(item, kept[key], inner)
            elif not (item is None or item == ""):  # an empty control is left out too
                yield inner
    elif isinstance(value, list):
        if not isinstance(kept, list) or len(kept) != len(value):
            yield path
            return
        for index, (item, held) in enumerate(zip(value, kept, strict=True)):
            yield from _left_out(item, held, f"{path}[{index}]")
    elif isinstance(kept, dict | list):
        yield path  # a part the form holds where the document has none (null)
    elif value is None or value == "":
        if _text(kept):
            yield path  # the form would show its default in the empty one's place
    elif value != kept and _text(value) != _text(kept):  # (1.0 is the version 1)
        yield path
