"""Alembic migrations on a fresh, empty database of the test server (embedded or configured)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from allo.db import migrate
from allo.db.engine import libpq_url, sqlalchemy_url
from allo.db.schema import metadata

TENANT_TABLES = sorted(name for name in metadata.tables if name != "accounts")


def query(url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq_url(url)) as connection:
        return connection.execute(statement, params or None).fetchall()


def tables(url: str) -> set[str]:
    rows = query(
        url,
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    return {name for (name,) in rows}


def schema_fingerprint(url: str) -> list[tuple[Any, ...]]:
    """Every column, index and constraint of the public schema, as comparable rows."""
    columns = query(
        url,
        "SELECT table_name, column_name, data_type, is_nullable, column_default "
        "FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2",
    )
    indexes = query(
        url,
        "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
        "ORDER BY 1, 2",
    )
    constraints = query(
        url,
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2",
    )
    return [*columns, *indexes, *constraints]


def test_a_fresh_database_has_no_revision_until_upgraded(empty_database_url: str) -> None:
    assert migrate.current_revision(empty_database_url) is None
    assert tables(empty_database_url) == set()
    migrate.upgrade(empty_database_url)
    head = migrate.head_revision()
    assert head is not None
    assert migrate.current_revision(empty_database_url) == head


def test_upgrade_creates_every_table_of_the_models_and_the_job_queue(
    empty_database_url: str,
) -> None:
    migrate.upgrade(empty_database_url)
    created = tables(empty_database_url)
    expected = set(metadata.tables) | {"procrastinate_jobs", "alembic_version"}
    assert expected <= created, f"missing: {sorted(expected - created)}"


def test_the_migrated_schema_matches_the_models(empty_database_url: str) -> None:
    migrate.upgrade(empty_database_url)

    def ours(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", "")
        return not (table or "").startswith(("procrastinate_", "alembic_"))

    engine = create_engine(sqlalchemy_url(empty_database_url))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={
                    "compare_type": True,
                    "compare_server_default": True,
                    "include_object": ours,
                },
            )
            differences = compare_metadata(context, metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_a_second_upgrade_changes_nothing(empty_database_url: str) -> None:
    migrate.upgrade(empty_database_url)
    before = schema_fingerprint(empty_database_url)
    revision = migrate.current_revision(empty_database_url)
    migrate.upgrade(empty_database_url)
    assert migrate.current_revision(empty_database_url) == revision
    assert schema_fingerprint(empty_database_url) == before
    assert query(empty_database_url, "SELECT count(*) FROM alembic_version") == [(1,)]


def test_large_webhook_bodies_are_kept_out_of_the_row_uncompressed(
    empty_database_url: str,
) -> None:
    migrate.upgrade(empty_database_url)
    [(storage, options, toast)] = query(
        empty_database_url,
        "SELECT a.attstorage, c.reloptions, c.reltoastrelid::regclass::text FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid "
        "WHERE c.relname = 'inbound_events' AND a.attname = 'raw'",
    )
    assert storage == "e"  # EXTERNAL: out of line, never compressed
    assert not any("toast_tuple_target" in o for o in options or [])
    account = query(empty_database_url, "INSERT INTO accounts (name) VALUES ('a') RETURNING id")
    channel = query(
        empty_database_url,
        "INSERT INTO channel_accounts (account_id, kind, name, external_id) "
        "VALUES (%s, 'x', 'x', '1') RETURNING id",
        account[0][0],
    )
    small, large = b'{"n": 1}', bytes(range(256)) * 10
    for n, body in enumerate((small, large)):
        query(
            empty_database_url,
            "INSERT INTO inbound_events (account_id, channel_account_id, parser, external_id, raw) "
            "VALUES (%s, %s, 'x', %s, %s) RETURNING id",
            account[0][0],
            channel[0][0],
            str(n),
            body,
        )
    query(empty_database_url, "UPDATE inbound_events SET status = 'processed' RETURNING id")
    stored = query(empty_database_url, "SELECT raw FROM inbound_events ORDER BY external_id")
    assert [bytes(r) for (r,) in stored] == [small, large]
    # Only the large body went beside its row, whole and uncompressed.
    [(chunks, size)] = query(
        empty_database_url, f"SELECT count(DISTINCT chunk_id), sum(length(chunk_data)) FROM {toast}"
    )
    assert (chunks, size) == (1, len(large))


def test_every_tenant_table_has_a_required_account_id_referencing_accounts(
    empty_database_url: str,
) -> None:
    assert TENANT_TABLES, "the models declare tenant tables"
    migrate.upgrade(empty_database_url)
    columns = dict(
        query(
            empty_database_url,
            "SELECT table_name, is_nullable FROM information_schema.columns "
            "WHERE table_schema = 'public' AND column_name = 'account_id'",
        )
    )
    referencing = {
        table
        for (table,) in query(
            empty_database_url,
            "SELECT conrelid::regclass::text FROM pg_constraint "
            "WHERE contype = 'f' AND confrelid = 'accounts'::regclass "
            "AND pg_get_constraintdef(oid) LIKE 'FOREIGN KEY (account_id)%'",
        )
    }
    for table in TENANT_TABLES:
        assert table in columns, f"{table} has no account_id column"
        assert columns[table] == "NO", f"{table}.account_id is nullable"
        assert table in referencing, f"{table}.account_id does not reference accounts"


UPGRADE_WHEN_TOLD = """
import sys
from allo.db import migrate
print("ready", flush=True)
sys.stdin.readline()
migrate.upgrade(sys.argv[1])
print("done", flush=True)
"""


def test_two_processes_upgrading_one_fresh_database_at_once_both_succeed(
    empty_database_url: str, tmp_path: Path
) -> None:
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", UPGRADE_WHEN_TOLD, empty_database_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=tmp_path,
        )
        for _ in range(2)
    ]
    try:
        # Both have imported everything; release them together so the upgrades overlap.
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready"
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        outputs = [process.communicate(timeout=120)[0] for process in processes]
        codes = [process.returncode for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    assert codes == [0, 0], outputs
    assert all("done" in output for output in outputs)
    assert migrate.current_revision(empty_database_url) == migrate.head_revision()
    assert query(empty_database_url, "SELECT count(*) FROM alembic_version") == [(1,)]
    assert set(metadata.tables) <= tables(empty_database_url)
