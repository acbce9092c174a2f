"""The REST API adapter: describe, SOQL query with paging, retrieve by ids, identity, limits.

Every call goes through :meth:`SalesforceRest.request`, which is where the
Salesforce rules are applied once:

- a 401 / ``INVALID_SESSION_ID`` logs in again (single-flight) and retries once;
- ``REQUEST_LIMIT_EXCEEDED`` raises :class:`RequestLimitError` (waiting does not
  help for hours, so it is not retried here);
- another 4xx with an ``errorCode`` raises :class:`SalesforceRequestError`;
- 5xx, 429, timeouts and connection errors are retried a bounded number of
  times with exponential backoff and jitter, then raise
  :class:`SalesforceUnavailableError`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final
from urllib.parse import quote

import httpx
import structlog

from pipeline.backoff import exponential_delay
from pipeline.errors import (
    RequestLimitError,
    SalesforceError,
    SalesforceRequestError,
    SalesforceUnavailableError,
    SessionExpiredError,
)
from pipeline.http_failures import describe_transport_failure
from pipeline.salesforce.auth import SalesforceAuth, SalesforceToken
from pipeline.salesforce.text import read_json

# sObject Collections retrieve accepts at most this many ids per POST.
RETRIEVE_CHUNK: Final = 2000
DEFAULT_ATTEMPTS: Final = 4
BACKOFF_BASE_SECONDS: Final = 0.5
BACKOFF_CAP_SECONDS: Final = 8.0
CALL_OPTIONS: Final = "client=sfamp"
_CHECKSUM_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"

Sleep = Callable[[float], Awaitable[None]]
log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class QueryPage:
    """One page of a SOQL answer, records without ``attributes``."""

    records: list[dict[str, Any]]
    total_size: int
    done: bool


class SalesforceRest:
    """Authenticated REST calls against ``instance_url``; counts them in ``api_calls``."""

    def __init__(
        self,
        auth: SalesforceAuth,
        http: httpx.AsyncClient,
        *,
        api_version: str,
        max_attempts: int = DEFAULT_ATTEMPTS,
        sleep: Sleep = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        query_batch_size: int | None = None,
    ) -> None:
        self.auth = auth
        self.api_version = api_version
        self.api_calls = 0
        self._http = http
        self._max_attempts = max(1, max_attempts)
        self._sleep = sleep
        self._jitter = jitter
        self._batch_size = query_batch_size

    @property
    def data_path(self) -> str:
        """``/services/data/v62.0``: the root that relative paths are resolved against."""
        return f"/services/data/{self.api_version}"

    # -- resources ------------------------------------------------------------------------

    async def describe(self, sfdc_object: str) -> dict[str, Any]:
        return await self._get_json(f"sobjects/{_name(sfdc_object)}/describe/")

    async def describe_global(self) -> dict[str, Any]:
        return await self._get_json("sobjects/")

    async def userinfo(self) -> dict[str, Any]:
        """The connected user (``email``, ``preferred_username``, ``organization_id``, ...)."""
        return await self._get_json("/services/oauth2/userinfo")

    async def limits(self) -> dict[str, Any]:
        return await self._get_json("limits/")

    async def server_time(self) -> datetime | None:
        """Salesforce's clock, to whole seconds: the ``Date`` header of a light call.

        Windows over ``SystemModstamp`` are measured on this clock, never the local
        one. ``None`` when the answer carries no usable ``Date``.
        """
        response = await self.request("GET", "")
        try:
            moment = parsedate_to_datetime(response.headers.get("Date", ""))
        except (TypeError, ValueError):
            return None
        # HTTP dates are GMT; a "-0000" zone parses as naive.
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)

    def query(self, soql: str, *, all_rows: bool = False) -> AsyncIterator[dict[str, Any]]:
        """Every record of ``soql``, following ``nextRecordsUrl``; ``all_rows`` uses queryAll."""
        return self._records(soql, all_rows)

    async def _records(self, soql: str, all_rows: bool) -> AsyncIterator[dict[str, Any]]:
        async for page in self.query_pages(soql, all_rows=all_rows):
            for record in page.records:
                yield record

    async def query_pages(self, soql: str, *, all_rows: bool = False) -> AsyncIterator[QueryPage]:
        """The answer page by page (up to 2000 records each), with the total size."""
        endpoint = "queryAll/" if all_rows else "query/"
        headers = {"Sforce-Query-Options": f"batchSize={self._batch_size}"}
        body = await self._get_json(
            endpoint, params={"q": soql}, headers=headers if self._batch_size else None
        )
        while True:
            page = _page(body)
            yield page
            next_url = body.get("nextRecordsUrl")
            if page.done or not isinstance(next_url, str):
                return
            body = await self._get_json(next_url)

    async def retrieve(
        self, sfdc_object: str, ids: Sequence[str], fields: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        """Current records by id, in POSTs of up to 2000 ids; deleted or unknown ids are absent.

        The answer is keyed by the 18-character id and also by the spelling the
        caller used (a 15-character id finds its record under both). Ids that
        cannot be Salesforce ids are absent too.
        """
        wanted: dict[str, list[str]] = {}
        for record_id in ids:
            full = normalise_id(record_id)
            if full is not None:
                wanted.setdefault(full, []).append(record_id)
        names = list(dict.fromkeys(["Id", *fields]))
        order = list(wanted)
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(order), RETRIEVE_CHUNK):
            chunk = order[start : start + RETRIEVE_CHUNK]
            answer = await self._post_json(
                f"composite/sobjects/{_name(sfdc_object)}", {"ids": chunk, "fields": names}
            )
            for full, record in zip(chunk, answer, strict=False):
                if isinstance(record, dict):
                    cleaned = strip_attributes(record)
                    for key in (full, *wanted[full]):
                        found[key] = cleaned
        return found

    # -- the one way out --------------------------------------------------------------------

    async def request(self, method: str, path_or_url: str, **kwargs: Any) -> httpx.Response:
        """An authenticated call, with re-login, error translation and bounded retries.

        ``path_or_url`` is a full URL, a host path (``/services/...``) or a path
        under the versioned data root (``jobs/query``, ``/sobjects/Account``).
        ``kwargs`` go to :meth:`httpx.AsyncClient.request`; caller headers win
        (``Accept: text/csv`` for Bulk results).

        A POST whose answer was lost to a timeout is sent again: fine for sfamp's
        reads and query jobs, not for a write that must happen exactly once.
        """
        for attempt in range(self._max_attempts):
            try:
                return await self._authenticated(method, path_or_url, kwargs)
            except SalesforceUnavailableError as exc:
                if attempt + 1 >= self._max_attempts:
                    raise
                delay = exponential_delay(
                    attempt, self._jitter(), first=BACKOFF_BASE_SECONDS, ceiling=BACKOFF_CAP_SECONDS
                )
                # ``call`` is what is retried; ``error`` names what failed (a token POST
                # under a GET, say).
                call = f"{method} {_short(path_or_url)}"
                log.warning("salesforce_retry", call=call, error=str(exc), delay=delay)
                await self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _authenticated(
        self, method: str, path_or_url: str, kwargs: dict[str, Any]
    ) -> httpx.Response:
        token = await self.auth.token()
        response = await self._send(token, method, path_or_url, kwargs)
        if _session_expired(response):
            log.info("salesforce_session_expired", instance_url=token.instance_url)
            token = await self.auth.refresh(token)
            response = await self._send(token, method, path_or_url, kwargs)
            if _session_expired(response):
                raise SessionExpiredError(
                    "Salesforce refused a fresh session (INVALID_SESSION_ID)",
                    error_code="INVALID_SESSION_ID",
                )
        return _checked(method, path_or_url, response)

    async def _send(
        self, token: SalesforceToken, method: str, path_or_url: str, kwargs: dict[str, Any]
    ) -> httpx.Response:
        url = self._url(token, path_or_url)
        headers = {
            "Authorization": f"Bearer {token.access_token}",
            "Accept": "application/json",
            "Sforce-Call-Options": CALL_OPTIONS,
            **(kwargs.get("headers") or {}),
        }
        options = {k: v for k, v in kwargs.items() if k != "headers"}
        self.api_calls += 1
        try:
            return await self._http.request(method, url, headers=headers, **options)
        except httpx.TimeoutException as exc:
            raise SalesforceUnavailableError(
                f"{method} {_short(url)} timed out ({describe_transport_failure(exc)})"
            ) from exc
        except httpx.TransportError as exc:
            raise SalesforceUnavailableError(
                f"{method} {_short(url)} failed: {describe_transport_failure(exc)}"
            ) from exc

    def _url(self, token: SalesforceToken, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        if path_or_url.startswith("/services/"):
            return token.instance_url + path_or_url
        return f"{token.instance_url}{self.data_path}/{path_or_url.lstrip('/')}"

    async def _get_json(self, path: str, **kwargs: Any) -> dict[str, Any]:
        body = _json(await self.request("GET", path, **kwargs))
        if not isinstance(body, dict):
            raise SalesforceError(f"GET {_short(path)}: expected a JSON object")
        return body

    async def _post_json(self, path: str, payload: Any) -> list[Any]:
        body = _json(await self.request("POST", path, json=payload))
        if not isinstance(body, list):
            raise SalesforceError(f"POST {_short(path)}: expected a JSON array")
        return body


def strip_attributes(record: dict[str, Any]) -> dict[str, Any]:
    """The record without ``attributes``, also inside parent records (``Owner.Name``)."""
    return {
        key: strip_attributes(value) if isinstance(value, dict) and "attributes" in value else value
        for key, value in record.items()
        if key != "attributes"
    }


def normalise_id(record_id: str) -> str | None:
    """The 18-character form of a 15- or 18-character record id; ``None`` for anything else.

    15-character ids are case-sensitive; the three extra characters encode which
    of the 15 are upper case, so the 18-character form is safe to compare
    case-insensitively and is what the APIs answer with.
    """
    if not record_id.isascii() or not record_id.isalnum():
        return None
    if len(record_id) == 18:
        return record_id[:15] + record_id[15:].upper()
    if len(record_id) != 15:
        return None
    suffix = ""
    for start in (0, 5, 10):
        bits = sum(1 << i for i, ch in enumerate(record_id[start : start + 5]) if ch.isupper())
        suffix += _CHECKSUM_ALPHABET[bits]
    return record_id + suffix


def _page(body: dict[str, Any]) -> QueryPage:
    records = body.get("records")
    if not isinstance(records, list):
        raise SalesforceError("query answer has no 'records' list")
    return QueryPage(
        records=[strip_attributes(r) for r in records if isinstance(r, dict)],
        total_size=int(body.get("totalSize") or 0),
        done=bool(body.get("done", True)),
    )


def _name(sfdc_object: str) -> str:
    return quote(sfdc_object, safe="")


def _short(url: str) -> str:
    """A URL for messages: no query string (it may hold a whole SOQL statement)."""
    return url.split("?", 1)[0]


def _json(response: httpx.Response) -> Any:
    try:
        return read_json(response.content)
    except ValueError as exc:
        raise SalesforceError(
            f"Salesforce answered {response.status_code} with non-JSON content"
        ) from exc


def _first_error(response: httpx.Response) -> tuple[str | None, str]:
    """``errorCode`` and message of a REST error body (a JSON array, sometimes an object)."""
    try:
        body = response.json()
    except ValueError:
        return None, response.text[:200].strip() or response.reason_phrase
    entry = body[0] if isinstance(body, list) and body else body
    if not isinstance(entry, dict):
        return None, str(body)[:200]
    code = entry.get("errorCode") or entry.get("error")
    message = entry.get("message") or entry.get("error_description") or ""
    return (str(code) if code else None), one_line(str(message))


def one_line(message: str) -> str:
    """Salesforce's multi-line messages (a SOQL caret display) as one readable line."""
    lines = [line.strip() for line in message.splitlines()]
    return " ".join(line for line in lines if line.strip("^ "))


def _session_expired(response: httpx.Response) -> bool:
    if response.status_code == 401:
        return True
    return response.status_code == 403 and _first_error(response)[0] == "INVALID_SESSION_ID"


def _checked(method: str, path: str, response: httpx.Response) -> httpx.Response:
    status = response.status_code
    if status < 400:
        return response
    code, message = _first_error(response)
    where = f"{method} {_short(path)}"
    if status >= 500 or status == 429:
        raise SalesforceUnavailableError(
            f"Salesforce answered {status} to {where}: {code or ''} {message}".rstrip(),
            error_code=code,
        )
    if code == "REQUEST_LIMIT_EXCEEDED":
        raise RequestLimitError(f"Salesforce API request limit reached: {message}", error_code=code)
    raise SalesforceRequestError(f"{code or status}: {message}", error_code=code)
