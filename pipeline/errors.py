"""The one error tree of sfamp.

Adapters translate third-party exceptions (httpx, aiokafka, aiocometd, pydantic)
into these classes at the boundary with ``raise ... from exc``, so the runtime
decides what to do by class and by the ``retriable`` flag alone::

    SfampError                      retriable?
    ├── ConfigError                 no   the user must fix something
    │   ├── SettingsError           no   bad SFAMP_* environment / .env
    │   ├── MappingError            no   mapping file missing, not JSON, or invalid
    │   └── ListenError             no   an address to listen on is taken or not this machine's
    ├── SalesforceError             no
    │   ├── SalesforceAuthError     no   OAuth refused (bad client, user, grant)
    │   ├── SessionExpiredError     yes  INVALID_SESSION_ID: re-authenticate and retry
    │   ├── SalesforceRequestError  no   a 4xx with an errorCode (INVALID_FIELD, ...)
    │   │   └── UnreadableFieldsError no  mapped fields the user may not read (field security)
    │   ├── RequestLimitError       no   REQUEST_LIMIT_EXCEEDED: stop until the window resets
    │   ├── SalesforceUnavailableError yes  5xx, timeouts, connection errors
    │   └── ReplayIdExpiredError    no   replay id outside retention: re-sync the object
    ├── KafkaError                  no
    │   ├── KafkaUnavailableError   yes  broker unreachable or request timed out
    │   └── TopicConfigError        no   an existing topic is configured to lose data
    ├── EnvelopeError               no   a Kafka message that is not a valid change envelope
    └── AmplitudeError              no
        ├── AmplitudeAuthError      no   invalid API key: stop the flush loudly
        ├── AmplitudeUnavailableError yes  429, 5xx, timeouts past the retry deadline
        └── AmplitudeRejectedError  no   a 400 for one identification: goes to the DLQ

``retriable`` means "the same call may succeed later without anyone changing
anything"; it never means "safe to drop".
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.wording import plural

if TYPE_CHECKING:  # for the annotation only: every module imports this one
    from pipeline.amplitude.report import DeliveryReport


class SfampError(Exception):
    """Base of every error sfamp raises on purpose."""

    retriable: bool = False
    alert: bool = True  # whether a failure it causes is counted and logged as an error


class ConfigError(SfampError):
    """Something the user has to fix in settings or the mapping."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a config, at a JSON path or a setting name."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class SettingsError(ConfigError):
    """The SFAMP_* settings are invalid; carries every problem at once."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"invalid settings ({plural(len(self.problems), 'problem')}):\n{lines}")


class MappingError(ConfigError):
    """The mapping cannot be used; ``problems`` is empty for unreadable files."""

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        self.problems = list(problems)
        super().__init__(message)


class ListenError(ConfigError):
    """An address sfamp should listen on cannot be opened; the message names what changes
    it: ``change`` (the port option) when the port is taken or not allowed,
    ``change_host`` when the host is the problem (not an address of this machine, or a
    name that does not resolve)."""

    def __init__(
        self,
        what: str,
        host: str,
        port: int,
        cause: OSError,
        change: str,
        *,
        change_host: str = "choose another address to listen on",
    ) -> None:
        self.host = host
        self.port = port
        self.host_is_the_problem = host_refused(cause)
        fix = change_host if self.host_is_the_problem else change
        super().__init__(
            f"cannot listen on {host}:{port} for the {what}: {listen_reason(cause)}; {fix}"
        )


# Errors that say the host is wrong, whatever the port: an address this machine does not
# have (EADDRNOTAVAIL), one of a family it cannot use, or a name that does not resolve.
_HOST_ERRNOS = frozenset({errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT})


def host_refused(cause: OSError) -> bool:
    """Whether binding failed because of the host rather than the port (EADDRINUSE, EACCES)."""
    return isinstance(cause, socket.gaierror) or cause.errno in _HOST_ERRNOS


def listen_reason(cause: OSError) -> str:
    """Why a bind failed, in words: "address already in use", "cannot assign requested
    address" (the host), "the host name does not resolve"."""
    if isinstance(cause, socket.gaierror):
        return "the host name does not resolve"
    return os.strerror(cause.errno).lower() if cause.errno else str(cause)


class SalesforceError(SfampError):
    """Salesforce refused or failed a call."""

    def __init__(self, message: str, *, error_code: str | None = None) -> None:
        self.error_code = error_code
        super().__init__(message)


class SalesforceAuthError(SalesforceError):
    """OAuth refused the credentials (invalid_grant, invalid_client_id, ...)."""


class SessionExpiredError(SalesforceError):
    """The access token expired or was revoked; log in again and retry."""

    retriable = True


class SalesforceRequestError(SalesforceError):
    """Salesforce answered 4xx with an error code; retrying will not help."""


class UnreadableFieldsError(SalesforceRequestError):
    """Describe omits mapped fields: the API user may not read them, or they are gone.

    A read without them would pass for a whole record and say nothing of them, so
    reads that must be whole (re-syncs) refuse instead, until someone grants access.
    """

    def __init__(self, sfdc_object: str, fields: Sequence[str]) -> None:
        self.sfdc_object = sfdc_object
        self.fields = list(fields)
        names = ", ".join(f"{sfdc_object}.{name}" for name in self.fields)
        super().__init__(
            f"cannot read {names}: the Salesforce user lacks field-level security read "
            "access (or the field no longer exists); grant Read Access in its profile or a "
            "permission set, or remove the field from the mapping",
            error_code="INVALID_FIELD",
        )


class RequestLimitError(SalesforceError):
    """The org's API request limit is used up (REQUEST_LIMIT_EXCEEDED)."""


class SalesforceUnavailableError(SalesforceError):
    """Salesforce answered 5xx, timed out, or could not be reached."""

    retriable = True


class ReplayIdExpiredError(SalesforceError):
    """The stored replay id is older than the org retains: re-sync the object."""

    def __init__(self, message: str, *, channel: str, replay_id: int | None) -> None:
        self.channel = channel
        self.replay_id = replay_id
        super().__init__(message)


class KafkaError(SfampError):
    """Kafka refused or failed an operation."""


class KafkaUnavailableError(KafkaError):
    """The Kafka cluster could not be reached in time."""

    retriable = True


class TopicConfigError(KafkaError):
    """Existing topics are configured so that they would lose data; ``problems`` says how
    to fix each one."""

    def __init__(self, message: str, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__(message)


class EnvelopeError(SfampError):
    """A Kafka message is not a valid change envelope; it goes to the DLQ."""


class AmplitudeError(SfampError):
    """Amplitude refused or failed a call.

    ``attempts`` is what the failed send did before it gave up (an
    :class:`~pipeline.amplitude.report.DeliveryReport`: requests, retries, bytes), when
    the client knows it: a summary counts those too.
    """

    attempts: DeliveryReport | None = None


class AmplitudeAuthError(AmplitudeError):
    """Amplitude says the API key is invalid; nothing can be delivered."""


class AmplitudeUnavailableError(AmplitudeError):
    """Amplitude kept answering 429/5xx or timing out until the retry deadline."""

    retriable = True


class RetryEndedByStopError(AmplitudeUnavailableError):
    """The service stopped while a send waited to retry Amplitude: nothing to alert on."""

    alert = False


class AmplitudeRejectedError(AmplitudeError):
    """Amplitude rejected one identification with a 400; it goes to the DLQ."""
