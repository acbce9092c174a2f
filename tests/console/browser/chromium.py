"""Finding and launching a system Chromium (tests and the screenshot script share it)."""

from __future__ import annotations

import os
import shutil

ENABLE = (
    "Chromium not found: install it (apt-get install chromium) or set SFAMP_CHROMIUM "
    "to run the console's browser tests"
)
CANDIDATES = ("chromium", "chromium-browser", "google-chrome")

# Headless, and nothing that phones home: on a closed network Chromium's own background
# connections (component updates, sync, QUIC probes) get refused and slow every page.
# Playwright gives each launch a fresh, temporary user-data directory of its own.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def find_chromium() -> str | None:
    """``SFAMP_CHROMIUM``, else /usr/bin/chromium, else the first Chromium on PATH."""
    configured = os.environ.get("SFAMP_CHROMIUM")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None
