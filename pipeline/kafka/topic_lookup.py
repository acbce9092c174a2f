"""Which topic a name given on the command line means: full, or short as ``Account``, ``dlq``."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline import wording
from pipeline.errors import KafkaError
from pipeline.kafka.inspect import KafkaInspector, expected_topic


@dataclass(frozen=True, slots=True)
class FoundTopic:
    """A topic ``find_topic`` resolved: its full name, and whether it exists yet."""

    name: str
    exists: bool


async def find_topic(inspector: KafkaInspector, wanted: str) -> FoundTopic:
    """The topic ``wanted`` names; sfamp's own topics not written yet are found but empty.

    Any other name that matches no topic is a KafkaError naming what was asked for.
    """
    topic = await inspector.resolve(wanted)
    if topic is not None:
        return FoundTopic(topic, exists=True)
    expected = expected_topic(inspector.names, wanted)
    if expected is not None:
        return FoundTopic(expected, exists=False)
    names = inspector.names
    # sfamp's own topics count even before their first write: "DLQ" is near "dlq".
    known = sorted({*await inspector.topics(), *names.control})
    raise KafkaError(
        f"no topic {wanted!r} under prefix {names.prefix!r}"
        f"{nearest(wanted, known, names.prefix)} (see 'sfamp topics list')"
    )


def nearest(wanted: str, topics: list[str], prefix: str) -> str:
    """``; did you mean changes.Account?`` for the topic closest to a misspelt name, in
    the short form when it was given short; empty when none is close."""
    short = [topic.removeprefix(f"{prefix}.") for topic in topics]
    names = short + topics + [topic.rpartition(".")[2] for topic in topics]
    close = wording.nearest(wanted, names)
    return f"; did you mean {close}?" if close else ""
