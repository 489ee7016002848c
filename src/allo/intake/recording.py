"""Recording inbound events: their exact bytes, once per key, committed before the 2xx."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from allo.db.engine import PLANNER_OPTIONS, driver_connection

RECORD_CHUNK = 1000
POOL_TIMEOUT_SECONDS = 5.0

# Many events in one statement: arrays in, the new rows out. Keys already stored (duplicates)
# are looked up afterwards, only when there are some.
_INSERT_EVENTS = """
    INSERT INTO inbound_events
        (account_id, channel_account_id, parser, external_id, raw, content_type, headers)
    SELECT account_id, channel_account_id, parser, external_id, raw, content_type, headers
    FROM unnest(
        %(account_ids)s::bigint[], %(channel_account_ids)s::bigint[], %(parsers)s::text[],
        %(external_ids)s::text[], %(raws)b::bytea[], %(content_types)s::text[],
        %(headers)s::jsonb[]
    ) WITH ORDINALITY AS incoming(account_id, channel_account_id, parser, external_id, raw,
                                  content_type, headers, position)
    ORDER BY position
    ON CONFLICT (channel_account_id, external_id) DO NOTHING
    RETURNING id, channel_account_id, external_id
"""
_STORED_EVENTS = """
    SELECT id, channel_account_id, external_id FROM inbound_events
    WHERE channel_account_id = %s AND external_id = ANY(%s)
"""


@dataclass(frozen=True)
class NewEvent:
    account_id: int
    channel_account_id: int
    parser: str
    external_id: str
    raw: bytes
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> tuple[int, str]:
        return (self.channel_account_id, self.external_id)


@dataclass(frozen=True)
class Recorded:
    event_id: int
    duplicate: bool


async def record(session: AsyncSession | AsyncConnection, event: NewEvent) -> Recorded:
    """Store an event's exact bytes once per (channel account, external id)."""
    return (await record_many(session, [event]))[0]


async def record_many(
    session: AsyncSession | AsyncConnection, new_events: Sequence[NewEvent]
) -> list[Recorded]:
    """`record_events` inside the session's transaction."""
    return await record_events(await driver_connection(session), new_events)


async def record_events(
    connection: psycopg.AsyncConnection[Any], new_events: Sequence[NewEvent]
) -> list[Recorded]:
    """Store many events, each once per key, in chunks of one statement; one result per event.

    The first event with a key that was not stored yet is new; any other event with that key,
    in this call or before it, is a duplicate of the stored one.
    """
    stored: dict[tuple[int, str], Recorded] = {}
    for start in range(0, len(new_events), RECORD_CHUNK):
        chunk = list({e.key: e for e in new_events[start : start + RECORD_CHUNK]}.values())
        chunk = [e for e in chunk if e.key not in stored]
        if chunk:
            stored |= await _record_chunk(connection, chunk)
    results = []
    seen: set[tuple[int, str]] = set()
    for event in new_events:
        first = stored[event.key]
        results.append(first if event.key not in seen else Recorded(first.event_id, True))
        seen.add(event.key)
    return results


async def _record_chunk(
    connection: psycopg.AsyncConnection[Any], chunk: Sequence[NewEvent]
) -> dict[tuple[int, str], Recorded]:
    parameters = {
        "account_ids": [e.account_id for e in chunk],
        "channel_account_ids": [e.channel_account_id for e in chunk],
        "parsers": [e.parser for e in chunk],
        "external_ids": [e.external_id for e in chunk],
        "raws": [e.raw for e in chunk],
        "content_types": [e.content_type for e in chunk],
        "headers": [json.dumps(e.headers) for e in chunk],
    }
    cursor = await connection.execute(_INSERT_EVENTS, parameters)
    stored = {(row[1], row[2]): Recorded(row[0], False) for row in await cursor.fetchall()}
    missing: dict[int, list[str]] = defaultdict(list)
    for event in chunk:
        if event.key not in stored:
            missing[event.channel_account_id].append(event.external_id)
    for channel_account_id, external_ids in missing.items():
        cursor = await connection.execute(_STORED_EVENTS, (channel_account_id, external_ids))
        stored |= {(row[1], row[2]): Recorded(row[0], True) for row in await cursor.fetchall()}
    return stored


class Recorder:
    """Group commit for webhooks: events that concurrent requests record go in together.

    Each request waits for the commit of the statement that holds its event, so nothing is
    acknowledged before it is stored; under load, one INSERT and one commit carry many events
    instead of one each. A statement that fails for one bad event is retried event by event,
    so that only that event's request fails. It talks to PostgreSQL through psycopg directly,
    on its own small pool in autocommit: this is the path every webhook takes.
    """

    def __init__(self, conninfo: str, max_batch: int = RECORD_CHUNK) -> None:
        self._pool = AsyncConnectionPool(
            conninfo,
            min_size=1,
            max_size=2,
            open=False,
            timeout=POOL_TIMEOUT_SECONDS,
            kwargs={"autocommit": True, **PLANNER_OPTIONS},
        )
        self._max_batch = max_batch
        self._waiting: list[tuple[NewEvent, asyncio.Future[Recorded]]] = []
        self._writing: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await self._pool.open()

    async def close(self) -> None:
        await self._pool.close()

    async def record(self, event: NewEvent) -> Recorded:
        future: asyncio.Future[Recorded] = asyncio.get_running_loop().create_future()
        self._waiting.append((event, future))
        if self._writing is None or self._writing.done():
            self._writing = asyncio.create_task(self._write())
        return await future

    async def _write(self) -> None:
        while self._waiting:
            batch = self._waiting[: self._max_batch]
            del self._waiting[: self._max_batch]
            try:
                await self._write_batch(batch)
            except Exception as error:
                if len(batch) == 1 or is_unavailable(error):
                    _settle(batch, error)
                    continue
                for one in batch:
                    try:
                        await self._write_batch([one])
                    except Exception as alone:
                        _settle([one], alone)

    async def _write_batch(self, batch: list[tuple[NewEvent, asyncio.Future[Recorded]]]) -> None:
        async with self._pool.connection() as connection:
            results = await record_events(connection, [event for event, _ in batch])
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


def is_unavailable(error: BaseException) -> bool:
    """The database itself failed (down, restarting, unreachable), not this statement."""
    # psycopg_pool's PoolTimeout is an OperationalError.
    return isinstance(error, psycopg.OperationalError | psycopg.InterfaceError | OSError)


def _settle(batch: list[tuple[NewEvent, asyncio.Future[Recorded]]], error: Exception) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)
