"""Workspace benchmark: page times on a large account, and live delivery to an open browser.

For each target (the embedded PostgreSQL, the machine's PostgreSQL server) on a fresh database:
one account with 50 agents in a team, 50,000 contacts, 100,000 conversations (20,000 open,
with due times and triage) and 1,000,000 messages (ten per conversation), written with SQL.
Then `allo serve` (HTTP and its job worker) runs on it and:

- pages: each inbox view, a filtered and a searched inbox, and the conversation page of random
  conversations, requested one after another by a signed-in supervisor (agent for "mine"),
  `--requests` times each; the time is the whole HTTP answer on loopback;
- live: a browser (the machine's Chromium through Playwright) keeps the inbox open while a
  message is pushed through the API channel, `--live` times; the time runs from the POST to the
  new row visible on the page (intake, the worker's batch, NOTIFY, the server-sent event and
  the reload of the rows).

    .venv/bin/python bench/workspace.py --targets embedded,server

It prints a table and writes bench/results/workspace.json (and .md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
from playwright.async_api import async_playwright, expect

from allo.accounts import service as accounts
from allo.channels import service as channels
from allo.db import migrate
from allo.db.engine import connect, libpq_url
from allo.routing import service as routing
from allo.routing.schemas import TeamIn
from databases import Target, embedded_database, server_database
from figures import percentiles, publish

BENCH = Path(__file__).resolve().parent
ALLO = str(Path(sys.executable).parent / "allo")
PASSWORD = "bench-password"
GOAL_PAGE_P95_MS = 100.0
GOAL_LIVE_P95_MS = 1000.0


async def populate(url: str, conversations: int, per_conversation: int) -> dict[str, Any]:
    """The account, its people and inbox; conversations and messages in SQL."""
    db = connect(url, pool_size=2)
    try:
        async with db.transaction() as session:
            account = await accounts.create_account(session, "Bench")
            token = await accounts.create_api_token(session, account.id, "bench")
            inbox = await channels.create_channel_account(session, account.id, "api", "API", "b")
            await accounts.create_user(
                session, account.id, "lead@bench.test", "Lead", "supervisor", PASSWORD
            )
            agents = [
                (
                    await accounts.create_user(
                        session, account.id, f"a{i}@bench.test", f"Agent {i}", "agent", PASSWORD
                    )
                ).id
                for i in range(50)
            ]
            team, _ = await routing.save_team(
                session, account.id, TeamIn(name="Support", member_ids=agents)
            )
    finally:
        await db.dispose()
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        _seed(connection, account.id, inbox.id, team.id, agents, conversations, per_conversation)
        row = connection.execute("SELECT min(id), max(id) FROM conversations").fetchone()
    assert row is not None
    return {"account": account.id, "token": token, "inbox": inbox.id, "ids": list(row)}


def _seed(
    connection: psycopg.Connection[Any],
    account: int,
    inbox: int,
    team: int,
    agents: list[int],
    conversations: int,
    per_conversation: int,
) -> None:
    values = {
        "account": account,
        "inbox": inbox,
        "team": team,
        "agents": agents,
        "conversations": conversations,
        "contacts": conversations // 2,
        "per": per_conversation,
    }
    connection.execute(
        """
        INSERT INTO contacts (account_id, name)
        SELECT %(account)s, 'Customer ' || n FROM generate_series(1, %(contacts)s) n
        """,
        values,
    )
    # One in five open (half of them held by an agent), due within two hours either side.
    connection.execute(
        """
        INSERT INTO conversations (account_id, channel_account_id, channel, visibility,
            contact_id, status, team_id, assignee_id, language, waiting_since, last_inbound_at,
            last_message_at, response_due_at, queue_deadline, routed_at, waiting_triage)
        SELECT %(account)s, %(inbox)s,
            (ARRAY['x','facebook','instagram','whatsapp','email','webchat','api'])[1 + n %% 7],
            CASE WHEN n %% 3 = 0 THEN 'public' ELSE 'private' END,
            (SELECT min(id) FROM contacts) + (n %% %(contacts)s),
            CASE WHEN n %% 5 = 0 THEN 'open' ELSE 'resolved' END,
            %(team)s,
            CASE WHEN n %% 10 = 0 THEN (%(agents)s::bigint[])[1 + n %% 50] END,
            CASE WHEN n %% 2 = 0 THEN 'fr' ELSE 'en' END,
            CASE WHEN n %% 5 = 0 THEN now() - (n %% 3600) * interval '1 second' END,
            now() - (n %% 86400) * interval '1 second',
            now() - (n %% 86400) * interval '1 second',
            CASE WHEN n %% 5 = 0 THEN now() + ((n %% 14400) - 7200) * interval '1 second' END,
            CASE WHEN n %% 5 = 0 THEN now() + ((n %% 14400) - 7800) * interval '1 second' END,
            now(),
            jsonb_build_object('answerable', true, 'spam', n %% 97 = 0, 'urgent', n %% 31 = 0,
                'sentiment', ((n %% 7) - 3) / 3.0, 'churn', false,
                'intents', jsonb_build_array(CASE WHEN n %% 2 = 0 THEN 'question'
                                                  ELSE 'complaint' END))
        FROM generate_series(1, %(conversations)s) n
        """,
        values,
    )
    connection.execute(
        """
        INSERT INTO messages (account_id, conversation_id, channel_account_id, direction,
            visibility, text, sent_at, received_at, delivery_status, triaged_at, triage)
        SELECT %(account)s, c.id, %(inbox)s,
            CASE WHEN m %% 2 = 1 THEN 'in' ELSE 'out' END,
            'private',
            CASE WHEN m %% 2 = 1
                 THEN 'Bonjour, ma commande ' || c.id || ' n''est pas arrivée, message ' || m
                 ELSE 'We are looking into order ' || c.id || ' right now, reply ' || m END,
            c.last_message_at - (%(per)s - m) * interval '1 minute',
            c.last_message_at - (%(per)s - m) * interval '1 minute',
            CASE WHEN m %% 2 = 1 THEN 'received' ELSE 'sent' END,
            c.last_message_at,
            CASE WHEN m %% 2 = 1 THEN jsonb_build_object('language', c.language,
                'sentiment', jsonb_build_object('label', 'negative', 'score', -0.6),
                'intents', jsonb_build_array('complaint'), 'urgent', false, 'spam', false,
                'offensive', false, 'pii', jsonb_build_array(), 'needs_answer', true) END
        FROM conversations c, generate_series(1, %(per)s) m
        WHERE c.account_id = %(account)s
        """,
        values,
    )
    connection.execute("ANALYZE")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def serving(url: str) -> Iterator[str]:
    port = free_port()
    data = Path(tempfile.mkdtemp(prefix="allo-w-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLO_")}
    env |= {
        "ALLO_DATABASE_URL": url,
        "ALLO_DATA_DIR": str(data),
        "ALLO_LOG_LEVEL": "WARNING",
        "ALLO_TRIAGE_EMBEDDINGS": "false",
    }
    process = subprocess.Popen(
        [ALLO, "serve", "--port", str(port)], env=env, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
        shutil.rmtree(data, ignore_errors=True)


def signed_in(base: str, email: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=30)
    answer = client.post("/login", data={"email": email, "password": PASSWORD})
    assert answer.status_code == 303, answer.text
    return client


def time_pages(base: str, seeded: dict[str, Any], requests: int) -> dict[str, Any]:
    generator = random.Random(5)
    lead = signed_in(base, "lead@bench.test")
    agent = signed_in(base, "a7@bench.test")
    low, high = seeded["ids"]
    pages: dict[str, tuple[httpx.Client, Any]] = {
        "inbox: all": (lead, lambda: "/inbox?view=all"),
        "inbox: unassigned": (lead, lambda: "/inbox?view=unassigned"),
        "inbox: SLA at risk": (lead, lambda: "/inbox?view=sla"),
        "inbox: mine (agent)": (agent, lambda: "/inbox?view=mine"),
        "inbox: my teams (agent)": (agent, lambda: "/inbox?view=teams"),
        "inbox: filtered (fr, negative, X)": (
            lead,
            lambda: "/inbox?view=all&language=fr&sentiment=negative&channel=x",
        ),
        "inbox: text search": (
            lead,
            lambda: f"/inbox?view=all&q=commande+{generator.randint(low, high)}",
        ),
        "inbox: view counts": (lead, lambda: "/inbox/views?view=all"),
        "conversation page": (lead, lambda: f"/conversations/{generator.randint(low, high)}"),
        "suggested replies": (
            lead,
            lambda: f"/conversations/{generator.randint(low, high)}/suggestions",
        ),
    }
    results = {}
    for name, (client, path) in pages.items():
        client.get(path())  # warm
        samples = []
        for _ in range(requests):
            began = time.perf_counter()
            answer = client.get(path())
            samples.append((time.perf_counter() - began) * 1000)
            assert answer.status_code == 200, (name, answer.status_code)
        results[name] = percentiles(samples)
    return results


async def time_live(base: str, seeded: dict[str, Any], rounds: int) -> dict[str, Any]:
    chromium = os.environ.get("ALLO_TEST_CHROMIUM") or shutil.which("chromium")
    assert chromium, "the live phase needs Chromium (apt-get install chromium)"
    samples = []
    async with async_playwright() as playwright, httpx.AsyncClient(base_url=base) as api:
        browser = await playwright.chromium.launch(executable_path=chromium)
        page = await browser.new_page(base_url=base)
        await page.goto("/inbox?view=all&status=open&q=Live+bench")
        await page.fill("#email", "lead@bench.test")
        await page.fill("#password", PASSWORD)
        await page.click("button[type=submit]")
        await expect(page.locator(".live")).to_have_attribute("data-state", "on")
        for number in range(rounds):
            name = f"Live bench {number}"
            began = time.perf_counter()
            answer = await api.post(
                f"/api/v1/inboxes/{seeded['inbox']}/messages",
                json={
                    "external_id": f"live-{number}",
                    "contact": {"id": f"live-{number}", "name": name},
                    "text": f"Live bench message {number}",
                },
                headers={"Authorization": f"Bearer {seeded['token']}"},
            )
            assert answer.status_code == 202
            await expect(page.locator("#queue")).to_contain_text(name, timeout=10_000)
            samples.append((time.perf_counter() - began) * 1000)
            await asyncio.sleep(0.3)
        await browser.close()
    return percentiles(samples)


def run_target(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    migrate.upgrade(target.url)
    began = time.perf_counter()
    seeded = asyncio.run(populate(target.url, args.conversations, args.messages_per))
    seeded_s = time.perf_counter() - began
    with serving(target.url) as base:
        pages = time_pages(base, seeded, args.requests)
        live = asyncio.run(time_live(base, seeded, args.live)) if args.live else None
    return {
        "target": target.name,
        "conversations": args.conversations,
        "messages": args.conversations * args.messages_per,
        "seeded_s": round(seeded_s, 1),
        "pages": pages,
        "live": live,
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| target | page | count | p50 ms | p95 ms | p99 ms | max ms | goal | met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        rows = [(name, figures, GOAL_PAGE_P95_MS) for name, figures in result["pages"].items()]
        if result["live"]:
            rows.append(("live: webhook to row in browser", result["live"], GOAL_LIVE_P95_MS))
        for name, figures, goal in rows:
            lines.append(
                f"| {result['target']} | {name} | {figures['count']} | {figures['p50_ms']} "
                f"| {figures['p95_ms']} | {figures['p99_ms']} | {figures['max_ms']} "
                f"| p95 < {goal:.0f} | {'yes' if figures['p95_ms'] < goal else 'NO'} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="embedded,server")
    parser.add_argument("--server-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--messages-per", type=int, default=10)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--live", type=int, default=20)
    parser.add_argument("--json", type=Path, default=BENCH / "results" / "workspace.json")
    args = parser.parse_args()
    results = []
    for name in args.targets.split(","):
        opened = embedded_database() if name == "embedded" else server_database(args.server_url)
        with opened as target:
            results.append(run_target(target, args))
    publish(args.json, results, table(results))


if __name__ == "__main__":
    main()
