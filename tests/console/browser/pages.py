"""What the browser tests watch on a page besides its content."""

from __future__ import annotations

from dataclasses import dataclass, field

from playwright.async_api import ConsoleMessage, Error, Page


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
