"""Test-only endpoints under ``/__sandbox``: read-back, request log, faults, latency, reset.

They are served at the root and under ``/eu``; the prefix (or ``?region=eu``)
chooses which region's groups are read.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from sfamp_sandbox.amplitude.state import Region, SandboxState, group_listing, parse_fault

DEFAULT_LIST_LIMIT = 1000
MAX_LIST_LIMIT = 100_000


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")


def _limit(request: web.Request) -> int:
    try:
        value = int(request.query.get("limit", DEFAULT_LIST_LIMIT))
    except ValueError as exc:
        raise web.HTTPBadRequest(text="limit must be an integer") from exc
    return max(0, min(value, MAX_LIST_LIMIT))


class Control:
    def __init__(self, state: SandboxState) -> None:
        self.state = state

    def register(self, app: web.Application) -> None:
        regions: tuple[tuple[str, Region], ...] = (("", "us"), ("/eu", "eu"))
        for prefix, region in regions:
            base = prefix + "/__sandbox"
            routes = [
                ("GET", "/groups", self.groups),
                ("GET", "/groups/{group_type}/{group_value}", self.group),
                ("GET", "/groups/{group_type}/{group_value}/history", self.history),
                ("GET", "/requests", self.requests),
                ("GET", "/faults", self.faults),
                ("POST", "/faults", self.add_faults),
                ("DELETE", "/faults", self.clear_faults),
                ("GET", "/latency", self.latency),
                ("POST", "/latency", self.set_latency),
                ("GET", "/blocked", self.blocked),
                ("POST", "/blocked", self.block),
                ("POST", "/reset", self.reset),
            ]
            for method, path, handler in routes:
                app.router.add_route(method, base + path, self._bind(handler, region))
            app.router.add_get(prefix + "/api/2/usersearch", self._bind(self.user_search, region))

    @staticmethod
    def _bind(handler: Any, region: Region) -> Handler:
        async def bound(request: web.Request) -> web.StreamResponse:
            chosen = request.query.get("region", region)
            if chosen not in ("us", "eu"):
                raise web.HTTPBadRequest(text="region must be us or eu")
            response: web.StreamResponse = await handler(request, chosen)
            return response

        return bound

    async def group(self, request: web.Request, region: Region) -> web.Response:
        key = (request.match_info["group_type"], request.match_info["group_value"])
        properties = self.state.store(region).groups.get(key)
        if properties is None:
            return _json(
                {"error": "unknown group", "group_type": key[0], "group_value": key[1]}, 404
            )
        return _json({"group_type": key[0], "group_value": key[1], "properties": properties})

    async def history(self, request: web.Request, region: Region) -> web.Response:
        key = (request.match_info["group_type"], request.match_info["group_value"])
        history = self.state.store(region).history.get(key)
        if history is None:
            return _json(
                {"error": "unknown group", "group_type": key[0], "group_value": key[1]}, 404
            )
        return _json({"group_type": key[0], "group_value": key[1], "history": list(history)})

    async def groups(self, request: web.Request, region: Region) -> web.Response:
        count, shown = group_listing(
            self.state.store(region), request.query.get("group_type"), _limit(request)
        )
        return _json({"count": count, "groups": shown})

    async def requests(self, request: web.Request, region: Region) -> web.Response:
        return _json({"requests": self.state.recent_requests(_limit(request))})

    async def faults(self, request: web.Request, region: Region) -> web.Response:
        return _json({"faults": [fault.as_dict() for fault in self.state.faults]})

    async def add_faults(self, request: web.Request, region: Region) -> web.Response:
        try:
            payload = orjson.loads(await request.read())
            items = payload if isinstance(payload, list) else [payload]
            faults = [parse_fault(item) for item in items]
        except (orjson.JSONDecodeError, ValueError) as exc:
            return _json({"error": str(exc)}, 400)
        for fault in faults:
            self.state.add_fault(fault)
        return _json({"queued": [fault.as_dict() for fault in faults]}, 201)

    async def clear_faults(self, request: web.Request, region: Region) -> web.Response:
        """Forget the queued faults, and nothing else (a reset forgets the groups too)."""
        self.state.faults.clear()
        return _json({"faults": []})

    async def latency(self, request: web.Request, region: Region) -> web.Response:
        return _json(self.state.latency.as_dict())

    async def set_latency(self, request: web.Request, region: Region) -> web.Response:
        """``{"ms": N}``: every API request (not this control API) is answered N ms later."""
        try:
            body = orjson.loads(await request.read())
            if not isinstance(body, dict):
                raise ValueError('body must be a JSON object such as {"ms": 50}')
            self.state.latency.set_from(body)
        except (orjson.JSONDecodeError, ValueError) as exc:
            return _json({"error": str(exc)}, 400)
        return _json(self.state.latency.as_dict())

    async def blocked(self, request: web.Request, region: Region) -> web.Response:
        return _json({"group_values": sorted(self.state.blocked_group_values)})

    async def block(self, request: web.Request, region: Region) -> web.Response:
        """``{"group_values": [...], "blocked": true}``: refuse those groups from now on (as
        an invalid ``groups`` field, 400), or accept them again with ``"blocked": false``."""
        try:
            body = orjson.loads(await request.read())
            values = body.get("group_values") if isinstance(body, dict) else None
            blocked = body.get("blocked", True) if isinstance(body, dict) else None
            if not isinstance(values, list) or not all(
                isinstance(value, str) and value for value in values
            ):
                raise ValueError(
                    'body must be {"group_values": ["..."], "blocked": true} with non-empty strings'
                )
            if not isinstance(blocked, bool):
                raise ValueError("blocked must be true or false")
        except (orjson.JSONDecodeError, ValueError) as exc:
            return _json({"error": str(exc)}, 400)
        if blocked:
            self.state.blocked_group_values.update(values)
        else:
            self.state.blocked_group_values.difference_update(values)
        return await self.blocked(request, region)

    async def reset(self, request: web.Request, region: Region) -> web.Response:
        self.state.reset()
        return _json({"reset": True})

    async def user_search(self, request: web.Request, region: Region) -> web.Response:
        """Dashboard REST user search: the documented way to check an API/secret key pair."""
        pair = _basic_auth(request.headers.get("Authorization", ""))
        if pair is None or not self.state.key_pair_valid(pair[0], pair[1], region):
            return _json({"error": "Invalid API key or secret key"}, 401)
        return _json({"type": "nomatch", "matches": []})


def _basic_auth(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None
