from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from allo.channels.models import CHANNEL_KINDS
from allo.conversations import service as conversations
from allo.conversations.models import STATUSES
from allo.conversations.schemas import (
    ConversationOut,
    ConversationPage,
    MessageOut,
    MessagePage,
    StatusIn,
)
from allo.jobs import defer_routing
from allo.web.auth import Owner
from allo.web.errors import ApiError
from allo.web.state import State

router = APIRouter(prefix="/api/v1/conversations", tags=["conversations"])

Limit = Annotated[int, Query(ge=1, le=200)]


def _one_of(value: str | None, allowed: tuple[str, ...], field: str) -> None:
    if value is not None and value not in allowed:
        raise ApiError(422, "invalid", f"one of {', '.join(allowed)}", field)


@router.get("", response_model=ConversationPage, summary="List conversations")
async def list_conversations(
    owner: Owner,
    state: State,
    status: str | None = None,
    channel: str | None = None,
    assignee_id: Annotated[
        str | None, Query(description="A user id, or `none` for unassigned.")
    ] = None,
    label: str | None = None,
    contact_id: int | None = None,
    q: Annotated[str | None, Query(min_length=2, max_length=200, description="Text search")] = None,
    since: Annotated[datetime | None, Query(description="Last activity at or after")] = None,
    until: Annotated[datetime | None, Query(description="Last activity before")] = None,
    limit: Limit = 50,
    cursor: str | None = None,
) -> ConversationPage:
    """Most recent activity first. Pass `next_cursor` back as `cursor` for the next page."""
    _one_of(status, STATUSES, "status")
    _one_of(channel, CHANNEL_KINDS, "channel")
    unassigned = assignee_id == "none"
    if assignee_id is not None and not unassigned and not assignee_id.isdigit():
        raise ApiError(422, "invalid", "a user id or `none`", "assignee_id")
    filters = conversations.ConversationFilters(
        status=status,
        channel=channel,
        assignee_id=int(assignee_id) if assignee_id and not unassigned else None,
        unassigned=unassigned,
        label=label,
        contact_id=contact_id,
        text=q,
        since=since,
        until=until,
    )
    try:
        async with state.db.sessions() as session:
            rows, next_cursor = await conversations.list_conversations(
                session, owner.account_id, filters, limit, cursor
            )
    except conversations.BadCursor as error:
        raise ApiError(422, "invalid", str(error), "cursor") from None
    return ConversationPage(
        conversations=[ConversationOut.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.get("/{conversation_id}", response_model=ConversationOut, summary="One conversation")
async def get_conversation(conversation_id: int, owner: Owner, state: State) -> ConversationOut:
    async with state.db.sessions() as session:
        found = await conversations.get_conversation(session, owner.account_id, conversation_id)
    if found is None:
        raise ApiError(404, "not_found", f"no conversation {conversation_id} in this account")
    return ConversationOut.model_validate(found)


@router.get("/{conversation_id}/messages", response_model=MessagePage, summary="Its messages")
async def list_messages(
    conversation_id: int, owner: Owner, state: State, limit: Limit = 100, cursor: str | None = None
) -> MessagePage:
    """Oldest first, as the thread is read."""
    try:
        async with state.db.sessions() as session:
            if (
                await conversations.get_conversation(session, owner.account_id, conversation_id)
                is None
            ):
                raise ApiError(
                    404, "not_found", f"no conversation {conversation_id} in this account"
                )
            rows, next_cursor = await conversations.list_messages(
                session, owner.account_id, conversation_id, limit, cursor
            )
    except conversations.BadCursor as error:
        raise ApiError(422, "invalid", str(error), "cursor") from None
    return MessagePage(
        messages=[MessageOut.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.post(
    "/{conversation_id}/status",
    response_model=ConversationOut,
    summary="Open, pend, snooze or resolve (the customer waiting needs a reason to resolve)",
)
async def change_status(
    conversation_id: int, body: StatusIn, owner: Owner, state: State
) -> ConversationOut:
    try:
        async with state.db.transaction() as session:
            changed = await conversations.change_status(
                session,
                owner.account_id,
                conversation_id,
                body.status,
                datetime.now(UTC),
                body.reason,
            )
            if changed is None:
                raise ApiError(
                    404, "not_found", f"no conversation {conversation_id} in this account"
                )
            result = ConversationOut.model_validate(changed)
    except conversations.StatusError as error:
        raise ApiError(422, "invalid", str(error), error.field) from None
    await defer_routing()
    return result
