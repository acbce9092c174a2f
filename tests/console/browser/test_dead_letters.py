"""Dead letters in a real browser: Dismiss one entry, then every unreplayable one."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Page, expect

from pipeline.config.settings import KafkaSettings
from pipeline.kafka.admin import ensure_topics, sfamp_topics
from pipeline.kafka.producer import ChangeProducer
from pipeline.kafka.records import DlqEntry
from pipeline.kafka.topics import TopicNames
from tests.console.browser.stack import ConsoleStack
from tests.support.dlq import rejected

# The Replayed column of a dismissed entry, as sfamp dlq list says it: dismissed <time>.
DISMISSED_AT = re.compile(r"dismissed (\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d UTC")

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="package")]


async def dead_letter(console: ConsoleStack) -> DlqEntry:
    """One rejected group and one record that is no DLQ entry at all, in the console's DLQ."""
    settings = KafkaSettings(
        bootstrap_servers=console.env["SFAMP_KAFKA__BOOTSTRAP_SERVERS"],
        topic_prefix=console.topic_prefix,
    )
    await ensure_topics(settings, sfamp_topics(settings, []))
    entry = rejected("001RM0000000qqqYAA")
    topic = TopicNames(settings.topic_prefix).dlq
    async with ChangeProducer(settings) as producer:
        await producer.send_all([(topic, *entry.encode()), (topic, b"junk", b"not a DLQ entry")])
    return entry


async def test_dismiss_one_then_every_unreplayable_one(page: Page, console: ConsoleStack) -> None:
    entry = await dead_letter(console)
    await page.goto(console.url + "/dead-letters")
    rows = page.get_by_test_id("dead-letter")
    await expect(rows).to_have_count(2)
    # The record that is no entry waits too, as sfamp status and dlq list count it.
    await expect(page.get_by_text("2 entries in")).to_contain_text("2 not replayed")
    named = rows.filter(has_text=entry.key)
    await named.get_by_role("button", name="Dismiss").click()

    outcome = page.get_by_role("status")
    await expect(outcome).to_contain_text("Dismissed 1 of 1")
    await expect(outcome).to_contain_text(f"{entry.key}: dismissed in the console")
    await expect(named).to_contain_text(DISMISSED_AT)
    await expect(named.get_by_role("button", name="Dismiss")).to_have_count(0)
    await expect(named.get_by_role("button", name="Replay")).to_have_count(0)
    await expect(page.get_by_text("2 entries in")).to_contain_text("1 not replayed")
    await expect(page.get_by_role("button", name="Replay all")).to_be_enabled()

    await page.get_by_role("button", name="Dismiss unreplayable").click()
    await expect(outcome).to_contain_text("Dismissed 1 of 1")
    await expect(rows.filter(has_text="malformed")).to_contain_text(DISMISSED_AT)
    await expect(page.get_by_role("button", name="Dismiss", exact=True)).to_have_count(0)
    await expect(page.get_by_text("2 entries in")).to_contain_text("0 not replayed")
    await expect(page.get_by_role("button", name="Replay all")).to_be_disabled()
