"""Live updates for open workspaces: one PostgreSQL LISTEN connection per web process, fanned
out to the browsers of each account as server-sent events.

Whatever process commits a change (a job worker storing messages, another `allo serve` taking
a reply) announces it with NOTIFY (`events.announce`); every web process hears it, so agents on
different processes see the same inbox. A browser that may have missed announcements (its
queue overflowed, or the connection to PostgreSQL was lost) is told to reload what it shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import psycopg

from allo.events import REALTIME_CHANNEL

logger = logging.getLogger(__name__)

RECONNECT_SECONDS = 1.0
QUEUE_SIZE = 200
# Missed announcements: the browser reloads what it shows instead of applying each one.
RESYNC: dict[str, Any] = {"kind": "resync", "conversations": []}


class Realtime:
    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._listeners: dict[int, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)
        self.connected = asyncio.Event()

    async def run(self) -> None:
        """Listen until cancelled, reconnecting when the database goes away."""
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                logger.warning("realtime: lost the database (%s); reconnecting", error)
            self.connected.clear()
            self._tell_everyone(RESYNC)
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _listen(self) -> None:
        async with await psycopg.AsyncConnection.connect(
            self._conninfo, autocommit=True
        ) as connection:
            await connection.execute(f"LISTEN {REALTIME_CHANNEL}")
            self.connected.set()
            async for notification in connection.notifies():
                self._deliver(notification.payload)

    def _deliver(self, payload: str) -> None:
        try:
            announced = json.loads(payload)
            account_id = int(announced["account"])
        except (ValueError, KeyError, TypeError):
            logger.warning("realtime: unreadable announcement %r", payload[:200])
            return
        update = {name: value for name, value in announced.items() if name != "account"}
        for queue in list(self._listeners.get(account_id, ())):
            _offer(queue, update)

    def _tell_everyone(self, update: dict[str, Any]) -> None:
        for listeners in self._listeners.values():
            for queue in list(listeners):
                _offer(queue, update)

    @contextlib.contextmanager
    def listening(self, account_id: int) -> Iterator[asyncio.Queue[dict[str, Any]]]:
        """A queue of the account's updates for as long as the block runs."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        self._listeners[account_id].add(queue)
        try:
            yield queue
        finally:
            self._listeners[account_id].discard(queue)
            if not self._listeners[account_id]:
                del self._listeners[account_id]


def _offer(queue: asyncio.Queue[dict[str, Any]], update: dict[str, Any]) -> None:
    """Give the browser the update; one too slow to keep up gets a resync instead."""
    try:
        queue.put_nowait(update)
    except asyncio.QueueFull:
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(RESYNC)


async def event_stream(
    queue: asyncio.Queue[dict[str, Any]],
    keepalive: float,
    still_signed_in: Callable[[], Awaitable[bool]],
) -> AsyncIterator[str]:
    """Server-sent events from the queue, with a comment every `keepalive` seconds so that
    proxies keep the connection and a closed browser is noticed. It runs until the browser
    leaves (the response stops it then) or its session ends (signed out, expired, password
    reset): checked at every keepalive."""
    yield "retry: 2000\n\n"
    while True:
        try:
            update = await asyncio.wait_for(queue.get(), keepalive)
        except TimeoutError:
            if not await still_signed_in():
                return
            yield ": keepalive\n\n"
            continue
        yield f"event: {update['kind']}\ndata: {json.dumps(update)}\n\n"
