from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from allo import events
from allo.accounts.service import SignedIn
from allo.channels.models import CHANNEL_KINDS
from allo.conversations import service as conversations
from allo.conversations.models import STATUSES, Conversation
from allo.conversations.schemas import (
    ConversationOut,
    ConversationPage,
    DetailsIn,
    MessageOut,
    MessagePage,
    StatusIn,
)
from allo.conversations.service import UNANSWERED_REASONS
from allo.jobs import defer_routing
from allo.replies import rules
from allo.replies import service as replies
from allo.replies.service import new_key
from allo.routing.models import Team
from allo.triage import service as triage
from allo.web.auth import Agent, Owner
from allo.web.errors import ApiError
from allo.web.i18n import render
from allo.web.state import AppState, State

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


def _changed_out(conversation_id: int, changed: Conversation | None) -> ConversationOut:
    if changed is None:
        raise ApiError(404, "not_found", f"no conversation {conversation_id} in this account")
    return ConversationOut.model_validate(changed)


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
            result = _changed_out(conversation_id, changed)
    except conversations.StatusError as error:
        raise ApiError(422, "invalid", str(error), error.field) from None
    await defer_routing()
    return result


@router.patch(
    "/{conversation_id}",
    response_model=ConversationOut,
    summary="Change labels or priority",
)
async def change_details(
    conversation_id: int, body: DetailsIn, owner: Owner, state: State
) -> ConversationOut:
    try:
        async with state.db.transaction() as session:
            changed = await conversations.change_details(
                session, owner.account_id, conversation_id, body.labels, body.priority
            )
            result = _changed_out(conversation_id, changed)
    except conversations.StatusError as error:
        raise ApiError(422, "invalid", str(error), error.field) from None
    await defer_routing()
    return result


# The workspace's pages


async def _refused_change(
    request: Request, state: AppState, agent: SignedIn, conversation_id: int, field: str
) -> HTMLResponse:
    """The conversation page again, saying what was refused."""
    context = await conversation_context(state, agent, conversation_id)
    if context is None:
        return render(request, "not_found.html", agent.language, {"agent": agent}, 404)
    context.update(composer_key=new_key(), status_error=field)
    return render(request, "conversation.html", agent.language, context, 422)


async def _changed_page(
    request: Request, agent: SignedIn, conversation_id: int, changed: Conversation | None
) -> Response:
    if changed is None:
        return render(request, "not_found.html", agent.language, {"agent": agent}, 404)
    await defer_routing()
    return RedirectResponse(f"/conversations/{conversation_id}", status_code=303)


# The inbox's "active within" filter.
SINCE = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}

pages = APIRouter(include_in_schema=False)


def viewer_of(agent: SignedIn) -> conversations.Viewer:
    return conversations.Viewer(user_id=agent.user_id, account_id=agent.account_id, role=agent.role)


def _inbox_filters(request: Request) -> tuple[str, conversations.InboxFilters]:
    """The view and filters of the inbox's query string; unknown values are ignored, as a
    stale bookmark should still open the inbox."""
    asked = request.query_params
    view = asked.get("view", "mine")
    view = view if view in conversations.VIEWS else "mine"
    status = asked.get("status", "open")
    priority = asked.get("priority", "")
    text = asked.get("q", "").strip()
    return view, conversations.InboxFilters(
        status=status if status in STATUSES else None,
        channel=asked.get("channel") if asked.get("channel") in CHANNEL_KINDS else None,
        label=asked.get("label") or None,
        language=asked.get("language") or None,
        sentiment=asked.get("sentiment") or None,
        intent=asked.get("intent") or None,
        priority=int(priority) if re.fullmatch(r"-?[0-2]", priority) else None,
        text=text[:200] if len(text) >= 2 else None,
        since=datetime.now(UTC) - SINCE[asked["since"]] if asked.get("since") in SINCE else None,
    )


async def _inbox_context(request: Request, agent: SignedIn, state: AppState) -> dict[str, Any]:
    view, filters = _inbox_filters(request)
    now = datetime.now(UTC)
    async with state.db.sessions() as session:
        rows = await conversations.inbox(session, viewer_of(agent), view, filters, now)
    return {
        "agent": agent,
        "section": "inbox",
        "view": view,
        "views": conversations.VIEWS,
        "filters": filters,
        "rows": rows,
        "now": now,
        "channels": CHANNEL_KINDS,
        "statuses": STATUSES,
        "query": request.url.query,
    }


@pages.get("/inbox", response_class=HTMLResponse)
async def inbox_page(request: Request, agent: Agent, state: State) -> HTMLResponse:
    context = await _inbox_context(request, agent, state)
    return render(request, "inbox.html", agent.language, context)


@pages.get("/inbox/queue", response_class=HTMLResponse)
async def inbox_queue(request: Request, agent: Agent, state: State) -> HTMLResponse:
    """The inbox's rows alone: what a live update reloads."""
    context = await _inbox_context(request, agent, state)
    return render(request, "_queue.html", agent.language, context)


@pages.get("/inbox/views", response_class=HTMLResponse)
async def inbox_views(request: Request, agent: Agent, state: State) -> HTMLResponse:
    """The views with their counts of open conversations; the inbox asks every 15 s."""
    view, _ = _inbox_filters(request)
    async with state.db.sessions() as session:
        counts = await conversations.view_counts(session, viewer_of(agent), datetime.now(UTC))
    context = {"agent": agent, "view": view, "views": conversations.VIEWS, "counts": counts}
    return render(request, "_views.html", agent.language, context)


