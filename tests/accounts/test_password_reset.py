"""Password reset by email: a link mailed through a real SMTP server (aiosmtpd on loopback),
working once and for an hour, ending every session; the form never says who has an account."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select, update

from allo.accounts.models import PasswordReset, WebSession
from allo.db.engine import Database
from allo.settings import Settings
from allo.web.app import create_app
from tests.conftest import Tenant
from tests.web.test_browser import free_port
from tests.web.test_sessions import PASSWORD, make_agent, sign_in

NEW_PASSWORD = "a brand new passphrase"


class Mailbox:
    def __init__(self) -> None:
        self.received: list[Message] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.received.append(message_from_bytes(envelope.content))  # type: ignore[attr-defined]
        return "250 OK"


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


@pytest.fixture
async def mailing_client(
    settings: Settings, mailbox: tuple[Mailbox, int]
) -> AsyncIterator[httpx.AsyncClient]:
    _, port = mailbox
    configured = settings.model_copy(
        update={"smtp_url": f"smtp://127.0.0.1:{port}", "public_url": "https://allo.example"}
    )
    app = create_app(configured)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://allo.test") as http:
            yield http


def link_in(message: Message) -> str:
    body = message.get_payload(decode=True)
    assert isinstance(body, bytes)
    found = re.search(r"https://allo\.example(/password/reset\?token=[\w-]+)", body.decode())
    assert found is not None
    return found.group(1)


async def test_a_mailed_link_sets_a_new_password_once_and_signs_out_everywhere(
    mailing_client: httpx.AsyncClient,
    db: Database,
    tenant: Tenant,
    mailbox: tuple[Mailbox, int],
) -> None:
    box, _ = mailbox
    await make_agent(db, tenant, language="fr")
    await sign_in(mailing_client)
    asked = await mailing_client.post("/password/forgot", data={"email": "ANA@brand.test"})
    assert asked.status_code == 200
    (mail,) = box.received
    assert mail["To"] == "ana@brand.test" and mail["Subject"] == "Votre mot de passe Allo"
    link = link_in(mail)
    form = await mailing_client.get(link)
    assert 'name="password"' in form.text

    token = link.split("token=")[1]
    differ = await mailing_client.post(
        "/password/reset", data={"token": token, "password": NEW_PASSWORD, "again": "other one!"}
    )
    assert differ.status_code == 422
    done = await mailing_client.post(
        "/password/reset", data={"token": token, "password": NEW_PASSWORD, "again": NEW_PASSWORD}
    )
    assert done.status_code == 303 and done.headers["location"] == "/login?reset=done"
    assert (await mailing_client.get("/inbox")).status_code == 303  # signed out everywhere
    again = await mailing_client.post(
        "/password/reset",
        data={"token": token, "password": "third passphrase", "again": "third passphrase"},
    )
    assert again.status_code == 422 and "expired or was already used" in again.text
    old = await mailing_client.post(
        "/login", data={"email": "ana@brand.test", "password": PASSWORD}
    )
    new = await mailing_client.post(
        "/login", data={"email": "ana@brand.test", "password": NEW_PASSWORD}
    )
    assert old.status_code == 401 and new.status_code == 303
    async with db.sessions() as session:
        live = list(await session.scalars(select(WebSession).where(WebSession.ended_at.is_(None))))
    assert len(live) == 1


async def test_an_unknown_address_gets_the_same_answer_and_no_mail(
    mailing_client: httpx.AsyncClient, db: Database, tenant: Tenant, mailbox: tuple[Mailbox, int]
) -> None:
    box, _ = mailbox
    await make_agent(db, tenant)
    known = await mailing_client.post("/password/forgot", data={"email": "ana@brand.test"})
    unknown = await mailing_client.post("/password/forgot", data={"email": "who@brand.test"})
    assert known.status_code == unknown.status_code == 200
    assert known.text == unknown.text
    assert len(box.received) == 1


async def test_links_are_limited_per_hour_and_expire(
    mailing_client: httpx.AsyncClient, db: Database, tenant: Tenant, mailbox: tuple[Mailbox, int]
) -> None:
    box, _ = mailbox
    await make_agent(db, tenant)
    for _ in range(5):
        await mailing_client.post("/password/forgot", data={"email": "ana@brand.test"})
    assert len(box.received) == 3
    token = link_in(box.received[0]).split("token=")[1]
    async with db.transaction() as session:
        await session.execute(
            update(PasswordReset).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    page = await mailing_client.get(f"/password/reset?token={token}")
    assert "expired or was already used" in page.text
    forged = await mailing_client.get("/password/reset?token=forged")
    assert "expired or was already used" in forged.text


async def test_an_smtp_server_that_is_down_loses_no_answer(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    await make_agent(db, tenant)
    answer = await client.post("/password/forgot", data={"email": "ana@brand.test"})
    assert answer.status_code == 200  # no SMTP configured: logged, the page is the same


async def test_the_link_points_at_allo_whatever_host_the_request_named(
    mailing_client: httpx.AsyncClient, db: Database, tenant: Tenant, mailbox: tuple[Mailbox, int]
) -> None:
    box, _ = mailbox
    await make_agent(db, tenant)
    await mailing_client.post(
        "/password/forgot", data={"email": "ana@brand.test"}, headers={"Host": "evil.example"}
    )
    (mail,) = box.received
    body = mail.get_payload(decode=True)
    assert isinstance(body, bytes)
    assert "https://allo.example/password/reset?token=" in body.decode()
    assert "evil.example" not in body.decode()
