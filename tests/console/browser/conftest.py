"""A real Chromium, driven by Playwright, for the console's browser tests.

Chromium comes from the system (Debian's ``chromium`` package or ``SFAMP_CHROMIUM``),
never from ``playwright install``: Playwright launches it by its executable path.
Without one, every test here skips with one line saying how to enable them.

The tests use Playwright's async API: its sync API refuses to run inside a running
event loop, and the sandboxes the console talks to serve from the tests' loop. Every
test and fixture here shares this package's loop, so that one browser serves them all
and closes when they are done.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from tests.console.browser.chromium import CHROMIUM_ARGS, ENABLE, find_chromium
from tests.console.browser.pages import ConsoleMessages
from tests.console.browser.stack import ConsoleStack, console_stack


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip before any fixture starts a broker or a sandbox for nothing.

    Raised here rather than in a fixture, every skip has this one location, so the
    summary groups them all into a single line.
    """
    if find_chromium() is None:
        pytest.skip(ENABLE)


@pytest.fixture(scope="session")
def chromium() -> Path:
    found = find_chromium()
    assert found is not None, ENABLE
    return Path(found)


# Generous for a loaded 2-core machine: a wait ends as soon as its state is there.
TIMEOUT_MS = 15_000


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    expect.set_options(timeout=TIMEOUT_MS)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        await launched.close()


@pytest_asyncio.fixture(loop_scope="package")
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A fresh profile per test: no cookies, storage or downloads carried over."""
    fresh = await browser.new_context(accept_downloads=True)
    fresh.set_default_timeout(TIMEOUT_MS)
    yield fresh
    await fresh.close()


@pytest_asyncio.fixture(loop_scope="package")
async def page(context: BrowserContext) -> Page:
    return await context.new_page()


@pytest_asyncio.fixture(scope="module", loop_scope="package")
async def console(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ConsoleStack]:
    """One console per module, on sandboxes and a topic prefix of its own."""
    async with console_stack(kafka_bootstrap, tmp_path_factory.mktemp("console")) as stack:
        yield stack


@pytest_asyncio.fixture(loop_scope="package")
async def console_messages(page: Page) -> ConsoleMessages:
    """Every console message and page error of ``page``, collected from its creation."""
    return ConsoleMessages.attach(page)
