"""Allo's own PostgreSQL runs with the settings intake's latency depends on, old folders too.

These start an embedded server of their own in a temporary folder, whatever the suite's
database is.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from allo.db.embedded import SERVER_SETTINGS, EmbeddedPostgres
from allo.db.engine import libpq_url

pytestmark = pytest.mark.slow


@pytest.fixture
def folder() -> Iterator[Path]:
    # Short path: the server's Unix socket lives in this folder.
    path = Path(tempfile.mkdtemp(prefix="allo-e-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


EXPECTED = {
    "max_wal_size": "4GB",
    "checkpoint_timeout": "15min",
    "wal_compression": "off",
    "wal_init_zero": "off",
}


def settings_in_effect(url: str) -> dict[str, str]:
    """The settings once the server has applied its configuration (a reload is asynchronous:
    a connection opened just after it may still see the old values)."""
    deadline = time.monotonic() + 10
    while True:
        with psycopg.connect(libpq_url(url)) as connection:
            shown = {
                name: str(connection.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
                for name in EXPECTED
            }
        if shown == EXPECTED or time.monotonic() > deadline:
            return shown
        time.sleep(0.1)


def settings_at_start(folder: Path) -> dict[str, str]:
    server = EmbeddedPostgres(folder)
    try:
        return settings_in_effect(server.url)
    finally:
        server.stop()


def test_a_new_server_checkpoints_rarely_and_writes_wal_segments_without_zero_filling(
    folder: Path,
) -> None:
    in_effect = settings_at_start(folder)

    assert in_effect == EXPECTED
    assert set(SERVER_SETTINGS) == set(EXPECTED)


def test_a_data_folder_with_other_settings_gets_allos_at_the_next_start(folder: Path) -> None:
    server = EmbeddedPostgres(folder)
    try:
        with psycopg.connect(libpq_url(server.url), autocommit=True) as connection:
            connection.execute("ALTER SYSTEM SET wal_init_zero = on")
            connection.execute("ALTER SYSTEM SET max_wal_size = '1GB'")
    finally:
        server.stop()

    in_effect = settings_at_start(folder)

    assert in_effect == EXPECTED
