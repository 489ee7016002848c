"""Routing: teams and agents, SLA policies, clocks and their timers, breaches, escalation.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sla_policies",
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("targets", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "channel_targets",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
        ),
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_sla_policies_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sla_policies")),
        sa.UniqueConstraint("account_id", "name", name=op.f("uq_sla_policies_account_id_name")),
    )
    op.create_index(
        op.f("ix_sla_policies_account_id"), "sla_policies", ["account_id"], unique=False
    )
    op.create_table(
        "agents",
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("presence", sa.String(length=10), server_default="offline", nullable=False),
        sa.Column("presence_changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "capacity", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column(
            "skills",
            postgresql.ARRAY(sa.String(length=100)),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column("last_assigned_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "presence IN ('online', 'away', 'offline')", name=op.f("ck_agents_presence")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_agents_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_agents_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_agents")),
    )
    op.create_index(op.f("ix_agents_account_id"), "agents", ["account_id"], unique=False)
    op.create_table(
        "teams",
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("strategy", sa.String(length=20), server_default="balanced", nullable=False),
        sa.Column("calendar", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("sla_policy_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "inbox_ids",
            postgresql.ARRAY(sa.BigInteger()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column(
            "languages",
            postgresql.ARRAY(sa.String(length=8)),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column("unassign_grace_seconds", sa.Integer(), server_default="300", nullable=False),
        sa.Column(
            "acknowledgements",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
        ),
        sa.Column("last_round_robin_user_id", sa.BigInteger(), nullable=True),
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "strategy IN ('balanced', 'round_robin', 'sticky')", name=op.f("ck_teams_strategy")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_teams_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sla_policy_id"],
            ["sla_policies.id"],
            name=op.f("fk_teams_sla_policy_id_sla_policies"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_teams")),
        sa.UniqueConstraint("account_id", "name", name=op.f("uq_teams_account_id_name")),
    )
    op.create_index(op.f("ix_teams_account_id"), "teams", ["account_id"], unique=False)
    op.create_table(
        "escalation_rules",
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("team_id", sa.BigInteger(), nullable=True),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("before_seconds", sa.Integer(), server_default="0", nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("target_team_id", sa.BigInteger(), nullable=True),
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "action IN ('notify', 'raise_priority', 'reassign', 'move_team')",
            name=op.f("ck_escalation_rules_action"),
        ),
        sa.CheckConstraint(
            "kind IN ('first_response', 'next_response', 'resolution')",
            name=op.f("ck_escalation_rules_kind"),
        ),
        sa.CheckConstraint("before_seconds >= 0", name=op.f("ck_escalation_rules_before_seconds")),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_escalation_rules_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["target_team_id"],
            ["teams.id"],
            name=op.f("fk_escalation_rules_target_team_id_teams"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_escalation_rules_team_id_teams"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_escalation_rules")),
    )
    op.create_index(
        op.f("ix_escalation_rules_account_id"), "escalation_rules", ["account_id"], unique=False
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=True),
        sa.Column("team_id", sa.BigInteger(), nullable=True),
        sa.Column("conversation_id", sa.BigInteger(), nullable=True),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_notifications_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_notifications_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_notifications_team_id_teams"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_notifications_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    op.create_index(
        "ix_notifications_unread",
        "notifications",
        ["account_id", "user_id", "created_at"],
        unique=False,
    )
    op.create_table(
        "sla_events",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("conversation_id", sa.BigInteger(), nullable=False),
        sa.Column("team_id", sa.BigInteger(), nullable=True),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("event", sa.String(length=20), nullable=False),
        sa.Column("clock_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "details", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.CheckConstraint(
            "event IN ('breached', 'warned', 'escalated')", name=op.f("ck_sla_events_event")
        ),
        sa.CheckConstraint(
            "kind IN ('first_response', 'next_response', 'resolution')",
            name=op.f("ck_sla_events_kind"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_sla_events_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_sla_events_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sla_events")),
    )
    op.create_index("ix_sla_events_account_at", "sla_events", ["account_id", "at"], unique=False)
    op.create_index(
        op.f("ix_sla_events_conversation_id"), "sla_events", ["conversation_id"], unique=False
    )
    op.create_index(
        "uq_sla_events_breach",
        "sla_events",
        ["conversation_id", "kind", "clock_started_at"],
        unique=True,
        postgresql_where=sa.text("event = 'breached'"),
    )
    op.create_table(
        "team_members",
        sa.Column("team_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_team_members_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_team_members_team_id_teams"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_team_members_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("team_id", "user_id", name=op.f("pk_team_members")),
    )
    op.create_index(op.f("ix_team_members_user_id"), "team_members", ["user_id"], unique=False)
    op.create_table(
        "sla_timers",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("conversation_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("action", sa.String(length=10), nullable=False),
        sa.Column("rule_id", sa.BigInteger(), nullable=True),
        sa.Column("clock_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("action IN ('warn', 'breach')", name=op.f("ck_sla_timers_action")),
        sa.CheckConstraint(
            "kind IN ('first_response', 'next_response', 'resolution')",
            name=op.f("ck_sla_timers_kind"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_sla_timers_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_sla_timers_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["rule_id"],
            ["escalation_rules.id"],
            name=op.f("fk_sla_timers_rule_id_escalation_rules"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sla_timers")),
    )
    op.create_index(
        op.f("ix_sla_timers_conversation_id"), "sla_timers", ["conversation_id"], unique=False
    )
    op.create_index(
        "ix_sla_timers_pending",
        "sla_timers",
        ["fires_at"],
        unique=False,
        postgresql_where=sa.text("done_at IS NULL"),
    )
    op.add_column(
        "conversations",
        sa.Column("first_response_due_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "conversations",
        sa.Column("next_response_due_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "conversations", sa.Column("resolution_due_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "conversations", sa.Column("sla_paused_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "conversations",
        sa.Column("sla_paused_seconds", sa.Integer(), server_default="0", nullable=False),
    )
    op.add_column(
        "conversations", sa.Column("routed_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "conversations", sa.Column("unanswered_reason", sa.String(length=40), nullable=True)
    )
    op.add_column(
        "conversations", sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "conversations", sa.Column("response_due_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "conversations", sa.Column("queue_deadline", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "conversations",
        sa.Column("waiting_triage", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )
    op.create_index(
        "ix_conversations_assignee", "conversations", ["assignee_id", "status"], unique=False
    )
    op.create_index(
        "ix_conversations_team_overdue",
        "conversations",
        ["team_id", "response_due_at"],
        unique=False,
        postgresql_where=sa.text(
            "status = 'open' AND assignee_id IS NULL AND response_due_at IS NOT NULL"
        ),
    )
    op.create_index(
        "ix_conversations_team_queue",
        "conversations",
        ["team_id", "queue_deadline"],
        unique=False,
        postgresql_where=sa.text(
            "status = 'open' AND assignee_id IS NULL AND response_due_at IS NOT NULL"
        ),
    )
    op.create_index(
        "ix_conversations_team_waiting",
        "conversations",
        ["team_id", "status", "waiting_since"],
        unique=False,
    )
    op.create_index(
        "ix_conversations_unrouted",
        "conversations",
        ["id"],
        unique=False,
        postgresql_where=sa.text("routed_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_conversations_unrouted",
        table_name="conversations",
        postgresql_where=sa.text("routed_at IS NULL"),
    )
    op.drop_index("ix_conversations_team_waiting", table_name="conversations")
    op.drop_index(
        "ix_conversations_team_queue",
        table_name="conversations",
        postgresql_where=sa.text(
            "status = 'open' AND assignee_id IS NULL AND response_due_at IS NOT NULL"
        ),
    )
    op.drop_index(
        "ix_conversations_team_overdue",
        table_name="conversations",
        postgresql_where=sa.text(
            "status = 'open' AND assignee_id IS NULL AND response_due_at IS NOT NULL"
        ),
    )
    op.drop_index("ix_conversations_assignee", table_name="conversations")
    op.drop_column("conversations", "waiting_triage")
    op.drop_column("conversations", "queue_deadline")
    op.drop_column("conversations", "response_due_at")
    op.drop_column("conversations", "acknowledged_at")
    op.drop_column("conversations", "unanswered_reason")
    op.drop_column("conversations", "routed_at")
    op.drop_column("conversations", "sla_paused_seconds")
    op.drop_column("conversations", "sla_paused_at")
    op.drop_column("conversations", "resolution_due_at")
    op.drop_column("conversations", "next_response_due_at")
    op.drop_column("conversations", "first_response_due_at")
    op.drop_index(
        "ix_sla_timers_pending",
        table_name="sla_timers",
        postgresql_where=sa.text("done_at IS NULL"),
    )
    op.drop_index(op.f("ix_sla_timers_conversation_id"), table_name="sla_timers")
    op.drop_table("sla_timers")
    op.drop_index(op.f("ix_team_members_user_id"), table_name="team_members")
    op.drop_table("team_members")
    op.drop_index(
        "uq_sla_events_breach",
        table_name="sla_events",
        postgresql_where=sa.text("event = 'breached'"),
    )
    op.drop_index(op.f("ix_sla_events_conversation_id"), table_name="sla_events")
    op.drop_index("ix_sla_events_account_at", table_name="sla_events")
    op.drop_table("sla_events")
    op.drop_index("ix_notifications_unread", table_name="notifications")
    op.drop_table("notifications")
    op.drop_index(op.f("ix_escalation_rules_account_id"), table_name="escalation_rules")
    op.drop_table("escalation_rules")
    op.drop_index(op.f("ix_teams_account_id"), table_name="teams")
    op.drop_table("teams")
    op.drop_index(op.f("ix_agents_account_id"), table_name="agents")
    op.drop_table("agents")
    op.drop_index(op.f("ix_sla_policies_account_id"), table_name="sla_policies")
    op.drop_table("sla_policies")
