"""The Status page's chart: changes ingested and groups flushed per minute, as SVG geometry.

Pure: the service's ``per_minute`` history in, coordinates out. The template draws
them as inline SVG with classes (no inline styles: the Content-Security-Policy
forbids them), so no chart library is needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

WIDTH: Final = 720
HEIGHT: Final = 220
LEFT: Final = 48  # room for the y labels
BOTTOM: Final = 24  # room for the x labels
TOP: Final = 10
RIGHT: Final = 10


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    css_class: str
    points: str  # "x,y x,y ..." for a polyline
    total: int
    peak: int


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    left: int
    top: int
    right: int
    bottom: int
    series: tuple[Series, ...]
    y_ticks: tuple[tuple[float, str], ...]
    x_ticks: tuple[tuple[float, str], ...]

    @property
    def empty(self) -> bool:
        return all(s.total == 0 for s in self.series)


def _nice_max(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value`` (at least 1)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if factor * step >= value:
                return factor * step
        step *= 10


def minute_chart(entries: Sequence[Mapping[str, Any]]) -> Chart:
    """Both series on one scale; x runs from an hour ago (left) to now (right)."""
    count = max(len(entries), 2)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    kinds = (
        ("changes_ingested", "changes ingested", "changes"),
        ("groups_flushed", "groups flushed", "groups"),
    )
    values = {key: [int(e.get(key) or 0) for e in entries] for key, _, _ in kinds}
    top = _nice_max(max((v for vs in values.values() for v in vs), default=0))

    def x(i: int) -> float:
        return round(LEFT + plot_w * i / (count - 1), 1)

    def y(v: int) -> float:
        return round(TOP + plot_h * (1 - v / top), 1)

    series = tuple(
        Series(
            name=label,
            css_class=css,
            points=" ".join(f"{x(i)},{y(v)}" for i, v in enumerate(values[key])),
            total=sum(values[key]),
            peak=max(values[key], default=0),
        )
        for key, label, css in kinds
    )
    y_ticks = tuple((y(v), str(v)) for v in dict.fromkeys((0, top // 2, top)))
    marks = [
        (i, f"-{len(entries) - 1 - i}m" if i < len(entries) - 1 else "now")
        for i in range(0, len(entries), 15)
    ]
    if entries and marks[-1][0] != len(entries) - 1:
        marks.append((len(entries) - 1, "now"))
    return Chart(
        WIDTH,
        HEIGHT,
        LEFT,
        TOP,
        RIGHT,
        BOTTOM,
        series,
        y_ticks,
        tuple((x(i), label) for i, label in marks),
    )
