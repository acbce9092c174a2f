"""The demo and the sandbox say where the web console is and how to open it."""

from __future__ import annotations

from rich.console import Console

from pipeline.demo import _explore_hint
from pipeline.sandbox_stack import console_url


def test_the_console_url_is_the_settings_default() -> None:
    assert console_url() == "http://127.0.0.1:8430"


def test_the_demo_ends_by_saying_how_to_open_the_console() -> None:
    console = Console(record=True, width=200)
    _explore_hint(console)
    lines = console.export_text().strip().splitlines()
    assert lines[0] == "To explore further:"
    assert "sfamp console serves the web console at http://127.0.0.1:8430" in lines[-1]
