"""Alembic environment: migrations run synchronously over psycopg 3."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from allo.db.schema import metadata

config = context.config


def run_migrations() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata, compare_type=True)
        with context.begin_transaction():
            # Two processes starting on one database must not migrate it twice at once.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(4242001)")
            context.run_migrations()
    engine.dispose()


run_migrations()
