"""structlog configuration, done once by the CLI.

Console output on a TTY, JSON lines otherwise, always on stderr (stdout is for
tables and ``--json`` output). Secrets never reach a log line: values of keys
that look like credentials are replaced before rendering.

Third-party libraries (aiokafka, aiocometd, aiosfstream, httpx, aiohttp ...)
log through the standard library. Their records go through the same renderer,
so a JSON log stream stays JSON, and through :class:`LibraryLogFilter`:

* the same logger and message template is let through at most once per
  ``rate_limit_seconds``; the next one that passes carries ``suppressed``, the
  number dropped meanwhile. A client that logs every reconnect attempt during
  an outage gives one line per window, not thousands;
* records of conditions sfamp expects and reports in its own words are dropped
  (:data:`EXPECTED`);
* a traceback becomes a one-line ``error`` field.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, MutableMapping
from typing import Any, Final, Literal

import structlog

_SECRET_HINTS = ("password", "secret", "token", "api_key", "authorization", "assertion")
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
RATE_LIMIT_SECONDS: Final = 60.0
# Libraries are heard from at WARNING and above; their INFO is per-connection chatter.
LIBRARY_LEVEL: Final = logging.WARNING

# (logger, message template) of library records about conditions sfamp expects and
# reports itself. Tansu and some other Kafka-compatible brokers refuse idempotent
# producers; ChangeProducer falls back to acks=all and says so (see kafka/producer.py).
EXPECTED: Final[frozenset[tuple[str, str]]] = frozenset(
    {("aiokafka.producer.sender", "Unexpected error during InitProducerIdRequest: %s")}
)


def redact_secrets(
    _logger: object, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Processor: hide the value of any key that names a credential."""
    for key in event:
        if any(hint in key.lower() for hint in _SECRET_HINTS):
            event[key] = "***"
    return event


def configure_logging(
    log_format: Literal["auto", "console", "json"] = "auto",
    level: str = "info",
    *,
    rate_limit_seconds: float = RATE_LIMIT_SECONDS,
) -> None:
    """Configure structlog and the standard library for the whole process; logs go to stderr."""
    use_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    threshold = _LEVELS.get(level, logging.INFO)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.format_exc_info if use_json else _passthrough,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    _route_library_logs(renderer, max(threshold, LIBRARY_LEVEL), rate_limit_seconds)
    # A library's warnings (a coroutine never awaited, a deprecation) are log lines too,
    # so a JSON stream stays JSON: the warnings module wrote them raw, over lines.
    logging.captureWarnings(True)


def _route_library_logs(
    renderer: structlog.typing.Processor, level: int, rate_limit_seconds: float
) -> None:
    handler = logging.StreamHandler(_CurrentStderr())
    handler.set_name("sfamp")
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.stdlib.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.stdlib.ExtraAdder(allow=("suppressed",)),
                _error_in_one_line,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                redact_secrets,
                renderer,
            ],
        )
    )
    handler.addFilter(LibraryLogFilter(rate_limit_seconds))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "sfamp"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


class LibraryLogFilter(logging.Filter):
    """Drops expected records and repeats of one logger + template within a window."""

    def __init__(
        self, window_seconds: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.window_seconds = window_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], float] = {}
        self._dropped: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        if key in EXPECTED:
            return False
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.window_seconds:
                self._dropped[key] = self._dropped.get(key, 0) + 1
                return False
            self._last[key] = now
            dropped = self._dropped.pop(key, 0)
        if dropped:
            record.suppressed = dropped
        return True


def _error_in_one_line(
    _logger: object, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A library's traceback is noise in a log stream: keep the exception's type and text."""
    exc_info = event.pop("exc_info", None)
    exc = exc_info[1] if isinstance(exc_info, tuple) else None
    if exc is not None:
        event["error"] = (f"{type(exc).__name__}: {exc}".splitlines() or [""])[0]
    event.pop("stack_info", None)
    return event


class _CurrentStderr:
    """Whatever ``sys.stderr`` is at write time (test runners and redirections swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _passthrough(
    _logger: object, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    return event
