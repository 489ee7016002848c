"""Routing benchmark: decision latency with 1,000 open conversations and 50 agents.

For each target (the embedded PostgreSQL, the machine's PostgreSQL server) on a fresh database:
one account, one team on business hours with an SLA policy, 50 agents online holding up to 4
conversations each, and 1,000 open conversations with waiting customers (stored through the
intake path's tables, triage results included). Then:

- route: the time to route one conversation (team, triage of its waiting messages, priority,
  SLA due times and their timers) in its own transaction, for every one of the 1,000;
- route in batches: the same 1,000 waiting again, read by `route_pending` as the job does (50
  conversations to a transaction): the time per conversation;
- assign: 200 times, one held conversation is resolved, and the time of `fill` is taken: it
  reads the team's whole queue (800 waiting), orders it and gives the first to the agent with
  room, under the account's assignment lock.

    .venv/bin/python bench/routing.py --targets embedded,server

It prints a table and writes bench/results/routing.json (and .md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, text, update

from allo.accounts import service as accounts
from allo.channels import service as channels
from allo.conversations.models import Conversation
from allo.db import migrate
from allo.db.engine import Database, connect
from allo.routing import service as routing
from allo.routing.schemas import AgentIn, SlaPolicyIn, TeamIn
from databases import Target, embedded_database, server_database
from figures import percentiles, publish

BENCH = Path(__file__).resolve().parent
GOAL_P99_MS = 20.0
CALENDAR = {
    "time_zone": "Europe/Paris",
    "hours": {day: [["08:00", "20:00"]] for day in ("mon", "tue", "wed", "thu", "fri", "sat")},
}
TARGETS = {
    "normal": {"first_response": 3600, "next_response": 3600, "resolution": 86400},
    "urgent": {"first_response": 900, "next_response": 900},
}


async def populate(db: Database, conversations: int, agents: int, capacity: int) -> int:
    """The account, team, agents and waiting conversations; the team's id."""
    async with db.transaction() as session:
        account = await accounts.create_account(session, "Bench")
        inbox = await channels.create_channel_account(session, account.id, "api", "API", "b-1")
        policy = await routing.save_sla_policy(
            session, account.id, SlaPolicyIn(name="Standard", targets=TARGETS)
        )
        users = [
            (
                await accounts.create_user(
                    session, account.id, f"a{i}@bench.test", f"Agent {i}", "agent", "password-1"
                )
            ).id
            for i in range(agents)
        ]
        team, _ = await routing.save_team(
            session,
            account.id,
            TeamIn(name="Support", calendar=CALENDAR, sla_policy_id=policy.id, member_ids=users),
        )
        for user in users:
            await routing.save_agent(
                session,
                account.id,
                user,
                AgentIn(presence="online", capacity={"messaging": capacity}),
                datetime.now(UTC),
            )
    await _conversations(db, account.id, inbox.id, conversations)
    return team.id


async def _conversations(db: Database, account_id: int, inbox_id: int, count: int) -> None:
    generator = random.Random(7)
    now = datetime.now(UTC)
    async with db.transaction() as session:
        await session.execute(
            text(
                """
                INSERT INTO contacts (account_id, name)
                SELECT :account, 'Customer ' || n FROM generate_series(1, :count) n
                """
            ),
            {"account": account_id, "count": count},
        )
        contacts = list(await session.scalars(text("SELECT id FROM contacts ORDER BY id")))
        for contact_id in contacts:
            sent = now - timedelta(minutes=generator.uniform(0, 50))
            urgent = generator.random() < 0.05
            triage = {
                "needs_answer": True,
                "spam": False,
                "urgent": urgent,
                "intents": ["complaint"] if generator.random() < 0.3 else ["question"],
                "sentiment": {"label": "neutral", "score": generator.choice([-0.8, 0.0, 0.4])},
            }
            conversation_id = await session.scalar(
                text(
                    """
                    INSERT INTO conversations (account_id, channel_account_id, channel,
                        visibility, contact_id, status, waiting_since, last_inbound_at,
                        last_message_at)
                    VALUES (:account, :inbox, 'api', 'private', :contact, 'open', :sent, :sent,
                        :sent)
                    RETURNING id
                    """
                ),
                {"account": account_id, "inbox": inbox_id, "contact": contact_id, "sent": sent},
            )
            await session.execute(
                text(
                    """
                    INSERT INTO messages (account_id, conversation_id, channel_account_id,
                        direction, visibility, text, sent_at, received_at, delivery_status,
                        author_contact_id, triage, triaged_at)
                    VALUES (:account, :conversation, :inbox, 'in', 'private', 'Help', :sent,
                        :sent, 'received', :contact, CAST(:triage AS jsonb), :sent)
                    """
                ),
                {
                    "account": account_id,
                    "conversation": conversation_id,
                    "inbox": inbox_id,
                    "sent": sent,
                    "contact": contact_id,
                    "triage": json.dumps(triage),
                },
            )


