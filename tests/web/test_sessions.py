"""Signing in and out of the workspace: passwords, session cookies, CSRF tokens, redirects."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select, update

from allo.accounts import service as accounts
from allo.accounts.models import WebSession
from allo.db.engine import Database
from allo.web.auth import SESSION_COOKIE
from tests.conftest import Tenant

PASSWORD = "correct horse battery"


async def make_agent(
    db: Database, tenant: Tenant, email: str = "ana@brand.test", language: str = "en"
) -> int:
    async with db.transaction() as session:
        user = await accounts.create_user(
            session, tenant.account_id, email, "Ana Agent", "agent", PASSWORD
        )
        user.language = language
        return user.id


async def sign_in(client: httpx.AsyncClient, email: str = "ana@brand.test") -> str:
    """Signs the client in; the page's CSRF token."""
    answer = await client.post("/login", data={"email": email, "password": PASSWORD})
    assert answer.status_code == 303, answer.text
    page = await client.get("/inbox")
    assert page.status_code == 200
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


async def test_pages_send_a_stranger_to_sign_in_and_back_where_they_were_going(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    await make_agent(db, tenant)
    answer = await client.get("/inbox?view=unassigned&q=colis+perdu")
    assert answer.status_code == 303
    assert (
        answer.headers["location"] == "/login?next=/inbox%3Fview%3Dunassigned%26q%3Dcolis%2Bperdu"
    )
    form = await client.get(answer.headers["location"])
    assert 'name="next" value="/inbox?view=unassigned&amp;q=colis+perdu"' in form.text

    signed = await client.post(
        "/login",
        data={
            "email": "ANA@brand.test ",
            "password": PASSWORD,
            "next": "/inbox?view=unassigned&q=colis+perdu",
        },
    )
    assert signed.status_code == 303
    assert signed.headers["location"] == "/inbox?view=unassigned&q=colis+perdu"
    cookie = signed.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert (await client.get("/inbox?view=unassigned")).status_code == 200


async def test_a_wrong_password_or_unknown_email_is_refused_alike_and_opens_nothing(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    await make_agent(db, tenant)
    wrong = await client.post("/login", data={"email": "ana@brand.test", "password": "nope-nope"})
    unknown = await client.post("/login", data={"email": "who@brand.test", "password": PASSWORD})
    empty = await client.post("/login", data={})
    for answer in (wrong, unknown, empty):
        assert answer.status_code == 401
        assert "Wrong email or password." in answer.text
        assert "set-cookie" not in answer.headers
    async with db.sessions() as session:
        assert list(await session.scalars(select(WebSession))) == []


async def test_signing_in_never_redirects_to_another_site(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    await make_agent(db, tenant)
    for target in ("https://evil.test/", "//evil.test/x", "/\\evil.test", "javascript:alert(1)"):
        answer = await client.post(
            "/login", data={"email": "ana@brand.test", "password": PASSWORD, "next": target}
        )
        assert answer.headers["location"] == "/inbox", target


async def test_a_change_without_the_sessions_csrf_token_is_refused(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    await make_agent(db, tenant)
    token = await sign_in(client)
    missing = await client.post("/logout")
    forged = await client.post("/logout", data={"csrf_token": "x" * len(token)})
    assert missing.status_code == forged.status_code == 403
    assert (await client.get("/inbox")).status_code == 200  # still signed in
    by_header = await client.post("/logout", headers={"X-CSRF-Token": token})
    assert by_header.status_code == 303


async def test_signing_out_ends_the_session_for_good(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    await make_agent(db, tenant)
    token = await sign_in(client)
    cookie = client.cookies[SESSION_COOKIE]
    answer = await client.post("/logout", data={"csrf_token": token})
    assert answer.status_code == 303 and answer.headers["location"] == "/login"
    client.cookies.set(SESSION_COOKIE, cookie)  # a copy of the old cookie opens nothing
    assert (await client.get("/inbox")).status_code == 303


async def test_an_unused_session_expires_and_a_used_one_is_extended(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    await make_agent(db, tenant)
    await sign_in(client)
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    async with db.transaction() as session:
        await session.execute(
            update(WebSession).values(
                last_seen_at=long_ago, expires_at=long_ago + timedelta(hours=2)
            )
        )
    assert (await client.get("/inbox")).status_code == 200
    async with db.sessions() as session:
        live = await session.scalar(select(WebSession))
        assert live is not None and live.expires_at > datetime.now(UTC) + timedelta(hours=11)
    async with db.transaction() as session:
        await session.execute(update(WebSession).values(expires_at=datetime.now(UTC)))
    assert (await client.get("/inbox")).status_code == 303


async def test_htmx_requests_are_told_to_load_the_sign_in_page(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    answer = await client.get("/inbox/queue", headers={"HX-Request": "true"})
    assert answer.status_code == 401
    assert answer.headers["HX-Redirect"] == "/login?next=/inbox/queue"


async def test_the_sign_in_page_speaks_the_browsers_language(client: httpx.AsyncClient) -> None:
    french = await client.get("/login", headers={"Accept-Language": "fr-FR,fr;q=0.9,en;q=0.8"})
    english = await client.get("/login", headers={"Accept-Language": "de-DE,en;q=0.5"})
    assert '<html lang="fr">' in french.text and "Se connecter" in french.text
    assert '<html lang="en">' in english.text and "Sign in" in english.text


async def test_an_agent_switches_the_workspace_to_french_and_renames_themselves(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    await make_agent(db, tenant)
    token = await sign_in(client)
    assert '<html lang="en">' in (await client.get("/inbox")).text
    saved = await client.post(
        "/settings/profile", data={"csrf_token": token, "name": "Ana Dupont", "language": "fr"}
    )
    assert saved.status_code == 200 and "Enregistré." in saved.text
    page = (await client.get("/inbox")).text
    assert '<html lang="fr">' in page and "Ana Dupont" in page
    odd = await client.post(
        "/settings/profile", data={"csrf_token": token, "name": "Ana", "language": "xx"}
    )
    assert '<html lang="fr">' in odd.text  # an unknown language keeps the current one


async def test_guessing_passwords_is_stopped_after_ten_failures(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    await make_agent(db, tenant)
    for attempt in range(10):
        wrong = await client.post(
            "/login", data={"email": "ana@brand.test", "password": f"guess-{attempt}"}
        )
        assert wrong.status_code == 401
    blocked = await client.post("/login", data={"email": "ana@brand.test", "password": PASSWORD})
    assert blocked.status_code == 429 and "set-cookie" not in blocked.headers
    other = await client.post("/login", data={"email": "bob@brand.test", "password": PASSWORD})
    assert other.status_code == 401  # another address still gets an answer
