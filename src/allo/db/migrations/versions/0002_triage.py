"""Triage: what each customer message says, and each account's own intents.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ACCOUNT = ["accounts.id"]


def upgrade() -> None:
    op.add_column("messages", sa.Column("language", sa.String(length=8), nullable=True))
    op.add_column("messages", sa.Column("triage", postgresql.JSONB(), nullable=True))
    op.add_column("messages", sa.Column("triaged_at", sa.DateTime(timezone=True), nullable=True))
    # Messages stored before triage existed are read too: the queue starts with them.
    op.create_index(
        "ix_messages_untriaged",
        "messages",
        ["id"],
        unique=False,
        postgresql_where=sa.text("triaged_at IS NULL AND direction = 'in'"),
    )
    op.create_table(
        "intent_labels",
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "examples", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False
        ),
        *_key_and_time(),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ACCOUNT,
            name=op.f("fk_intent_labels_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_intent_labels")),
        sa.UniqueConstraint("account_id", "name", name=op.f("uq_intent_labels_account_id_name")),
    )
    op.create_index(op.f("ix_intent_labels_account_id"), "intent_labels", ["account_id"])
    op.create_table(
        "intent_model_versions",
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("labels", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("examples", sa.Integer(), nullable=False),
        sa.Column("corrections", sa.Integer(), server_default="0", nullable=False),
        sa.Column("metrics", postgresql.JSONB(), server_default="{}", nullable=False),
        sa.Column("artifact", sa.LargeBinary(), nullable=False),
        sa.Column("trained_at", sa.DateTime(timezone=True), nullable=False),
        *_key_and_time(),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ACCOUNT,
            name=op.f("fk_intent_model_versions_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_intent_model_versions")),
        sa.UniqueConstraint(
            "account_id", "version", name=op.f("uq_intent_model_versions_account_id_version")
        ),
    )
    op.create_index(
        "uq_intent_model_versions_active",
        "intent_model_versions",
        ["account_id"],
        unique=True,
        postgresql_where=sa.text("active"),
    )
    op.create_table(
        "triage_corrections",
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=False),
        sa.Column("field", sa.String(length=20), nullable=False),
        sa.Column("previous", postgresql.JSONB(), nullable=True),
        sa.Column("value", postgresql.JSONB(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=True),
        *_key_and_time(),
        sa.CheckConstraint(
            "field IN ('intent', 'sentiment', 'spam', 'offensive', 'language', 'needs_answer')",
            name=op.f("ck_triage_corrections_field"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ACCOUNT,
            name=op.f("fk_triage_corrections_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_triage_corrections_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_triage_corrections_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_triage_corrections")),
    )
    op.create_index(
        "ix_triage_corrections_account_field", "triage_corrections", ["account_id", "field"]
    )
    op.create_index(op.f("ix_triage_corrections_message_id"), "triage_corrections", ["message_id"])


def _key_and_time() -> list[sa.Column[object]]:
    return [
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
    ]


def downgrade() -> None:
    op.drop_table("triage_corrections")
    op.drop_table("intent_model_versions")
    op.drop_table("intent_labels")
    op.drop_index("ix_messages_untriaged", table_name="messages")
    op.drop_column("messages", "triaged_at")
    op.drop_column("messages", "triage")
    op.drop_column("messages", "language")
