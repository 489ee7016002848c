from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from allo.triage.schemas import Assessment


class ConversationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    channel_account_id: int
    channel: str
    visibility: str
    contact_id: int
    subject: str | None
    status: str
    priority: int
    assignee_id: int | None
    team_id: int | None
    language: str | None
    labels: list[str]
    waiting_since: datetime | None
    first_response_at: datetime | None
    last_message_at: datetime
    resolved_at: datetime | None
    unanswered_reason: str | None
    first_response_due_at: datetime | None
    next_response_due_at: datetime | None
    resolution_due_at: datetime | None
    created_at: datetime


class StatusIn(BaseModel):
    status: str = Field(description="open, pending, snoozed or resolved")
    reason: str | None = Field(
        default=None,
        description="Required to resolve a conversation where the customer spoke last: spam, "
        "no_answer_needed or handled_elsewhere",
    )


class DetailsIn(BaseModel):
    labels: list[str] | None = Field(
        default=None, max_length=20, description="The whole set of labels (replaces it)"
    )
    priority: int | None = Field(
        default=None, description="-1 low, 0 normal, 1 high, 2 urgent", ge=-1, le=2
    )


class MessageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    conversation_id: int
    direction: str
    visibility: str
    external_id: str | None
    reply_to_id: int | None
    reply_to_external_id: str | None
    text: str
    html: str | None
    attachments: list[dict[str, Any]]
    author_contact_id: int | None
    author_user_id: int | None
    author_name: str | None
    sent_at: datetime
    received_at: datetime
    delivery_status: str
    language: str | None = Field(description="What triage detected (ISO 639-1)")
    triage: Assessment | None = Field(
        description="What triage read in a customer message; null until read (or if it failed)"
    )


class ConversationPage(BaseModel):
    conversations: list[ConversationOut]
    next_cursor: str | None


class MessagePage(BaseModel):
    messages: list[MessageOut]
    next_cursor: str | None
