"""A local Salesforce org that speaks the real APIs sfamp uses.

OAuth (password, refresh token, client credentials, JWT bearer, and the web server flow with
PKCE behind a login page at ``/services/oauth2/authorize``), REST (describe, SOQL query
with paging, sObject CRUD, collections retrieve, limits), Bulk API 2.0 query jobs, Change
Data Capture over CometD, and a control API under ``/__sandbox`` for seeding, the clock,
faults and injected events. See :class:`SalesforceSandbox` (in-process) and :func:`serve`.
"""

from __future__ import annotations

from sfamp_sandbox.salesforce.oauth import Credentials
from sfamp_sandbox.salesforce.server import (
    API_VERSION,
    DEFAULT_HOST,
    DEFAULT_PORT,
    SalesforceSandbox,
    serve,
)

__all__ = [
    "API_VERSION",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "Credentials",
    "SalesforceSandbox",
    "serve",
]
