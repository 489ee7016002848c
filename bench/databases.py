"""The databases a benchmark runs on: a fresh embedded PostgreSQL, or a fresh database on a
server, each removed afterwards."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from allo.db.embedded import EmbeddedPostgres
from allo.db.engine import libpq_url


@dataclass
class Target:
    name: str
    url: str
    postgres: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def embedded_database() -> Iterator[Target]:
    folder = Path(tempfile.mkdtemp(prefix="allo-b-", dir="/tmp"))
    server: EmbeddedPostgres | None = None
    try:
        server = EmbeddedPostgres(folder)
        yield Target("embedded", server.url)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def server_database(server_url: str) -> Iterator[Target]:
    name = f"allo_bench_{secrets.token_hex(4)}"
    admin = libpq_url(server_url)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = make_url(admin).set(database=name).render_as_string(hide_password=False)
        yield Target("server", url)
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
