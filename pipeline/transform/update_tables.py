"""Tables for the compiled config's one-pass update: what each field name of a change feeds.

A partial update (a change event's ``update``) carries a few fields; for a mapping on
the short road (:mod:`pipeline.transform.compiled`) each one feeds known properties.
These tables learn, per field name on first sight, which (property, type) targets it
feeds, so that the update costs one look-up per field. A name that could arrive
twice in one change (a component both flat and nested), or nesting that needs the
general rules, is marked :data:`BAIL`: the caller then flattens the change first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, TypeVar

from pipeline.transform.apply import Order
from pipeline.transform.coalesce import Stamped
from pipeline.transform.envelope import ChangeEnvelope
from pipeline.transform.schema import ObjectSchema, normalise_component
from pipeline.transform.values import to_property_value

# (property, Salesforce type, the value types its conversion keeps as they are) of each
# target a flat field feeds
Targets = tuple[tuple[str, str | None, frozenset[type]], ...]
# What the tables learn of a field: refuse the change (the flattening road answers it),
# or skip the field.
BAIL: Final[Any] = ((), ())
SKIP: Final[Any] = {}
# Field names seen in changes are remembered per object up to this many (a bound against
# messages that make up names).
NAMES_LIMIT: Final = 10_000
_T = TypeVar("_T")


def put_converted(
    stamped: dict[str, Stamped],
    unset: list[str],
    targets: Targets,
    value: Any,
    order: Order,
) -> None:
    """``value`` of a field, converted for each of its ``targets``: into ``stamped`` as of
    ``order``, or onto ``unset`` when it is null (the caller stamps those last)."""
    for prop, sf_type, kept in targets:
        if type(value) in kept and value != "":
            stamped[prop] = Stamped(value, order)  # what the conversion would give back
            continue
        converted = to_property_value(value, sf_type)
        if converted is None:
            unset.append(prop)
        else:
            stamped[prop] = Stamped(converted, order)


class UpdateTables:
    """For the one-pass update: each field name met, what it feeds, learned on first sight.

    It gives the same answers as flattening the change first (``values_of``) wherever a
    flat field name can arrive only once: it refuses (``BAIL``) a top-level field that is
    also a compound's component, and nesting under anything but a described compound.

    The tables are read with ``[]`` and ``except KeyError``, cheaper than ``.get`` where a
    name misses only once (or past :data:`NAMES_LIMIT`, when it is no longer remembered).
    """

    __slots__ = ("_by_field", "_components", "_own", "_schema", "nested", "nulled", "plain")

    def __init__(
        self,
        by_field: Mapping[str, Targets],
        own: Mapping[str, Targets],
        schema: ObjectSchema | None,
    ) -> None:
        """``by_field``: every target a name feeds, a compound's components included (what
        its null unsets); ``own``: the targets of the field itself (what a value sets)."""
        assert schema is not None  # the short road needs a describe
        self._schema = schema
        self._by_field = by_field
        self._own = own
        self._components = frozenset(schema.by_component.values())
        self.plain: dict[str, Targets] = {}  # top-level field -> the targets its value sets
        self.nested: dict[str, dict[str, Targets]] = {}  # compound -> component -> targets
        self.nulled: dict[str, Targets] = {}  # a nulled name -> targets

    def stamp(self, envelope: ChangeEnvelope, order: Order) -> dict[str, Stamped] | None:
        """The properties a change event's fields and nulled names set and unset, stamped
        with ``order`` (unsets last, as the coalescer applies a change); None when the
        change needs flattening first (see the class)."""
        stamped: dict[str, Stamped] = {}
        unset: list[str] = []
        plain = self.plain
        for key, value in envelope.fields.items():
            kind = type(value)
            if kind is dict:
                if not self._stamp_nested(key, value, stamped, unset, order):
                    return None
                continue
            try:
                targets = plain[key]
            except KeyError:
                targets = self.learn_plain(key)
            if value is None:  # null: a compound's null reaches its components too
                if targets is BAIL:
                    return None
                targets = self.nulled_targets(key)
            if not targets:
                continue
            if targets is BAIL:
                return None
            # put_converted inlined: this runs for every mapped field of every change
            for prop, sf_type, kept in targets:
                if kind in kept and value != "":
                    stamped[prop] = Stamped(value, order)
                    continue
                converted = to_property_value(value, sf_type)
                if converted is None:
                    unset.append(prop)
                else:
                    stamped[prop] = Stamped(converted, order)
        if envelope.nulled:  # tested first: most changes have neither nulls nor unsets
            for name in envelope.nulled:
                put_converted(stamped, unset, self.nulled_targets(name), None, order)
        if unset:
            for prop in unset:
                stamped[prop] = Stamped(None, order)
        return stamped

    def _stamp_nested(
        self,
        key: str,
        value: dict[str, Any],
        stamped: dict[str, Stamped],
        unset: list[str],
        order: Order,
    ) -> bool:
        """A compound field's components, into ``stamped``; False: flatten first."""
        try:
            components = self.nested[key]
        except KeyError:
            components = self.learn_nested(key)
        if components is SKIP or "attributes" in value:
            return True  # a relationship: not a field of this record
        if components is BAIL or ("diff" in value and len(value) == 1):
            return False
        for component, inner in value.items():
            try:
                found = components[component]
            except KeyError:
                found = self.learn_component(key, components, component)
            if found:
                put_converted(stamped, unset, found, inner, order)
        return True

    def learn_plain(self, key: str) -> Targets:
        if "." in key:
            targets: Targets = ()  # a Bulk relationship column such as Owner.Name
        elif key in self._components:
            targets = BAIL
        else:
            # A compound's (or a person name's) own value names none of its components.
            targets = self._own.get(key, ())
        return remember(self.plain, key, targets)

    def learn_nested(self, key: str) -> dict[str, Targets]:
        if "." in key:
            components = SKIP
        elif self._schema.is_compound(key):
            components = {}
        else:
            components = BAIL  # a person name, or a field the describe does not know
        return remember(self.nested, key, components)

    def learn_component(
        self, parent: str, components: dict[str, Targets], component: str
    ) -> Targets:
        flat = self._schema.component_field(parent, normalise_component(component))
        return remember(components, component, self._by_field.get(flat, ()))

    def nulled_targets(self, name: str) -> Targets:
        targets = self.nulled.get(name)
        if targets is None:
            parent, dot, component = name.partition(".")
            schema = self._schema
            flat = schema.component_field(parent, normalise_component(component)) if dot else name
            targets = remember(self.nulled, name, self._by_field.get(flat, ()))
        return targets


def remember(table: dict[str, _T], key: str, value: _T) -> _T:
    if len(table) < NAMES_LIMIT:
        table[key] = value
    return value
