"""The workspace in a real browser (the machine's Chromium, driven by Playwright) against a real
`allo serve` with its job worker: signing in, answering the first conversation, live updates
in two agents' browsers, the keyboard, hostile customer text, and the French interface.

Screenshots of the main screens are written to test-artifacts/screenshots."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect
from sqlalchemy import select, update

from allo.accounts.models import User
from allo.conversations.models import Conversation
from allo.db.engine import Database
from tests.conftest import REPO, Tenant, auth
from tests.web.test_i18n import french_catalogue
from tests.web.test_sessions import PASSWORD, make_agent

pytestmark = pytest.mark.slow

ALLO = str(Path(sys.executable).parent / "allo")
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
LIVE_WITHIN_MS = 10_000


def chromium() -> str:
    found = os.environ.get("ALLO_TEST_CHROMIUM") or shutil.which("chromium")
    if found is None:
        pytest.fail("the browser tests need Chromium: apt-get install chromium (./run-tests does)")
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def serving(database_url: str, data_dir: Path) -> Iterator[str]:
    """`allo serve` (HTTP and job worker) on the test database."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLO_")}
    env |= {
        "ALLO_DATABASE_URL": database_url,
        "ALLO_DATA_DIR": str(data_dir),
        "ALLO_LOG_LEVEL": "WARNING",
        "ALLO_TRIAGE_EMBEDDINGS": "false",
    }
    process = subprocess.Popen(
        [ALLO, "serve", "--port", str(port)], env=env, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        else:
            raise AssertionError("allo serve did not answer /healthz")
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serving(database_url, tmp_path_factory.mktemp("serve")) as base:
        yield base


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium())
        try:
            yield launched
        finally:
            await launched.close()


async def signed_in(browser: Browser, server: str, email: str) -> tuple[BrowserContext, Page]:
    context = await browser.new_context(base_url=server, viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    await page.goto("/inbox?view=all")
    await page.fill("#email", email)
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await expect(page.locator("#queue")).to_be_visible()
    await expect(page.locator(".live")).to_have_attribute("data-state", "on")
    return context, page


async def push(
    server: str, tenant: Tenant, external_id: str, text: str, contact: str, name: str
) -> None:
    async with httpx.AsyncClient(base_url=server) as client:
        answer = await client.post(
            f"/api/v1/inboxes/{tenant.inbox_id}/messages",
            json={
                "external_id": external_id,
                "contact": {"id": contact, "name": name},
                "text": text,
            },
            headers=auth(tenant.token),
        )
    assert answer.status_code == 202, answer.text


async def stored(db: Database, count: int, routed: bool = False) -> list[Conversation]:
    """Wait for the worker to store `count` conversations (and route them, if asked)."""
    for _ in range(600):
        async with db.sessions() as session:
            rows = list(await session.scalars(select(Conversation).order_by(Conversation.id)))
        if len(rows) >= count and (not routed or all(r.routed_at for r in rows)):
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"{count} conversations were never stored")


async def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def test_an_agent_answers_the_most_urgent_conversation_and_finds_it_in_the_outbox(
    server: str, browser: Browser, db: Database, tenant: Tenant
) -> None:
    await make_agent(db, tenant)
    await push(server, tenant, "m1", "Où en est ma commande ?", "c1", "Camille Durand")
    await push(server, tenant, "m2", "My card was charged twice!", "c2", "Sam Taylor")
    # Routed first: routing would otherwise rewrite the due times set here.
    first, second = await stored(db, 2, routed=True)
    now = datetime.now(UTC)
    async with db.transaction() as session:
        for conversation, minutes in ((first, 40), (second, 4)):
            await session.execute(
                update(Conversation)
                .where(Conversation.id == conversation.id)
                .values(
                    response_due_at=now + timedelta(minutes=minutes),
                    queue_deadline=now + timedelta(minutes=minutes),
                )
            )
    context, page = await signed_in(browser, server, "ana@brand.test")
    await page.reload()
    rows = page.locator("#queue li[data-id]")
    await expect(rows.first).to_contain_text("Sam Taylor")
    await expect(rows.first.locator("time.due")).to_have_attribute("data-state", "soon")
    await screenshot(page, "inbox")

    await rows.first.locator("a").click()
    await expect(page.locator(".thread")).to_contain_text("My card was charged twice!")
    await page.fill("#reply-text", "Sorry about that, Sam: the second charge is refunded today.")
    await page.click("#composer button[type=submit]")
    await expect(page.locator(".thread li.out")).to_contain_text("refunded today")
    await screenshot(page, "conversation")

    await page.click("header.top >> text=Outbox")
    await expect(page.locator("table.outbox")).to_contain_text("refunded today")
    await expect(page.locator("table.outbox")).to_contain_text("queued")
    await screenshot(page, "outbox")
    await context.close()


