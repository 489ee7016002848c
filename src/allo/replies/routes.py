"""Replies and notes, through the API and the conversation page; the outbox."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from allo.accounts.models import MANAGERS, User
from allo.accounts.service import TokenOwner
from allo.conversations import service as conversations
from allo.conversations.models import Message
from allo.conversations.routes import Openable, conversation_context
from allo.conversations.schemas import MessageOut
from allo.jobs import defer_after_reply
from allo.replies import service as replies
from allo.replies.models import OutboxEntry
from allo.replies.schemas import (
    CannedIn,
    CannedOut,
    OutboxEntryOut,
    OutboxPage,
    ReplyIn,
    ReplyOut,
    SuggestionOut,
    TemplateIn,
    TemplateMessageIn,
    TemplateOut,
)
from allo.web.auth import Agent, Owner, require_role
from allo.web.errors import ApiError
from allo.web.i18n import render
from allo.web.state import State

router = APIRouter(prefix="/api/v1", tags=["replies"])
Decision = Literal["approve", "reject"]
pages = APIRouter(include_in_schema=False)


async def _author_of(
    session: AsyncSession, owner: TokenOwner, name: str = "API", role: str = "agent"
) -> replies.Author:
    """Who writes through a token: its person, or the integration (`name`, `role`) an
    account-wide token stands for."""
    user = await session.get(User, owner.user_id) if owner.user_id else None
    if user is None:
        return replies.Author(owner.user_id, name, role)
    return replies.Author(user.id, user.name, user.role)


@router.post(
    "/conversations/{conversation_id}/replies",
    response_model=ReplyOut,
    status_code=201,
    summary="Reply to the customer (queued in the outbox) or add an internal note",
    responses={409: {"description": "Someone else answered after `seen_message_id`"}},
)
async def reply(conversation_id: int, body: ReplyIn, owner: Owner, state: State) -> ReplyOut:
    async with state.db.transaction() as session:
        author = await _author_of(session, owner)
        try:
            written = await replies.write(
                session,
                owner.account_id,
                conversation_id,
                author,
                body.kind,
                body.text,
                body.idempotency_key,
                datetime.now(UTC),
                body.seen_message_id,
                body.confirm_personal_data,
                body.in_reply_to_message_id,
            )
        except replies.ReplyError as error:
            raise ApiError(422, "invalid", str(error), error.field) from None
        except replies.PublicPersonalData as error:
            raise ApiError(422, "personal_data", str(error), "text") from None
        except replies.AlreadyAnswered as error:
            raise ApiError(
                409,
                "already_answered",
                f"answered since message {body.seen_message_id} (message "
                f"{', '.join(str(m.id) for m in error.answers)}); send again to reply anyway",
            ) from None
        if written is None:
            raise ApiError(404, "not_found", f"no conversation {conversation_id} in this account")
        result = _reply_out(written)
    await defer_after_reply()
    return result


def _reply_out(written: replies.Written) -> ReplyOut:
    return ReplyOut(message=MessageOut.model_validate(written.message), created=written.created)


@router.get(
    "/outbox", response_model=OutboxPage, summary="Messages to customers, held ones then newest"
)
async def outbox(owner: Owner, state: State) -> OutboxPage:
    async with state.db.sessions() as session:
        rows = await replies.outbox(session, owner.account_id)
    return OutboxPage(entries=[_entry_out(entry, message) for entry, message in rows])


def _entry_out(entry: OutboxEntry, message: Message) -> OutboxEntryOut:
    return OutboxEntryOut(
        id=entry.id,
        status=entry.status,
        attempts=entry.attempts,
        last_error=entry.last_error,
        message=MessageOut.model_validate(message),
    )


@router.post(
    "/outbox/{entry_id}/{decision}",
    response_model=OutboxEntryOut,
    summary="Approve or reject a public reply waiting for approval (admins and supervisors)",
)
async def decide(entry_id: int, decision: Decision, owner: Owner, state: State) -> OutboxEntryOut:
    async with state.db.transaction() as session:
        # An account-wide token has no role: it cannot approve.
        approver = await _author_of(session, owner, name="", role="")
        try:
            message = await replies.decide(
                session,
                owner.account_id,
                entry_id,
                approver,
                decision == "approve",
                datetime.now(UTC),
            )
        except LookupError as error:
            raise ApiError(404, "not_found", str(error)) from None
        except replies.ApprovalError as error:
            raise ApiError(409, "conflict", str(error)) from None
        entry = await session.get(OutboxEntry, entry_id)
        assert entry is not None
        result = _entry_out(entry, message)
    await defer_after_reply()
    return result


@pages.post("/conversations/{conversation_id}/replies", response_model=None)
async def reply_page(
    request: Request,
    conversation_id: Openable,
    agent: Agent,
    state: State,
    body: Annotated[str, Form(max_length=replies.MAX_TEXT + 1000)] = "",
    kind: Annotated[str, Form()] = "reply",
    key: Annotated[str, Form(max_length=200)] = "",
    seen: Annotated[int | None, Form()] = None,
    confirm_pii: Annotated[bool, Form()] = False,
) -> Response:
    """The composer. A refused reply (empty, too long, answered meanwhile) shows the page
    again with the text kept; a repeated submit (same key) writes nothing new."""
    author = replies.Author(agent.user_id, agent.name, agent.role)
    problem: dict[str, object] = {}
    try:
        async with state.db.transaction() as session:
            written = await replies.write(
                session,
                agent.account_id,
                conversation_id,
                author,
                kind,
                body,
                key,
                datetime.now(UTC),
                seen,
                confirm_pii,
            )
    except replies.ReplyError as error:
        problem = {"reply_error": error.field}
    except replies.PublicPersonalData as error:
        problem = {"personal_data": error.kinds}
    except replies.AlreadyAnswered as error:
        problem = {"answered_meanwhile": error.answers}
    else:
        if written is None:
            return render(request, "not_found.html", agent.language, {"agent": agent}, 404)
        await defer_after_reply()
        return RedirectResponse(f"/conversations/{conversation_id}#composer", status_code=303)
    context = await conversation_context(state, agent, conversation_id)
    if context is None:
        return render(request, "not_found.html", agent.language, {"agent": agent}, 404)
    # The same key: sending again after reading the new answers is a new, deliberate reply
    # only if the agent sends it (the key still guards a double click).
    context.update(problem, composer_key=key or replies.new_key(), draft=body, draft_kind=kind)
    status = 409 if "answered_meanwhile" in problem else 422
    return render(request, "conversation.html", agent.language, context, status)


@pages.get("/outbox", response_class=HTMLResponse)
async def outbox_page(request: Request, agent: Agent, state: State) -> HTMLResponse:
    async with state.db.sessions() as session:
        rows = await replies.outbox(session, agent.account_id)
    context = {
        "agent": agent,
        "section": "outbox",
        "entries": rows,
        "may_approve": agent.role in MANAGERS,
    }
    return render(request, "outbox.html", agent.language, context)


@pages.post("/outbox/{entry_id}/{decision}", response_model=None)
async def decide_page(
    entry_id: int, decision: Decision, agent: Agent, state: State
) -> RedirectResponse:
    approver = replies.Author(agent.user_id, agent.name, agent.role)
    try:
        async with state.db.transaction() as session:
            await replies.decide(
                session,
                agent.account_id,
                entry_id,
                approver,
                decision == "approve",
                datetime.now(UTC),
            )
    except (LookupError, replies.ApprovalError):
        pass
    else:
        await defer_after_reply()
    return RedirectResponse("/outbox", status_code=303)


@router.get("/canned-responses", response_model=list[CannedOut], summary="Canned responses")
async def list_canned(owner: Owner, state: State, language: str | None = None) -> list[CannedOut]:
    async with state.db.sessions() as session:
        rows = await replies.list_canned(session, owner.account_id, language)
    return [CannedOut.model_validate(row) for row in rows]


@router.put(
    "/canned-responses",
    response_model=CannedOut,
    summary="Create a canned response, or change the one with this shortcut and language",
)
async def save_canned(body: CannedIn, owner: Owner, state: State) -> CannedOut:
    try:
        async with state.db.transaction() as session:
            await require_role(session, owner, MANAGERS)
            canned = await replies.save_canned(
                session, owner.account_id, body.shortcut, body.title, body.body, body.language
            )
            return CannedOut.model_validate(canned)
    except replies.ReplyError as error:
        raise ApiError(422, "invalid", str(error), error.field) from None


@router.delete("/canned-responses/{canned_id}", status_code=204, summary="Delete one")
async def delete_canned(canned_id: int, owner: Owner, state: State) -> Response:
    async with state.db.transaction() as session:
        await require_role(session, owner, MANAGERS)
        if not await replies.delete_canned(session, owner.account_id, canned_id):
            raise ApiError(404, "not_found", f"no canned response {canned_id} in this account")
    return Response(status_code=204)


@pages.get("/settings/canned-responses", response_class=HTMLResponse)
async def canned_page(request: Request, agent: Agent, state: State) -> HTMLResponse:
    async with state.db.sessions() as session:
        rows = await replies.list_canned(session, agent.account_id)
    context = {
        "agent": agent,
        "section": "settings",
        "canned": rows,
        "variables": replies.VARIABLES,
        "may_change": agent.role in MANAGERS,
        "error": request.query_params.get("error"),
    }
    return render(request, "canned.html", agent.language, context)


@pages.post("/settings/canned-responses", response_model=None)
async def save_canned_page(
    request: Request,
    agent: Agent,
    state: State,
    shortcut: Annotated[str, Form(max_length=100)] = "",
    title: Annotated[str, Form(max_length=400)] = "",
    body: Annotated[str, Form(max_length=10_000)] = "",
    language: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    if agent.role not in MANAGERS:
        return RedirectResponse("/settings/canned-responses?error=role", status_code=303)
    try:
        async with state.db.transaction() as session:
            await replies.save_canned(
                session, agent.account_id, shortcut.strip(), title, body, language or None
            )
    except replies.ReplyError as error:
        return RedirectResponse(f"/settings/canned-responses?error={error.field}", 303)
    return RedirectResponse("/settings/canned-responses", status_code=303)


@pages.post("/settings/canned-responses/{canned_id}/delete", response_model=None)
async def delete_canned_page(canned_id: int, agent: Agent, state: State) -> Response:
    if agent.role in MANAGERS:
        async with state.db.transaction() as session:
            await replies.delete_canned(session, agent.account_id, canned_id)
    return RedirectResponse("/settings/canned-responses", status_code=303)


@pages.get("/conversations/{conversation_id}/suggestions", response_class=HTMLResponse)
async def suggestions_page(
    request: Request, conversation_id: Openable, agent: Agent, state: State
) -> HTMLResponse:
    """Suggested replies, loaded after the conversation page so they never slow it down."""
    async with state.db.sessions() as session:
        conversation = await conversations.get_conversation(
            session, agent.account_id, conversation_id
        )
        found = await replies.suggestions(session, conversation) if conversation else []
    return render(request, "_suggestions.html", agent.language, {"suggestions": found})


@router.get(
    "/conversations/{conversation_id}/suggestions",
    response_model=list[SuggestionOut],
    summary="Suggested replies: what agents answered to similar messages",
)
async def suggestions_api(conversation_id: int, owner: Owner, state: State) -> list[SuggestionOut]:
    async with state.db.sessions() as session:
        conversation = await conversations.get_conversation(
            session, owner.account_id, conversation_id
        )
        if conversation is None:
            raise ApiError(404, "not_found", f"no conversation {conversation_id} in this account")
        found = await replies.suggestions(session, conversation)
    return [SuggestionOut(**vars(suggestion)) for suggestion in found]


@router.get("/message-templates", response_model=list[TemplateOut], summary="WhatsApp templates")
async def list_templates(owner: Owner, state: State) -> list[TemplateOut]:
    async with state.db.sessions() as session:
        rows = await replies.list_templates(session, owner.account_id)
    return [TemplateOut.model_validate(row) for row in rows]


@router.put(
    "/message-templates",
    response_model=TemplateOut,
    summary="Record a WhatsApp template approved by Meta (or change its text)",
)
async def save_template(body: TemplateIn, owner: Owner, state: State) -> TemplateOut:
    try:
        async with state.db.transaction() as session:
            await require_role(session, owner, ("admin",))
            template = await replies.save_template(
                session, owner.account_id, body.name, body.language, body.body
            )
            return TemplateOut.model_validate(template)
    except replies.ReplyError as error:
        raise ApiError(422, "invalid", str(error), error.field) from None


@router.post(
    "/conversations/{conversation_id}/template-messages",
    response_model=ReplyOut,
    status_code=201,
    summary="Send a WhatsApp template (the only message allowed after the 24-hour window)",
)
async def send_template(
    conversation_id: int, body: TemplateMessageIn, owner: Owner, state: State
) -> ReplyOut:
    async with state.db.transaction() as session:
        author = await _author_of(session, owner)
        try:
            written = await replies.write_template(
                session,
                owner.account_id,
                conversation_id,
                author,
                body.template_id,
                body.parameters,
                body.idempotency_key,
                datetime.now(UTC),
            )
        except replies.ReplyError as error:
            raise ApiError(422, "invalid", str(error), error.field) from None
        if written is None:
            raise ApiError(404, "not_found", f"no conversation {conversation_id} in this account")
        result = _reply_out(written)
    await defer_after_reply()
    return result


@pages.post("/conversations/{conversation_id}/template", response_model=None)
async def send_template_page(
    conversation_id: Openable,
    agent: Agent,
    state: State,
    template_id: Annotated[int, Form()],
    parameters: Annotated[str, Form(max_length=5_000)] = "",
    key: Annotated[str, Form(max_length=200)] = "",
) -> RedirectResponse:
    """The composer's "Send a template", parameters one per line."""
    values = [line for line in parameters.splitlines() if line.strip()]
    problem = ""
    try:
        async with state.db.transaction() as session:
            await replies.write_template(
                session,
                agent.account_id,
                conversation_id,
                replies.Author(agent.user_id, agent.name, agent.role),
                template_id,
                values,
                key,
                datetime.now(UTC),
            )
    except replies.ReplyError as error:
        problem = f"?template_error={error.field}"
    else:
        await defer_after_reply()
    return RedirectResponse(f"/conversations/{conversation_id}{problem}#composer", 303)


@pages.post("/settings/templates", response_model=None)
async def save_template_page(
    agent: Agent,
    state: State,
    name: Annotated[str, Form(max_length=512)] = "",
    language: Annotated[str, Form(max_length=16)] = "",
    body: Annotated[str, Form(max_length=2_000)] = "",
) -> RedirectResponse:
    if agent.role != "admin":
        return RedirectResponse("/settings/channels?error=role", status_code=303)
    try:
        async with state.db.transaction() as session:
            await replies.save_template(
                session, agent.account_id, name.strip(), language.strip(), body
            )
    except replies.ReplyError as error:
        return RedirectResponse(f"/settings/channels?error={error.field}", status_code=303)
    return RedirectResponse("/settings/channels", status_code=303)