async def route_each(db: Database) -> list[float]:
    """Route every conversation in its own transaction, timing each."""
    now = datetime.now(UTC)
    async with db.sessions() as session:
        ids = list(await session.scalars(select(Conversation.id).order_by(Conversation.id)))
    timings = []
    for conversation_id in ids:
        began = time.perf_counter()
        async with db.transaction() as session:
            conversation = await session.get(Conversation, conversation_id, with_for_update=True)
            assert conversation is not None
            await routing.route(session, conversation, now, routing.RouteReport())
        timings.append((time.perf_counter() - began) * 1000)
    return timings


async def route_batched(db: Database) -> dict[str, float]:
    """Every conversation waiting again, read by the routing job's own loop."""
    async with db.transaction() as session:
        await session.execute(update(Conversation).values(routed_at=None))
    began = time.perf_counter()
    report = await routing.route_pending(db)
    seconds = time.perf_counter() - began
    return {
        "conversations": report.routed,
        "seconds": round(seconds, 3),
        "ms_per_conversation": round(seconds * 1000 / max(1, report.routed), 3),
    }


async def assign_each(db: Database, team_id: int, rounds: int) -> tuple[list[float], int]:
    """Free one place and time the decision that fills it, `rounds` times."""
    generator = random.Random(11)
    await routing.fill(db, team_id, datetime.now(UTC))
    timings, waiting = [], 0
    for _ in range(rounds):
        async with db.transaction() as session:
            held = list(
                await session.scalars(
                    select(Conversation.id).where(
                        Conversation.assignee_id.is_not(None), Conversation.status == "open"
                    )
                )
            )
            await session.execute(
                update(Conversation)
                .where(Conversation.id == generator.choice(held))
                .values(status="resolved", waiting_since=None, resolved_at=datetime.now(UTC))
            )
            waiting = int(
                await session.scalar(
                    text(
                        "SELECT count(*) FROM conversations WHERE status = 'open' "
                        "AND assignee_id IS NULL"
                    )
                )
                or 0
            )
        began = time.perf_counter()
        assigned = await routing.fill(db, team_id, datetime.now(UTC))
        timings.append((time.perf_counter() - began) * 1000)
        assert assigned == 1, assigned
    return timings, waiting


async def run_target(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    migrate.upgrade(target.url)
    db = connect(target.url, pool_size=4)
    try:
        team_id = await populate(db, args.conversations, args.agents, args.capacity)
        routed = await route_each(db)
        batched = await route_batched(db)
        assigned, waiting = await assign_each(db, team_id, args.rounds)
    finally:
        await db.dispose()
    return {
        "target": target.name,
        "conversations": args.conversations,
        "agents": args.agents,
        "capacity": args.capacity,
        "waiting_when_assigning": waiting,
        "route": percentiles(routed),
        "route_batched": batched,
        "assign": percentiles(assigned),
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| target | decision | count | mean ms | p50 ms | p90 ms | p99 ms | max ms | p99 < 20 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for decision in ("route", "assign"):
            figures = result[decision]
            lines.append(
                f"| {result['target']} | {decision} | {figures['count']} "
                f"| {figures['mean_ms']} | {figures['p50_ms']} | {figures['p90_ms']} "
                f"| {figures['p99_ms']} | {figures['max_ms']} "
                f"| {'yes' if figures['p99_ms'] < GOAL_P99_MS else 'NO'} |"
            )
    lines += ["", "| target | conversations routed in batches | seconds | ms a conversation |"]
    lines.append("|---|---|---|---|")
    for result in results:
        batched = result["route_batched"]
        lines.append(
            f"| {result['target']} | {batched['conversations']} | {batched['seconds']} "
            f"| {batched['ms_per_conversation']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="embedded,server")
    parser.add_argument("--server-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--capacity", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--json", type=Path, default=BENCH / "results" / "routing.json")
    args = parser.parse_args()
    results = []
    for name in args.targets.split(","):
        opened = embedded_database() if name == "embedded" else server_database(args.server_url)
        with opened as target:
            results.append(asyncio.run(run_target(target, args)))
    publish(args.json, results, table(results))


if __name__ == "__main__":
    main()
