"""Engine and sessions: SQLAlchemy 2 async over psycopg 3."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


def sqlalchemy_url(url: str) -> str:
    """The SQLAlchemy form of a PostgreSQL URL, always with the psycopg 3 driver."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"Allo stores everything in PostgreSQL, not {parsed.get_backend_name()}")
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    """The plain libpq form of a PostgreSQL URL (what psycopg and Procrastinate take)."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass
class Database:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction, committed on success, rolled back on error."""
        async with self.sessions() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()


# Statements are prepared (psycopg does after five runs) but always planned for their values: a
# generic plan, fixed while a table was small or its statistics stale, turned key lookups into
# scans of the whole table (`= ANY` over 500 keys checked row by row). JIT compilation is off:
# on a server built with it, the inbox's search was planned "expensive" and spent 360 of its
# 400 ms compiling what then ran in 40. See docs/decisions.md.
PLANNER_OPTIONS = {"options": "-c plan_cache_mode=force_custom_plan -c jit=off"}


def connect(url: str, pool_size: int = 10) -> Database:
    # Every table must be known before the first query, whichever domain a process imports.
    import allo.db.schema  # noqa: F401

    # No overflow: a burst waits for a pooled connection, which is far cheaper than opening
    # one (a backend start) per request. No pre-ping: a connection lost to a database restart
    # fails one request with 503 and is replaced, instead of costing a round trip every time.
    engine = create_async_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=0,
        pool_recycle=1800,
        connect_args=PLANNER_OPTIONS,
    )
    return Database(
        engine=engine,
        sessions=async_sessionmaker(engine, expire_on_commit=False),
    )


async def driver_connection(
    session: AsyncSession | AsyncConnection,
) -> psycopg.AsyncConnection[Any]:
    """The psycopg connection under a session or connection, in its current transaction."""
    connection = session if isinstance(session, AsyncConnection) else await session.connection()
    pooled = await connection.get_raw_connection()
    driver = pooled.driver_connection
    assert isinstance(driver, psycopg.AsyncConnection)
    return driver


@asynccontextmanager
async def one_off_session(url: str) -> AsyncIterator[AsyncSession]:
    """A single committed transaction on a short-lived engine (for commands)."""
    database = connect(url, pool_size=1)
    try:
        async with database.transaction() as session:
            yield session
    finally:
        await database.dispose()


def is_transient(error: BaseException) -> bool:
    """Errors of the database itself (connection lost, deadlock): retry the batch, not the event."""
    if isinstance(error, OperationalError | InterfaceError):
        return True
    return isinstance(error, DBAPIError) and bool(error.connection_invalidated)
