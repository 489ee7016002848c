"""Live updates: announcements reach the listening browsers of their account only, only once
the change is committed, and a browser that cannot keep up is told to reload."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from allo import events
from allo.db.engine import Database, libpq_url
from allo.web import realtime
from allo.web.realtime import Realtime


@pytest.fixture
async def listening(database_url: str) -> AsyncIterator[Realtime]:
    live = Realtime(libpq_url(database_url))
    task = asyncio.create_task(live.run())
    await asyncio.wait_for(live.connected.wait(), 10)
    yield live
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_committed_change_reaches_its_accounts_browsers_and_no_other(
    db: Database, listening: Realtime
) -> None:
    with listening.listening(1) as mine, listening.listening(2) as theirs:
        async with db.transaction() as session:
            await events.announce(session, 1, "message", [7, 3, 7])
        update = await asyncio.wait_for(mine.get(), 5)
        assert update == {"kind": "message", "conversations": [3, 7]}
        await asyncio.sleep(0.2)
        assert theirs.empty()


async def test_a_rolled_back_change_is_never_announced(db: Database, listening: Realtime) -> None:
    with listening.listening(1) as mine:
        with contextlib.suppress(RuntimeError):
            async with db.transaction() as session:
                await events.announce(session, 1, "status", [1])
                raise RuntimeError("the write failed")
        async with db.transaction() as session:
            await events.announce(session, 1, "status", [2])
        assert (await asyncio.wait_for(mine.get(), 5))["conversations"] == [2]


async def test_many_conversations_are_announced_in_several_notifications(
    db: Database, listening: Realtime
) -> None:
    ids = list(range(1, events.ANNOUNCED_PER_NOTIFY * 2 + 2))
    with listening.listening(1) as mine:
        async with db.transaction() as session:
            await events.announce(session, 1, "message", ids)
        heard: list[int] = []
        while len(heard) < len(ids):
            heard += (await asyncio.wait_for(mine.get(), 5))["conversations"]
    assert heard == ids


async def test_a_browser_that_falls_behind_is_told_to_reload(
    db: Database, listening: Realtime
) -> None:
    with listening.listening(1) as slow:
        async with db.transaction() as session:
            for number in range(realtime.QUEUE_SIZE + 5):
                await events.announce(session, 1, "message", [number + 1])
        await asyncio.sleep(0.5)
        assert await asyncio.wait_for(slow.get(), 5) == realtime.RESYNC


async def test_an_unreadable_notification_is_ignored(db: Database, listening: Realtime) -> None:
    with listening.listening(1) as mine:
        async with db.transaction() as session:
            await session.execute(
                text("SELECT pg_notify(:c, 'not json'), pg_notify(:c, '{}')"),
                {"c": events.REALTIME_CHANNEL},
            )
            await events.announce(session, 1, "message", [5])
        assert (await asyncio.wait_for(mine.get(), 5))["conversations"] == [5]


async def test_a_stream_ends_when_its_session_does() -> None:
    queue: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    signed_in = [True, False]

    async def still_signed_in() -> bool:
        return signed_in.pop(0)

    chunks = [chunk async for chunk in realtime.event_stream(queue, 0.01, still_signed_in)]
    assert chunks == ["retry: 2000\n\n", ": keepalive\n\n"]
