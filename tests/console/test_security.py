"""The console's security: loopback by default, the token, CSRF, CSP, no secret in any page."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from pipeline.config.settings import Settings
from pipeline.console.security import CONTENT_SECURITY_POLICY, is_loopback, local_path, redactor
from pipeline.sandbox_stack import SandboxStack
from tests.console.conftest import (
    console_client,
    console_process,
    csrf_of,
    sfamp_env,
    sfamp_in_process,
)

Client = TestClient[Any, Any]
TOKEN = "console-token-for-the-tests"
SECRET_KEY = "amplitude-secret-key-for-the-tests"
FORM = {"cadence_mode": "hourly"}


def with_token(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "console": settings.console.model_copy(update={"token": SecretStr(TOKEN)}),
            "amplitude": settings.amplitude.model_copy(
                update={"secret_key": SecretStr(SECRET_KEY)}
            ),
        }
    )


async def test_every_response_carries_the_content_security_policy(client: Client) -> None:
    csrf = await csrf_of(client)
    responses = [
        await client.get("/"),
        await client.get("/mapping"),
        await client.get("/static/htmx.min.js"),
        await client.get("/static/console.js"),
        await client.get("/no-such-page"),
        await client.post("/mapping/validate", data=FORM),  # 403: no CSRF token
        await client.post("/mapping/validate", data={"csrf_token": csrf, **FORM}),
    ]
    assert [r.status for r in responses] == [200, 200, 200, 200, 404, 403, 200]
    for response in responses:
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "script-src 'self';" in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY


async def test_an_address_no_page_serves_answers_a_page_that_says_where_to_go(
    client: Client,
) -> None:
    missing = await client.get("/mapings")
    html = await missing.text()
    assert missing.status == 404
    assert "<h1>Not found</h1>" in html
    assert "The console has no page at <code>/mapings</code>" in html
    assert '<a href="/mapping"' in html  # the navigation, to go on from
    # A handler's own 404 keeps its one line (an export with nothing published yet).
    nothing = await client.get("/mapping/export")
    assert (nothing.status, await nothing.text()) == (404, "no mapping is published yet\n")


async def test_pages_have_no_inline_script_or_handler(client: Client) -> None:
    for path in ("/", "/mapping", "/status", "/dead-letters"):
        html = await (await client.get(path)).text()
        assert "<script>" not in html
        assert " on" + "click=" not in html
        assert "hx-on" not in html
        assert "style=" not in html
        assert '"includeIndicatorStyles": false' in html


async def test_a_post_needs_the_sessions_csrf_token(client: Client, settings: Settings) -> None:
    csrf = await csrf_of(client)
    missing = await client.post("/mapping/validate", data=FORM)
    assert missing.status == 403
    assert (await missing.text()) == (
        "forbidden: missing or wrong CSRF token; reload the page and try again\n"
    )
    async with console_client(settings) as other:  # another browser's token
        foreign = await csrf_of(other)
    assert (
        await client.post("/mapping/validate", data={"csrf_token": foreign, **FORM})
    ).status == 403
    by_header = await client.post("/mapping/validate", data=FORM, headers={"X-CSRF-Token": csrf})
    assert by_header.status == 200
    by_field = await client.post("/mapping/validate", data={"csrf_token": csrf, **FORM})
    assert by_field.status == 200


async def test_with_a_token_everything_waits_for_sign_in(settings: Settings) -> None:
    async with console_client(with_token(settings)) as client:
        home = await client.get("/", allow_redirects=False)
        assert (home.status, home.headers["Location"]) == (303, "/login?next=/")
        refused = await client.post("/mapping/validate", data=FORM)
        assert refused.status == 403
        assert "sign in first" in await refused.text()

        csrf = await csrf_of(client, "/login")
        wrong = await client.post("/login", data={"csrf_token": csrf, "token": "guess"})
        assert wrong.status == 403
        assert "That is not the console token." in await wrong.text()
        no_csrf = await client.post("/login", data={"token": TOKEN})
        assert no_csrf.status == 403

        signed = await client.post(
            "/login",
            data={"csrf_token": csrf, "token": TOKEN, "next": "/mapping"},
            allow_redirects=False,
        )
        assert (signed.status, signed.headers["Location"]) == (303, "/mapping")
        cookie = signed.headers["Set-Cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Lax" in cookie  # Salesforce's redirect back arrives signed in
        assert TOKEN not in cookie

        assert (await client.get("/")).status == 200
        csrf = await csrf_of(client)  # a new session: the token of before sign-in is void
        assert (await client.post("/mapping/validate", data=FORM)).status == 403
        ok = await client.post("/mapping/validate", data={"csrf_token": csrf, **FORM})
        assert ok.status == 200


async def test_no_secret_reaches_any_page(settings: Settings) -> None:
    configured = with_token(settings)
    secrets = [TOKEN, SECRET_KEY, "sandbox-secret", "sandbox-api-key"]
    # The sandbox's password, "sandbox", is also part of its user name: it cannot be
    # searched for; no page reads settings.salesforce.password in the first place.
    async with console_client(configured) as client:
        csrf = await csrf_of(client, "/login")
        await client.post("/login", data={"csrf_token": csrf, "token": TOKEN})
        csrf = await csrf_of(client)
        form = {
            "csrf_token": csrf,
            "cadence_mode": "hourly",
            "m0.sfdc_object": "Account",
            "m0.group_type": "account",
            "m0.group_name_field": "Id",
            "m0.p0.sfdc_field": "Name",
            "m0.p0.amplitude_property": "name",
        }
        pages = [
            await client.get(path)
            for path in ("/", "/login", "/mapping", "/status", "/status/live", "/dead-letters")
        ]
        pages += [await client.get("/static/" + name) for name in ("console.js", "console.css")]
        pages.append(await client.post("/mapping/validate", data=form))
        pages.append(await client.post("/mapping/form", data={**form, "action": "add_mapping"}))
        verification = await client.post("/mapping/verify", data=form)
        pages.append(verification)
        html = await verification.text()
        start = html.index('name="mapping" value="') + len('name="mapping" value="')
        mapping = html[start : html.index('"', start)].replace("&#34;", '"')
        pages.append(
            await client.post("/mapping/save", data={"csrf_token": csrf, "mapping": mapping})
        )
        pages.append(await client.get("/mapping/export"))
        texts = [(str(page.url), page.status, await page.text()) for page in pages]
    assert all(status == 200 for _, status, _ in texts), [(u, s) for u, s, _ in texts]
    for url, _, text in texts:
        for secret in secrets:
            assert secret not in text, f"{url} shows a secret"


def test_the_redactor_masks_a_secret_in_any_rendered_value() -> None:
    finalize = redactor(["a-long-secret-value", "short"])
    assert finalize("refused a-long-secret-value here") == "refused *** here"
    assert finalize("short words stay") == "short words stay"
    assert finalize(None) == ""
    assert finalize(3) == 3


async def test_imported_text_is_escaped(client: Client) -> None:
    csrf = await csrf_of(client)
    document = {
        "sync_cadence": {"mode": "hourly"},
        "mappings": [{"group_type": "<script>x</script>"}],
    }
    form = aiohttp.FormData({"csrf_token": csrf})
    form.add_field("file", json.dumps(document).encode(), filename="m.json")
    html = await (await client.post("/mapping/import", data=form)).text()
    assert "<script>x</script>" not in html
    assert "&lt;script&gt;x&lt;/script&gt;" in html


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("localhost", True), ("::1", True), ("127.0.0.2", True),
     ("0.0.0.0", False), ("192.168.1.5", False), ("::", False), ("console.example", False)],
)  # fmt: skip
def test_which_hosts_are_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


async def test_a_non_loopback_host_without_a_token_refuses_to_start(
    stack: SandboxStack, topic_prefix: str
) -> None:
    env = sfamp_env(stack, topic_prefix, SFAMP_RUNTIME__LOG_FORMAT="json")
    result = await sfamp_in_process(env, "console", "--host", "0.0.0.0", "--port", "1")
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2
    assert len(lines) == 1, lines
    assert "0.0.0.0, which is not a loopback address: set SFAMP_CONSOLE__TOKEN" in lines[0]
    assert result.stdout == ""


async def test_an_address_this_machine_lacks_names_the_host_option(
    stack: SandboxStack, topic_prefix: str
) -> None:
    env = sfamp_env(stack, topic_prefix, SFAMP_CONSOLE__TOKEN=TOKEN)
    # 192.0.2.1 is TEST-NET-1 (RFC 5737): never an address of this machine.
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline", "console", "--host", "192.0.2.1", "--port", "8430",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    lines = stderr.decode().strip().splitlines()
    assert process.returncode == 1
    assert len(lines) == 1, lines
    assert "choose another address with --host (or SFAMP_CONSOLE__HOST)" in lines[0]


async def test_the_console_process_serves_on_loopback(
    stack: SandboxStack, topic_prefix: str
) -> None:
    async with console_process(sfamp_env(stack, topic_prefix)) as (url, process):
        assert url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient() as http:
            response = await http.get(url + "/mapping")
        assert response.status_code == 200
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert 'aria-label="Validation failures"' in response.text
    assert process.returncode == 0


async def test_without_a_token_only_loopback_names_are_answered(client: Client) -> None:
    # A rebinding site's name resolves to 127.0.0.1 but its requests carry that name.
    rebound = await client.get("/", headers={"Host": "attacker.example:8430"})
    assert rebound.status == 403
    assert "answers only to localhost" in await rebound.text()
    assert (await client.get("/", headers={"Host": "localhost:8430"})).status == 200


async def test_a_post_from_another_origin_is_refused(client: Client) -> None:
    csrf = await csrf_of(client)
    data = {"csrf_token": csrf, **FORM}
    foreign = await client.post(
        "/mapping/validate", data=data, headers={"Origin": "http://evil.example"}
    )
    assert foreign.status == 403
    assert "cannot change this console" in await foreign.text()
    own = f"http://{client.server.host}:{client.server.port}"
    assert (
        await client.post("/mapping/validate", data=data, headers={"Origin": own})
    ).status == 200


@pytest.mark.parametrize(
    "target",
    ["//evil.example", "/\\evil.example", "/\t/evil.example", "/\n/evil.example",
     "https://evil.example/", "/%09/evil.example", "", None],
)  # fmt: skip
def test_sign_in_returns_only_to_a_path_of_the_console(target: str | None) -> None:
    assert local_path(target) in ("/", target)
    if target is not None and target != "/%09/evil.example":
        assert local_path(target) == "/"


async def test_sign_in_never_redirects_to_another_site(settings: Settings) -> None:
    # /login?next=/%09/evil.example puts a tab in the form; browsers drop it from URLs.
    async with console_client(with_token(settings)) as client:
        for target in ("/\t/evil.example", "/\n/evil.example", "//evil.example", "/\\x.example"):
            assert (await client.get("/login", params={"next": target})).status == 200
            signed = await client.post(
                "/login",
                data={"csrf_token": await csrf_of(client), "token": TOKEN, "next": target},
                allow_redirects=False,
            )
            assert (signed.status, signed.headers["Location"]) == (303, "/"), repr(target)
