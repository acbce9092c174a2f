"""Who may use the console and how it gets its Salesforce credentials, in a real browser:
sign-in with ``SFAMP_CONSOLE__TOKEN``, Connect to Salesforce through the org's login page,
and the Connection page's long values wrapping between their parts."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import Page, expect

from pipeline.sandbox_stack import SANDBOX_PASSWORD, SANDBOX_USERNAME
from tests.console.browser.pages import MappingSetup, sign_in, text_lines
from tests.console.browser.stack import ConsoleStack, console_stack
from tests.console.conftest import console_process

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="package")]

TOKEN = "console-token-of-the-browser-tests"


@pytest_asyncio.fixture(scope="module", loop_scope="package")
async def console(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ConsoleStack]:
    """This module's console asks for the token."""
    workdir = tmp_path_factory.mktemp("access")
    token = {"SFAMP_CONSOLE__TOKEN": TOKEN}
    async with console_stack(kafka_bootstrap, workdir, console_env=token) as stack:
        yield stack


async def test_nothing_changes_before_signing_in_and_the_setup_works_after(
    page: Page, console: ConsoleStack
) -> None:
    await page.goto(console.url + "/mapping")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    refused = await page.request.post(
        console.url + "/mapping/validate", form={"cadence_mode": "daily"}
    )
    assert refused.status == 403
    assert "sign in first" in await refused.text()
    await page.get_by_label("Console token").fill("not-the-token")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_have_text("That is not the console token.")

    await sign_in(page, console.url, TOKEN, "/mapping")
    form = MappingSetup(page)
    await form.add_group_mapping("Account", "account", "Id", [("Name", "name")])
    await form.no_failures()
    await form.next.click()
    table = page.get_by_role("table", name="Final verification")
    await expect(table.get_by_role("row").filter(has_text="Account.Name -> name")).to_contain_text(
        "pass"
    )


async def test_connection_values_wrap_between_their_parts(
    page: Page, console: ConsoleStack
) -> None:
    await sign_in(page, console.url, TOKEN)
    user = page.get_by_test_id("salesforce-user")
    await expect(user).to_have_text(SANDBOX_USERNAME)
    assert await text_lines(user) == [SANDBOX_USERNAME]  # the column makes room for it

    await page.set_viewport_size({"width": 240, "height": 800})  # narrower than any address
    values = page.locator("dl.facts dd")
    lines = [await text_lines(value) for value in await values.all()]
    assert len(await text_lines(user)) > 1
    for value in lines:
        for before, after in itertools.pairwise(value):
            assert not (before[-1].isalnum() and after[0].isalnum()), f"broken in a word: {value}"


async def test_connect_to_salesforce_shows_the_refresh_token_once(
    page: Page, console: ConsoleStack
) -> None:
    """A console with no Salesforce credentials (nor a token: it is bound to loopback)."""
    env = {k: v for k, v in console.env.items() if k != "SFAMP_SALESFORCE__PASSWORD"}
    async with console_process(env, console.workdir) as (url, _):
        await page.goto(url + "/")
        await page.get_by_role("link", name="Connect to Salesforce").click()
        await page.get_by_label("Username").fill(SANDBOX_USERNAME)
        await page.get_by_label("Password").fill(SANDBOX_PASSWORD)
        await page.get_by_role("button", name="Log In").click()

        await expect(page.get_by_role("heading", name="Connected to Salesforce")).to_be_visible()
        token = page.get_by_label("Refresh token")
        await expect(token).not_to_have_value("")
        shown = await token.input_value()
        await page.reload()
        await expect(page.get_by_text("start again with Connect to Salesforce")).to_be_visible()
        await expect(page.get_by_label("Refresh token")).to_have_count(0)
        assert shown not in await page.content()