async def test_a_new_message_appears_live_in_two_agents_browsers(
    server: str, browser: Browser, db: Database, tenant: Tenant
) -> None:
    await make_agent(db, tenant)
    await make_agent(db, tenant, "bob@brand.test")
    await push(server, tenant, "m1", "Bonjour, une question sur ma facture", "c1", "Léa Martin")
    (conversation,) = await stored(db, 1)
    ana_context, ana = await signed_in(browser, server, "ana@brand.test")
    bob_context, bob = await signed_in(browser, server, "bob@brand.test")
    await bob.goto(f"/conversations/{conversation.id}")
    await expect(bob.locator(".live")).to_have_attribute("data-state", "on")

    await push(server, tenant, "m2", "Panne totale depuis ce matin !", "c2", "Hugo Petit")
    await push(server, tenant, "m3", "Et la facture est fausse aussi.", "c1", "Léa Martin")
    await expect(ana.locator("#queue")).to_contain_text("Hugo Petit", timeout=LIVE_WITHIN_MS)
    await expect(bob.locator(".thread")).to_contain_text(
        "la facture est fausse", timeout=LIVE_WITHIN_MS
    )
    await bob.goto("/inbox?view=all")
    await expect(bob.locator("#queue")).to_contain_text("Hugo Petit")
    await ana_context.close()
    await bob_context.close()


async def test_the_keyboard_moves_through_the_inbox_and_into_a_reply(
    server: str, browser: Browser, db: Database, tenant: Tenant
) -> None:
    await make_agent(db, tenant)
    for number in range(3):
        await push(server, tenant, f"m{number}", "Bonjour", f"c{number}", f"Client {number}")
    await stored(db, 3)
    context, page = await signed_in(browser, server, "ana@brand.test")
    rows = page.locator("#queue li[data-id]")
    await expect(rows).to_have_count(3)
    await expect(rows.nth(0)).to_have_attribute("aria-selected", "true")
    await page.keyboard.press("j")
    await page.keyboard.press("j")
    await expect(rows.nth(2)).to_have_attribute("aria-selected", "true")
    await page.keyboard.press("k")
    await expect(rows.nth(1)).to_have_attribute("aria-selected", "true")
    chosen = await rows.nth(1).get_attribute("data-id")
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(re.compile(f"/conversations/{chosen}$"))
    await page.keyboard.press("r")
    await expect(page.locator("#reply-text")).to_be_focused()
    await page.keyboard.press("Escape")
    await page.keyboard.press("?")
    await expect(page.locator("dialog#help")).to_be_visible()
    await context.close()


async def test_hostile_customer_text_runs_nothing_in_the_browser(
    server: str, browser: Browser, db: Database, tenant: Tenant
) -> None:
    await make_agent(db, tenant)
    hostile = [
        "<script>alert('script')</script>",
        "<img src=x onerror=\"alert('img')\">",
        "<svg onload=\"alert('svg')\"></svg>",
        '<a href="javascript:alert(1)">facture.pdf</a>',
    ]
    for number, text in enumerate(hostile):
        await push(
            server, tenant, f"x{number}", text, "attacker", "<b onmouseover=alert(2)>Eve</b>"
        )
    (conversation,) = await stored(db, 1)
    context, page = await signed_in(browser, server, "ana@brand.test")
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    await page.goto(f"/conversations/{conversation.id}")
    await expect(page.locator(".thread")).to_contain_text("<script>alert('script')</script>")
    await page.hover("h1")
    assert (
        await page.locator(".thread script, .thread img, .thread svg, a[href^=javascript]").count()
        == 0
    )
    assert dialogs == []
    await context.close()


async def test_the_french_workspace_shows_no_english(
    server: str, browser: Browser, db: Database, tenant: Tenant
) -> None:
    await make_agent(db, tenant, language="fr")
    await push(server, tenant, "m1", "Bonjour, où est mon colis ?", "c1", "Inès Roux")
    (conversation,) = await stored(db, 1)
    english = [
        source
        for source, french in french_catalogue().items()
        if source != french and len(source) > 3 and "{" not in source and "%" not in source
    ]
    context, page = await signed_in(browser, server, "ana@brand.test")
    for path in ("/inbox?view=all", f"/conversations/{conversation.id}", "/outbox"):
        await page.goto(path)
        await expect(page.locator("html")).to_have_attribute("lang", "fr")
        shown = await page.locator("body").inner_text()
        left = [s for s in english if re.search(rf"(?<!\w){re.escape(s)}(?!\w)", shown)]
        assert left == [], (path, left)
    await screenshot(page, "outbox-fr")
    await context.close()


