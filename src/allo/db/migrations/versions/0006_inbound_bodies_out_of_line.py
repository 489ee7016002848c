"""Webhook bodies over about 2 KB are kept beside their row, uncompressed.

Marking an event processed rewrites its row; with an X mention's 2.3 KB body in the row, that
rewrote the body too (2.1 KB more WAL an event than the API channel's). Out of line, only the
pointer to it is copied. `EXTERNAL` never compresses, which halved the recording rate when it
did (migration 0005).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE inbound_events ALTER COLUMN raw SET STORAGE EXTERNAL")
    op.execute("ALTER TABLE inbound_events RESET (toast_tuple_target)")


def downgrade() -> None:
    op.execute("ALTER TABLE inbound_events SET (toast_tuple_target = 8160)")
    op.execute("ALTER TABLE inbound_events ALTER COLUMN raw SET STORAGE EXTENDED")
