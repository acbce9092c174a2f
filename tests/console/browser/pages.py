"""What the browser tests watch on a page besides its content."""

from __future__ import annotations

from dataclasses import dataclass, field

from playwright.async_api import ConsoleMessage, Error, Locator, Page, expect


@dataclass
class ConsoleMessages:
    """The console messages and uncaught errors of one page, in order."""

    lines: list[str] = field(default_factory=list)

    @classmethod
    def attach(cls, page: Page) -> ConsoleMessages:
        collected = cls()
        page.on("console", collected._console)
        page.on("pageerror", collected._page_error)
        return collected

    def _console(self, message: ConsoleMessage) -> None:
        self.lines.append(f"{message.type}: {message.text}")

    def _page_error(self, error: Error) -> None:
        self.lines.append(f"pageerror: {error.message}")

    def csp_violations(self) -> list[str]:
        """Chromium reports every blocked script, style or connection on the console."""
        return [line for line in self.lines if "Content Security Policy" in line]

    def errors(self) -> list[str]:
        return [line for line in self.lines if line.startswith(("error:", "pageerror:"))]


# The text of an element as the browser lays it out: one string per line box (a space
# where a line was broken stays at the end of the line before).
_LINES = """(element) => {
  const lines = [];
  let top = null;
  const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (let i = 0; i < node.data.length; i++) {
      const range = document.createRange();
      range.setStart(node, i);
      range.setEnd(node, i + 1);
      const box = range.getClientRects()[0];
      const blank = !node.data[i].trim();
      if (!box || (blank && top === null)) { continue; }
      if (!blank && (top === null || box.top > top + box.height / 2)) {
        lines.push("");
        top = box.top;
      }
      lines[lines.length - 1] += node.data[i];
    }
  }
  return lines;
}"""


async def text_lines(element: Locator) -> list[str]:
    lines: list[str] = await element.evaluate(_LINES)
    return lines


async def sign_in(page: Page, console_url: str, token: str, path: str = "/") -> None:
    """Open ``path``, which sends a browser without a session to the sign-in page first."""
    await page.goto(console_url + path)
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.get_by_label("Console token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(console_url + path)


class MappingSetup:
    """The Mapping setup page, driven only by the accessible names of its controls.

    Nothing here waits for htmx: its answers never replace a control being used (only
    the failure list, the messages and what a structural change redraws), its requests
    wait for one another, and what it swaps in is wired at once. Each step waits for
    the state it needs instead, such as the rows it added or a list that is no longer
    disabled.
    """

    def __init__(self, page: Page) -> None:
        self.page = page
        self.failures = page.get_by_role("region", name="Validation failures")
        self.next = page.get_by_role("button", name="Next", exact=True)

    def control(self, name: str, nth: int = 0) -> Locator:
        return self.page.get_by_label(name, exact=True).nth(nth)

    async def type(self, control: Locator, text: str) -> None:
        await control.fill(text)

    async def choose(self, control: Locator, value: str) -> None:
        await control.select_option(value)

    async def open(self, console_url: str) -> MappingSetup:
        await self.page.goto(console_url + "/mapping")
        await expect(self.page.get_by_role("heading", name="Mapping setup")).to_be_visible()
        return self

    async def interval(self, seconds: int) -> None:
        await self.choose(self.control("Sync Cadence"), "interval")
        await self.type(self.control("Every (seconds)"), str(seconds))

    async def add_group_mapping(
        self,
        sfdc_object: str,
        group_type: str,
        name_field: str,
        properties: list[tuple[str, str]],
        on_delete: str = "ignore",
    ) -> int:
        """A new section filled in; returns its index."""
        sections = self.page.get_by_test_id("group-mapping")
        m = await sections.count()
        await self.page.get_by_role("button", name="Set up new group mapping").click()
        await expect(sections).to_have_count(m + 1)
        await self.choose(self.control("Salesforce object", m), sfdc_object)
        # The object's fields arrive with its answer: until then the list is disabled.
        name = self.control("Group Name Field", m)
        await expect(name).to_be_enabled()
        await self.choose(name, name_field)
        await self.type(self.control("Amplitude group type", m), group_type)
        for p, (sfdc_field, amplitude_property) in enumerate(properties):
            await self.property_row(m, p, sfdc_field, amplitude_property)
        await self.choose(self.control("On delete", m), on_delete)
        return m

    async def property_row(self, m: int, p: int, sfdc_field: str, amplitude_property: str) -> None:
        """Fill row ``p`` of section ``m``, adding the row first when it is not there yet."""
        section = self.page.get_by_test_id("group-mapping").nth(m)
        rows = section.get_by_label("Salesforce field", exact=True)
        if await rows.count() <= p:
            await section.get_by_role("button", name="Add group property").click()
            await expect(rows).to_have_count(p + 1)
        await self.choose(rows.nth(p), sfdc_field)
        prop = section.get_by_label("Amplitude group property", exact=True).nth(p)
        await self.type(prop, amplitude_property)

    async def no_failures(self) -> None:
        await expect(self.failures).to_contain_text("No validation failures")
        await expect(self.next).to_be_enabled()