async def may_open(conversation_id: int, agent: Agent, state: State) -> int:
    """For the conversation's actions: the id, if the signed-in person may see it, else 404."""
    async with state.db.sessions() as session:
        if not await conversations.visible(session, viewer_of(agent), conversation_id):
            raise ApiError(404, "not_found", f"no conversation {conversation_id} for you")
    return conversation_id


Openable = Annotated[int, Depends(may_open)]


async def conversation_context(
    state: AppState, agent: SignedIn, conversation_id: int
) -> dict[str, Any] | None:
    """Everything the conversation page shows; None when this person may not see it."""
    async with state.db.sessions() as session:
        if not await conversations.visible(session, viewer_of(agent), conversation_id):
            return None
        found = await conversations.workspace_view(session, agent.account_id, conversation_id)
        if found is None:
            return None
        conversation = found["conversation"]
        canned = await replies.list_canned(session, agent.account_id, conversation.language)
        custom_intents = [
            label.name for label in await triage.list_intent_labels(session, agent.account_id)
        ]
        templates = (
            await replies.list_templates(session, agent.account_id)
            if conversation.channel == "whatsapp"
            else []
        )
        teams = await session.execute(
            select(Team.id, Team.name)
            .where(Team.account_id == agent.account_id)
            .order_by(Team.name)
        )
    values = replies.canned_values(found["contact"].name, agent.name, conversation.id)
    now = datetime.now(UTC)
    window, window_ends_at = rules.window_of(
        conversation.channel, conversation.visibility, conversation.last_inbound_at, now
    )
    return {
        "custom_intents": custom_intents,
        "templates": [(t, replies.parameters_of(t)) for t in templates],
        "template_key": new_key(),
        "limit": rules.limit_of(conversation.channel, conversation.visibility),
        "window": window,
        "window_ends_at": window_ends_at,
        "teams": [(team_id, name) for team_id, name in teams],
        "canned": [(row.title, replies.fill_canned(row.body, values)) for row in canned],
        "agent": agent,
        "section": "inbox",
        "now": now,
        "reasons": UNANSWERED_REASONS,
        **found,
    }


@pages.get("/conversations/{conversation_id}", response_class=HTMLResponse)
async def conversation_page(
    request: Request, conversation_id: int, agent: Agent, state: State
) -> HTMLResponse:
    context = await conversation_context(state, agent, conversation_id)
    if context is None:
        return render(request, "not_found.html", agent.language, {"agent": agent}, 404)
    async with state.db.transaction() as session:
        await conversations.mark_mentions_read(
            session, agent.user_id, conversation_id, datetime.now(UTC)
        )
    context["composer_key"] = new_key()
    context["template_error"] = request.query_params.get("template_error")
    return render(request, "conversation.html", agent.language, context)


@pages.get("/conversations/{conversation_id}/thread", response_class=HTMLResponse)
async def conversation_thread(
    request: Request, conversation_id: int, agent: Agent, state: State
) -> HTMLResponse:
    """The thread alone: what a live update reloads."""
    context = await conversation_context(state, agent, conversation_id)
    if context is None:
        return render(request, "not_found.html", agent.language, {"agent": agent}, 404)
    return render(request, "_thread.html", agent.language, context)


@pages.post("/conversations/{conversation_id}/status", response_model=None)
async def change_status_page(
    request: Request,
    conversation_id: Openable,
    agent: Agent,
    state: State,
    status: Annotated[str, Form()],
    reason: Annotated[str, Form()] = "",
) -> Response:
    try:
        async with state.db.transaction() as session:
            changed = await conversations.change_status(
                session,
                agent.account_id,
                conversation_id,
                status,
                datetime.now(UTC),
                reason or None,
            )
    except conversations.StatusError as error:
        return await _refused_change(request, state, agent, conversation_id, error.field)
    return await _changed_page(request, agent, conversation_id, changed)


@pages.post("/conversations/{conversation_id}/presence", status_code=204)
async def presence(
    conversation_id: Openable, agent: Agent, state: State, now: Annotated[str, Form()] = "viewing"
) -> Response:
    """The conversation page says who is on it (`viewing`, `typing`, `left`); the others on
    it see that live (collision detection)."""
    if now not in events.PRESENCE_STATES:
        raise ApiError(422, "invalid", f"one of {', '.join(events.PRESENCE_STATES)}", "now")
    async with state.db.transaction() as session:
        if await conversations.get_conversation(session, agent.account_id, conversation_id) is None:
            raise ApiError(404, "not_found", f"no conversation {conversation_id} in this account")
        await events.announce_presence(
            session, agent.account_id, conversation_id, agent.user_id, agent.name, now
        )
    return Response(status_code=204)


@pages.post("/conversations/{conversation_id}/details", response_model=None)
async def change_details_page(
    request: Request,
    conversation_id: Openable,
    agent: Agent,
    state: State,
    labels: Annotated[str, Form(max_length=2000)] = "",
    priority: Annotated[int, Form(ge=-1, le=2)] = 0,
) -> Response:
    """The conversation page's labels (comma-separated) and priority."""
    try:
        async with state.db.transaction() as session:
            changed = await conversations.change_details(
                session, agent.account_id, conversation_id, labels.split(","), priority
            )
    except conversations.StatusError as error:
        return await _refused_change(request, state, agent, conversation_id, error.field)
    return await _changed_page(request, agent, conversation_id, changed)
