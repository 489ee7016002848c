"""The `allo` command, run for real as a subprocess against the test database."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from allo.accounts import service as accounts
from allo.accounts.models import User
from allo.channels import service as channels
from allo.db import migrate
from allo.db.engine import Database, libpq_url
from allo.intake import service as intake
from allo.settings import Settings
from tests.conftest import ALLO, RunAllo, allo, auth, process

BOX = re.compile(r"[│╭╮╰╯─]")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def flat(text: str) -> str:
    """Output without the boxes and line wrapping of rich, so messages read on one line."""
    return " ".join(BOX.sub(" ", text).split())


def rows(url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq_url(url)) as connection:
        return connection.execute(statement, params or None).fetchall()


def create_account(run_allo: RunAllo, name: str = "Velia") -> int:
    result = run_allo("account", "create", name)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip())


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(ALLO), "--help"],
        env={k: v for k, v in os.environ.items() if not k.startswith("ALLO_")} | {"COLUMNS": "250"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    listed = set(re.findall(r"^\W*(\w+) ", result.stdout, flags=re.MULTILINE))
    for command in ("serve", "worker", "demo", "db", "user", "import", "account", "token"):
        assert command in listed, result.stdout


def test_account_create_prints_the_new_account_id(run_allo: RunAllo, database_url: str) -> None:
    account_id = create_account(run_allo, "Velia Télécom")
    assert rows(database_url, "SELECT id, name FROM accounts") == [(account_id, "Velia Télécom")]


def test_user_create_prints_a_generated_password_stored_only_as_an_argon2_hash(
    run_allo: RunAllo, database_url: str
) -> None:
    account_id = create_account(run_allo)
    result = run_allo(
        "user", "create", "--account", str(account_id),
        "--email", "Camille@Velia.example", "--name", "Camille", "--role", "admin",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    printed = re.fullmatch(
        r"user (\d+) Camille@Velia\.example password: (\S+)", result.stdout.strip()
    )
    assert printed, result.stdout
    user_id, password = int(printed[1]), printed[2]
    assert len(password) >= 12
    [(found_id, email, role, password_hash)] = rows(
        database_url,
        "SELECT id, email, role, password_hash FROM users WHERE account_id = %s",
        account_id,
    )
    assert (found_id, email, role) == (user_id, "camille@velia.example", "admin")
    assert password_hash.startswith("$argon2id$")
    assert password not in password_hash
    assert accounts.password_matches(User(password_hash=password_hash), password)
    assert not accounts.password_matches(User(password_hash=password_hash), password + "x")


def test_user_create_with_a_chosen_password_does_not_print_it(
    run_allo: RunAllo, database_url: str
) -> None:
    account_id = create_account(run_allo)
    result = run_allo(
        "user", "create", "--account", str(account_id), "--email", "agent@velia.example",
        "--name", "Agent", "--password", "correct horse battery",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "correct horse battery" not in result.stdout
    assert "password" not in result.stdout
    [(role, password_hash)] = rows(database_url, "SELECT role, password_hash FROM users")
    assert role == "agent"
    assert accounts.password_matches(User(password_hash=password_hash), "correct horse battery")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--role", "boss"), "role: one of admin, supervisor, agent"),
        (("--password", "short"), "password: at least 8 characters"),
    ],
    ids=["bad-role", "short-password"],
)
def test_user_create_refuses_a_bad_role_or_short_password_and_creates_nothing(
    run_allo: RunAllo, database_url: str, extra: tuple[str, ...], message: str
) -> None:
    account_id = create_account(run_allo)
    result = run_allo(
        "user", "create", "--account", str(account_id), "--email", "x@velia.example",
        "--name", "X", *extra,
    )  # fmt: skip
    assert result.returncode != 0
    assert message in flat(result.stderr)
    assert "Traceback" not in result.stderr
    assert rows(database_url, "SELECT count(*) FROM users") == [(0,)]


async def test_token_create_prints_a_token_that_authenticates_against_the_api(
    run_allo: RunAllo, client: httpx.AsyncClient, database_url: str
) -> None:
    account_id = create_account(run_allo)
    result = run_allo("token", "create", "--account", str(account_id), "--name", "zapier")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert re.fullmatch(r"allo_[A-Za-z0-9_-]{40,}", token), token
    response = await client.get("/api/v1/inboxes", headers=auth(token))
    assert response.status_code == 200, response.text
    assert response.json() == []
    altered = token[:-1] + ("A" if token[-1] != "A" else "B")
    forged = await client.get("/api/v1/inboxes", headers=auth(altered))
    assert forged.status_code == 401
    [(name, digest)] = rows(database_url, "SELECT name, token_sha256 FROM api_tokens")
    assert name == "zapier" and token not in digest and digest == accounts.token_digest(token)


def test_inbox_create_prints_the_new_inbox_id(run_allo: RunAllo, database_url: str) -> None:
    account_id = create_account(run_allo)
    result = run_allo("inbox", "create", "--account", str(account_id), "--name", "Website form")
    assert result.returncode == 0, result.stderr[-2000:]
    inbox_id = int(result.stdout.strip())
    assert rows(database_url, "SELECT id, account_id, kind, name FROM channel_accounts") == [
        (inbox_id, account_id, "api", "Website form")
    ]


async def record_failing_event(db: Database, settings: Settings) -> int:
    """An API event whose body is not JSON, processed once: it failed and kept its error."""
    async with db.transaction() as session:
        account = await accounts.create_account(session, "Velia")
        inbox = await channels.create_channel_account(session, account.id, "api", "API", "api-1")
        recorded = await intake.record(
            session,
            intake.NewEvent(
                account_id=account.id,
                channel_account_id=inbox.id,
                parser="api",
                external_id="broken-1",
                raw=b"not json",
            ),
        )
    report = await process(db, settings)
    assert (report.processed, report.failed) == (0, 1)
    return recorded.event_id


def event_row(database_url: str, event_id: int) -> tuple[Any, ...]:
    [row] = rows(
        database_url, "SELECT status, attempts, error FROM inbound_events WHERE id = %s", event_id
    )
    return row


async def test_intake_list_shows_failed_events_with_their_error(
    run_allo: RunAllo, db: Database, settings: Settings, database_url: str
) -> None:
    event_id = await record_failing_event(db, settings)
    _, _, error = event_row(database_url, event_id)
    assert error and "Invalid JSON" in error

    failed = run_allo("intake", "list", "--status", "failed")
    assert failed.returncode == 0, failed.stderr
    assert failed.stdout.startswith("events: failed 1\n")
    assert f"\n{event_id}\t" in failed.stdout
    fields = failed.stdout.split("\n", 1)[1].split("\t", 5)
    assert fields[0] == str(event_id)
    assert fields[2:5] == ["api", "broken-1", "failed"]
    assert fields[5].strip() == " ".join(error.split())

    default = run_allo("intake", "list")
    assert default.stdout == failed.stdout  # failed events are the default listing

    processed = run_allo("intake", "list", "--status", "processed")
    assert processed.returncode == 0
    assert processed.stdout.splitlines() == ["events: failed 1"]


async def test_intake_list_prints_one_line_per_event(
    run_allo: RunAllo, db: Database, settings: Settings
) -> None:
    event_id = await record_failing_event(db, settings)
    result = run_allo("intake", "list", "--status", "failed")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2, lines
    assert lines[1].startswith(f"{event_id}\t") and lines[1].count("\t") == 5


async def test_intake_retry_requeues_failed_events_and_processes_them_again(
    run_allo: RunAllo, db: Database, settings: Settings, database_url: str
) -> None:
    event_id = await record_failing_event(db, settings)
    assert event_row(database_url, event_id)[:2] == ("failed", 1)

    result = run_allo("intake", "retry")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "requeued 1; processed 0, failed 1, skipped 0"
    status, attempts, error = event_row(database_url, event_id)
    assert (status, attempts) == ("failed", 2)
    assert error and "JSON" in error.upper()


def test_db_upgrade_on_a_migrated_database_is_a_no_op(run_allo: RunAllo, database_url: str) -> None:
    def schema() -> list[tuple[Any, ...]]:
        return rows(
            database_url,
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY 1, 2",
        )

    before = schema()
    result = run_allo("db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"database at {migrate.head_revision()}"
    assert schema() == before
    assert rows(database_url, "SELECT version_num FROM alembic_version") == [
        (migrate.head_revision(),)
    ]


def test_db_upgrade_migrates_an_empty_database(empty_database_url: str, tmp_path: Path) -> None:
    result = allo(empty_database_url, tmp_path, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"database at {migrate.head_revision()}"
    assert migrate.current_revision(empty_database_url) == migrate.head_revision()


@pytest.mark.parametrize(
    "command",
    [("serve", "--port", "{port}"), ("worker",), ("account", "create", "Velia")],
    ids=["serve", "worker", "account-create"],
)
def test_commands_refuse_a_database_that_is_not_migrated(
    empty_database_url: str, tmp_path: Path, command: tuple[str, ...]
) -> None:
    args = [part.format(port=free_port()) for part in command]
    result = allo(empty_database_url, tmp_path, *args, timeout=60)
    assert result.returncode != 0
    message = flat(result.stderr)
    assert "run `allo db upgrade`" in message, result.stderr
    assert f"Allo needs {migrate.head_revision()}" in message
    assert "Traceback" not in result.stderr
    # Nothing was created: not migrated behind the user's back, no account written.
    assert migrate.current_revision(empty_database_url) is None
    assert rows(
        empty_database_url,
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    ) == [(0,)]
