"""Triage in the API: an account's own intents, and agents' corrections of what triage read."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError
from sqlalchemy import select

from allo.accounts.models import MANAGERS
from allo.conversations import service as conversations
from allo.conversations.models import Message
from allo.conversations.routes import viewer_of
from allo.jobs import defer_routing
from allo.triage import service as triage
from allo.triage.schemas import (
    CorrectionIn,
    CorrectionOut,
    IntentLabelIn,
    IntentLabelOut,
    IntentModelOut,
)
from allo.web.auth import Agent, Owner
from allo.web.errors import ApiError
from allo.web.i18n import render
from allo.web.state import State

router = APIRouter(prefix="/api/v1", tags=["triage"])


@router.get("/triage/intents", response_model=list[IntentLabelOut], summary="Custom intents")
async def list_intents(owner: Owner, state: State) -> list[IntentLabelOut]:
    async with state.db.sessions() as session:
        labels = await triage.list_intent_labels(session, owner.account_id)
    return [IntentLabelOut.model_validate(label) for label in labels]


@router.post(
    "/triage/intents",
    response_model=IntentLabelOut,
    status_code=201,
    summary="Define a custom intent (or replace its description and examples)",
)
async def save_intent(body: IntentLabelIn, owner: Owner, state: State) -> IntentLabelOut:
    async with state.db.transaction() as session:
        label = await triage.save_intent_label(
            session, owner.account_id, body.name, body.description, body.examples
        )
        return IntentLabelOut.model_validate(label)


@router.delete("/triage/intents/{label_id}", status_code=204, summary="Delete a custom intent")
async def delete_intent(label_id: int, owner: Owner, state: State) -> Response:
    async with state.db.transaction() as session:
        if not await triage.delete_intent_label(session, owner.account_id, label_id):
            raise ApiError(404, "not_found", f"no intent {label_id} in this account")
    return Response(status_code=204)


@router.post(
    "/triage/intents/train",
    response_model=IntentModelOut,
    status_code=201,
    summary="Train a new version from the examples and agents' corrections",
)
async def train_intents(owner: Owner, state: State) -> IntentModelOut:
    async with state.db.transaction() as session:
        try:
            version = await triage.train_account_intents(session, owner.account_id)
        except triage.TriageError as error:
            raise ApiError(422, "cannot_train", str(error)) from None
        return IntentModelOut.model_validate(version)


@router.get(
    "/triage/intents/models",
    response_model=list[IntentModelOut],
    summary="Trained versions, newest first (one active)",
)
async def intent_models(owner: Owner, state: State) -> list[IntentModelOut]:
    async with state.db.sessions() as session:
        versions = await triage.intent_model_versions(session, owner.account_id)
    return [IntentModelOut.model_validate(v) for v in versions]


@router.post(
    "/messages/{message_id}/corrections",
    response_model=CorrectionOut,
    status_code=201,
    summary="Correct what triage read in a message",
)
async def correct_message(
    message_id: int, body: CorrectionIn, owner: Owner, state: State
) -> CorrectionOut:
    async with state.db.transaction() as session:
        try:
            correction = await triage.correct(
                session, owner.account_id, message_id, body.field, body.value, owner.user_id
            )
        except LookupError as error:
            raise ApiError(404, "not_found", str(error)) from None
        except triage.TriageError as error:
            raise ApiError(422, "invalid", str(error), "value") from None
        result = CorrectionOut.model_validate(correction)
    await defer_routing()
    return result


pages = APIRouter(include_in_schema=False)
CORRECTABLE = ("intent", "sentiment", "spam")


@pages.post("/messages/{message_id}/corrections", response_model=None)
async def correct_page(
    message_id: int,
    agent: Agent,
    state: State,
    correction: Annotated[str, Form(max_length=100)] = "",
) -> RedirectResponse:
    """The thread's "Correct": `field:value` (intent:complaint, sentiment:negative, spam:true).
    The message shows the correction at once; the next training of the account learns it."""
    field, _, value = correction.partition(":")
    async with state.db.sessions() as session:
        conversation_id = await session.scalar(
            select(Message.conversation_id).where(
                Message.id == message_id, Message.account_id == agent.account_id
            )
        )
        if conversation_id is None or not await conversations.visible(
            session, viewer_of(agent), conversation_id
        ):
            return RedirectResponse("/inbox", status_code=303)
    if field in CORRECTABLE and value:
        corrected: str | bool = value == "true" if field == "spam" else value
        try:
            async with state.db.transaction() as session:
                await triage.correct(
                    session, agent.account_id, message_id, field, corrected, agent.user_id
                )
        except (LookupError, triage.TriageError):
            pass
        else:
            await defer_routing()
    return RedirectResponse(f"/conversations/{conversation_id}#message-{message_id}", 303)


@pages.get("/settings/intents", response_class=HTMLResponse)
async def intents_page(request: Request, agent: Agent, state: State) -> HTMLResponse:
    """The account's own intents, their examples, and the trained versions."""
    async with state.db.sessions() as session:
        labels = await triage.list_intent_labels(session, agent.account_id)
        versions = await triage.intent_model_versions(session, agent.account_id)
    context = {
        "agent": agent,
        "section": "settings",
        "labels": labels,
        "versions": versions,
        "may_change": agent.role in MANAGERS,
        "error": request.query_params.get("error"),
    }
    return render(request, "intents.html", agent.language, context)


@pages.post("/settings/intents", response_model=None)
async def save_intent_page(
    agent: Agent,
    state: State,
    name: Annotated[str, Form(max_length=80)] = "",
    description: Annotated[str, Form(max_length=2000)] = "",
    examples: Annotated[str, Form(max_length=200_000)] = "",
) -> RedirectResponse:
    """An intent with its examples, one per line."""
    if agent.role not in MANAGERS:
        return RedirectResponse("/settings/intents?error=role", status_code=303)
    try:
        data = IntentLabelIn(
            name=name.strip(),
            description=description.strip(),
            examples=[line.strip() for line in examples.splitlines() if line.strip()],
        )
    except ValidationError:
        return RedirectResponse("/settings/intents?error=label", status_code=303)
    async with state.db.transaction() as session:
        await triage.save_intent_label(
            session, agent.account_id, data.name, data.description, data.examples
        )
    return RedirectResponse("/settings/intents", status_code=303)


@pages.post("/settings/intents/{label_id}/delete", response_model=None)
async def delete_intent_page(label_id: int, agent: Agent, state: State) -> RedirectResponse:
    if agent.role in MANAGERS:
        async with state.db.transaction() as session:
            await triage.delete_intent_label(session, agent.account_id, label_id)
    return RedirectResponse("/settings/intents", status_code=303)


@pages.post("/settings/intents/train", response_model=None)
async def train_page(agent: Agent, state: State) -> RedirectResponse:
    """A new version from the examples and agents' corrections (the previous ones are kept)."""
    if agent.role not in MANAGERS:
        return RedirectResponse("/settings/intents?error=role", status_code=303)
    try:
        async with state.db.transaction() as session:
            await triage.train_account_intents(session, agent.account_id)
    except triage.TriageError:
        return RedirectResponse("/settings/intents?error=train", status_code=303)
    return RedirectResponse("/settings/intents", status_code=303)
