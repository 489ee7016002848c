"""`allo import`: the Customer Support on Twitter export, through the intake path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from allo.db.engine import libpq_url
from tests.conftest import SHARED

pytestmark = pytest.mark.slow

UNION = SHARED / "data" / "twcs" / "union.csv"
ALLO = str(Path(sys.executable).parent / "allo")


def run_import(database_url: str, *arguments: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLO_")}
    result = subprocess.run(
        [ALLO, "import", str(UNION), *arguments],
        env=env | {"ALLO_DATABASE_URL": database_url, "ALLO_LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_58000_support_tweets_load_once_with_their_threads_and_real_times(
    database_url: str,
) -> None:
    first = run_import(database_url)
    assert "account 1: 58340 rows, 103 brands" in first
    assert "events: 57570 new, 0 already imported" in first
    assert "processed 57452, failed 0, skipped 118" in first
    assert "left out: 770 customer tweets naming no brand, 0 invalid rows" in first

    with psycopg.connect(libpq_url(database_url)) as connection:
        inboxes, kinds = connection.execute(
            "SELECT count(*), array_agg(DISTINCT kind) FROM channel_accounts"
        ).fetchone()
        assert (inboxes, kinds) == (103, ["x"])
        directions = dict(
            connection.execute("SELECT direction, count(*) FROM messages GROUP BY 1").fetchall()
        )
        assert sum(directions.values()) == 57452 and directions["out"] > directions["in"] > 0
        # Tweet 3 (customer 115712 to @sprintcare) was answered by tweet 1 at 22:10:47.
        reply = connection.execute(
            """
            SELECT m.direction, m.author_name, m.sent_at AT TIME ZONE 'UTC', c.id, c.channel,
                   c.first_response_at AT TIME ZONE 'UTC', i.platform_id
            FROM messages m JOIN conversations c ON c.id = m.conversation_id
            JOIN identities i ON i.contact_id = c.contact_id
            WHERE m.external_id = '1'
            """
        ).fetchone()
        assert reply is not None
        direction, author, sent_at, conversation_id, channel, first_response, customer = reply
        assert (direction, author, channel, customer) == ("out", "sprintcare", "x", "115712")
        assert sent_at.isoformat() == "2017-10-31T22:10:47"
        question = connection.execute(
            "SELECT conversation_id FROM messages WHERE external_id = '3'"
        ).fetchone()
        assert question == (conversation_id,)
        assert first_response is not None and first_response.isoformat() <= "2017-10-31T22:10:47"

    again = run_import(database_url, "--account", "1")
    assert "events: 0 new, 57570 already imported" in again
    assert "processed 0, failed 0, skipped 0" in again
    with psycopg.connect(libpq_url(database_url)) as connection:
        assert connection.execute("SELECT count(*) FROM messages").fetchone() == (57452,)
