"""Social and messaging channels: statuses waiting for their message, channel health and
polling cursors, the customer's private id on a conversation, deleted and reacted messages.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Webhook bodies of 2 to 8 KB (an X post carries its author's whole profile) stay in the
    # row, uncompressed: compressing them halved the rate at which they could be recorded.
    op.execute("ALTER TABLE inbound_events SET (toast_tuple_target = 8160)")
    op.create_table(
        "delivery_updates",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("channel_account_id", sa.BigInteger(), nullable=False),
        sa.Column("external_id", sa.String(length=998), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("reaction", sa.String(length=64), nullable=True),
        sa.CheckConstraint(
            "kind IN ('sent', 'delivered', 'read', 'failed', 'deleted', 'reaction')",
            name=op.f("ck_delivery_updates_kind"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_delivery_updates_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["channel_account_id"],
            ["channel_accounts.id"],
            name=op.f("fk_delivery_updates_channel_account_id_channel_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_updates")),
    )
    op.create_index(
        "ix_delivery_updates_message",
        "delivery_updates",
        ["channel_account_id", "external_id"],
        unique=False,
    )
    op.add_column(
        "channel_accounts",
        sa.Column("health", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )
    op.add_column("channel_accounts", sa.Column("fetch_cursor", sa.Text(), nullable=True))
    op.add_column(
        "channel_accounts", sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("conversations", sa.Column("recipient_id", sa.String(length=320), nullable=True))
    op.add_column(
        "conversations", sa.Column("private_since", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("messages", sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("messages", sa.Column("reaction", sa.String(length=64), nullable=True))
    op.create_index(
        "ix_messages_attachments_pending",
        "messages",
        ["id"],
        unique=False,
        postgresql_where=sa.text(
            "direction = 'in' AND attachments @? '$[*] ? ((exists(@.url) || "
            "exists(@.media_id)) && !(exists(@.stored)) && !(exists(@.download_error)))'"
        ),
    )


def downgrade() -> None:
    op.execute("ALTER TABLE inbound_events RESET (toast_tuple_target)")
    op.drop_index("ix_messages_attachments_pending", table_name="messages")
    op.drop_column("messages", "reaction")
    op.drop_column("messages", "deleted_at")
    op.drop_column("conversations", "private_since")
    op.drop_column("conversations", "recipient_id")
    op.drop_column("channel_accounts", "fetched_at")
    op.drop_column("channel_accounts", "fetch_cursor")
    op.drop_column("channel_accounts", "health")
    op.drop_index("ix_delivery_updates_message", table_name="delivery_updates")
    op.drop_table("delivery_updates")