async def test_two_agents_on_one_conversation_see_each_other_and_who_is_typing(
    server: str, browser: Browser, db: Database, tenant: Tenant
) -> None:
    await make_agent(db, tenant)
    await make_agent(db, tenant, "bob@brand.test")
    async with db.transaction() as session:
        bob = await session.scalar(select(User).where(User.email == "bob@brand.test"))
        assert bob is not None
        bob.name = "Bob Boucher"
    await push(server, tenant, "m1", "Mon colis est abîmé", "c1", "Nina Caron")
    (conversation,) = await stored(db, 1)
    ana_context, ana = await signed_in(browser, server, "ana@brand.test")
    bob_context, bob_page = await signed_in(browser, server, "bob@brand.test")
    await ana.goto(f"/conversations/{conversation.id}")
    await bob_page.goto(f"/conversations/{conversation.id}")
    await expect(ana.locator(".presence")).to_contain_text("Bob Boucher is also here")
    await expect(bob_page.locator(".presence")).to_contain_text("Ana Agent is also here")
    await bob_page.type("#reply-text", "Je regarde")
    await expect(ana.locator(".presence")).to_contain_text("Bob Boucher is typing")
    await screenshot(ana, "collision")
    await bob_page.goto("/inbox")
    await expect(ana.locator(".presence")).to_have_text("", timeout=LIVE_WITHIN_MS)
    await ana_context.close()
    await bob_context.close()


async def test_the_composer_counts_as_x_does_and_shows_the_window(
    server: str, browser: Browser, db: Database, tenant: Tenant
) -> None:
    await make_agent(db, tenant)
    await push(server, tenant, "m1", "@marque toujours rien reçu", "c1", "Jules Faure")
    (conversation,) = await stored(db, 1)
    async with db.transaction() as session:
        await session.execute(
            update(Conversation)
            .where(Conversation.id == conversation.id)
            .values(channel="x", visibility="public")
        )
    context, page = await signed_in(browser, server, "ana@brand.test")
    await page.goto(f"/conversations/{conversation.id}")
    counter = page.locator("#reply-count")
    await expect(counter).to_have_text("0 / 280")
    await page.fill(
        "#reply-text", "Voir https://www.example.com/une/tres/longue/adresse 👨‍👩‍👧 日本"
    )
    await expect(counter).to_have_text(f"{5 + 23 + 1 + 2 + 1 + 4} / 280")
    await page.fill("#reply-text", "a" * 281)
    await expect(counter).to_have_attribute("data-over", "true")
    await page.click("#composer button[type=submit]")
    await expect(page.locator("#composer .alert")).to_be_visible()
    await context.close()


UNNAMED_CONTROLS = """
() => Array.from(document.querySelectorAll('input, select, textarea, button'))
  .filter((el) => el.type !== 'hidden' && el.offsetParent !== null)
  .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
    && !el.getAttribute('aria-labelledby') && !(el.tagName === 'BUTTON' && el.textContent.trim()))
  .map((el) => el.outerHTML.slice(0, 120))
"""


async def test_every_screen_names_its_controls_and_starts_with_a_skip_link(
    server: str, browser: Browser, db: Database, tenant: Tenant
) -> None:
    user_id = await make_agent(db, tenant)
    async with db.transaction() as session:
        user = await session.get(User, user_id)
        assert user is not None
        user.role = "admin"
    await push(server, tenant, "m1", "Bonjour, une question", "c1", "Rose Blanc")
    (conversation,) = await stored(db, 1)
    context, page = await signed_in(browser, server, "ana@brand.test")
    screens = [
        "/inbox?view=all",
        f"/conversations/{conversation.id}",
        "/outbox",
        "/settings/canned-responses",
        "/settings/routing",
        "/settings/intents",
        "/settings/channels",
        "/settings/account",
        "/settings/profile",
    ]
    for path in screens:
        await page.goto(path)
        assert await page.evaluate(UNNAMED_CONTROLS) == [], path
        assert await page.locator("main#main").count() == 1, path
        assert await page.locator("h1").count() == 1, path
        await page.keyboard.press("Tab")
        focused = await page.evaluate("() => document.activeElement.className")
        assert focused == "skip", path
    await page.goto("/settings/routing")
    await screenshot(page, "settings-routing")
    await context.close()


async def test_a_message_taken_by_another_allo_serve_appears_live(
    server: str,
    browser: Browser,
    db: Database,
    tenant: Tenant,
    database_url: str,
    tmp_path: Path,
) -> None:
    await make_agent(db, tenant)
    context, page = await signed_in(browser, server, "ana@brand.test")
    with serving(database_url, tmp_path) as other:
        await push(other, tenant, "m1", "Arrivé par l'autre serveur", "c1", "Yann Morel")
        await expect(page.locator("#queue")).to_contain_text("Yann Morel", timeout=LIVE_WITHIN_MS)
    await context.close()
