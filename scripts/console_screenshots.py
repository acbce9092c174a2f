"""Redraw the README's screenshots of the web console: ``make screenshots``.

Starts the embedded broker, both sandboxes and ``sfamp console``; fills in the demo
mapping (that of ``sfamp demo``) in Chromium by the controls' names, with one
validation failure shown on the way; saves it; runs ``sfamp run`` on it while a few
Accounts change (two of them refused by Amplitude, to fill the dead letters); and
saves one PNG per page into ``docs/console/``:

    connection.png  mapping-setup.png  final-verification.png  status.png  dead-letters.png

Run from the repository root: ``.venv/bin/python -m scripts.console_screenshots
[--out DIR]``. Chromium is found as the browser tests find it (``SFAMP_CHROMIUM``,
``/usr/bin/chromium``, or on PATH). It reuses the browser tests' helpers, so the
pictures show what the tests drive.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
from pathlib import Path

import httpx
from playwright.async_api import Page, async_playwright, expect

from pipeline.demo import DEMO_MAPPING
from pipeline.runtime.listen import bind_error
from sfamp_sandbox.amplitude import AmplitudeSandbox
from sfamp_sandbox.amplitude.identify import IdentifyLimits
from sfamp_sandbox.kafka import EmbeddedKafka
from tests.console.browser.chromium import CHROMIUM_ARGS, ENABLE, find_chromium
from tests.console.browser.pages import MappingSetup
from tests.console.browser.stack import ConsoleStack, console_stack
from tests.runtime.conftest import wait_until

ROOT = Path(__file__).resolve().parents[1]
ACCOUNTS = 12
REFUSED = 2  # Accounts whose group Amplitude refuses (400): they become dead letters
VIEWPORT = {"width": 1280, "height": 900}


async def seed_accounts(console: ConsoleStack) -> list[str]:
    """Accounts in the org, then an Amplitude that refuses the groups of the first two."""
    async with httpx.AsyncClient(base_url=console.salesforce_url, timeout=10) as http:
        answer = await http.post("/__sandbox/seed", json={"object": "Account", "count": ACCOUNTS})
    answer.raise_for_status()
    ids = [str(i) for i in answer.json()["ids"]]
    amplitude = console.sandboxes.amplitude
    assert amplitude is not None
    await amplitude.stop()
    refused = frozenset(ids[:REFUSED])
    console.sandboxes.amplitude = AmplitudeSandbox(
        amplitude.host, amplitude.port, limits=IdentifyLimits(blocked_group_values=refused)
    )
    await console.sandboxes.amplitude.start()
    return ids


async def fill_demo_mapping(page: Page, console: ConsoleStack, out: Path) -> None:
    """The demo mapping by the controls' names; the picture shows a property typed twice."""
    cadence = DEMO_MAPPING["sync_cadence"]
    (relation,) = DEMO_MAPPING["mappings"]
    rows = [(p["sfdc_field"], p["amplitude_property"]) for p in relation["group_properties"]]
    form = await MappingSetup(page).open(console.url)
    await form.interval(cadence["every_seconds"])
    typo = [*rows[:-1], (rows[-1][0], rows[0][1])]
    await form.add_group_mapping(
        relation["sfdc_object"],
        relation["group_type"],
        relation["group_name_field"],
        typo,
        relation["on_delete"],
    )
    await expect(form.failures).to_contain_text("is already mapped")
    await expect(form.next).to_be_disabled()
    await page.screenshot(path=out / "mapping-setup.png", full_page=True)
    await form.type(form.control("Amplitude group property", len(rows) - 1), rows[-1][1])
    await form.no_failures()


async def verify_and_save(page: Page, out: Path) -> None:
    await page.get_by_role("button", name="Next", exact=True).click()
    table = page.get_by_role("table", name="Final verification")
    await expect(table).to_be_visible()
    await page.screenshot(path=out / "final-verification.png", full_page=True)
    await page.get_by_role("button", name="Save", exact=True).click()
    await expect(page.get_by_test_id("saved-revision")).to_have_text("1")


async def run_and_change(console: ConsoleStack, ids: list[str]) -> None:
    """``sfamp run`` on the published mapping; every Account changes once while it runs."""
    service = console.start_service()
    await service.ready()
    async with httpx.AsyncClient(base_url=console.salesforce_url, timeout=10) as http:
        for n, record_id in enumerate(ids):
            industry = ("Energy", "Banking", "Retail")[n % 3]
            answer = await http.patch(
                f"/__sandbox/records/Account/{record_id}", json={"Industry": industry}
            )
            answer.raise_for_status()

    async def flushed() -> bool:
        status = await service.status()
        return bool(status.get("last_flush")) and status.get("pending_groups") == 0

    await wait_until(flushed, timeout=60, what="sfamp run to flush the changes")


async def shoot(page: Page, console: ConsoleStack, ids: list[str], out: Path) -> None:
    await fill_demo_mapping(page, console, out)
    await verify_and_save(page, out)
    await run_and_change(console, ids)

    await page.goto(console.url + "/status")
    chart = page.get_by_test_id("throughput-chart")
    await expect(chart).to_contain_text(re.compile(r"groups flushed \([1-9]\d*\)"))
    await expect(page.get_by_test_id("dlq-count")).to_contain_text(f"{REFUSED} not replayed")
    await page.screenshot(path=out / "status.png", full_page=True)

    await page.goto(console.url + "/dead-letters")
    await expect(page.get_by_test_id("dead-letter")).to_have_count(REFUSED)
    await page.screenshot(path=out / "dead-letters.png", full_page=True)

    await page.goto(console.url + "/")
    await expect(page.get_by_test_id("mapping-revision")).to_have_text("1")
    await page.screenshot(path=out / "connection.png", full_page=True)


def default_or_free(port: int) -> int:
    """The sandboxes' documented port, so the pictures match the docs, unless it is taken."""
    return port if bind_error("127.0.0.1", port) is None else 0


async def main(chromium: str, out: Path) -> None:
    expect.set_options(timeout=30_000)
    broker = EmbeddedKafka(default_or_free(19092))
    await broker.start()
    ports = {"salesforce_port": default_or_free(8410), "amplitude_port": default_or_free(8420)}
    try:
        with tempfile.TemporaryDirectory() as workdir:
            async with (
                console_stack(
                    broker.bootstrap_servers, Path(workdir), topic_prefix="sfamp", **ports
                ) as console,
                async_playwright() as pw,
            ):
                ids = await seed_accounts(console)
                browser = await pw.chromium.launch(
                    executable_path=chromium, headless=True, args=CHROMIUM_ARGS
                )
                page = await browser.new_page(viewport=VIEWPORT)
                try:
                    await shoot(page, console, ids, out)
                finally:
                    await browser.close()
    finally:
        broker.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "console")
    target = parser.parse_args().out
    found = find_chromium()
    if found is None:
        sys.exit(ENABLE.replace("the console's browser tests", "make screenshots"))
    target.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(found, target))
    for png in sorted(target.glob("*.png")):
        print(f"wrote {png}")
