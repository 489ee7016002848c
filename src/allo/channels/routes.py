from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from allo.channels import service as channels
from allo.channels.schemas import ApiInboxCreate, InboxOut
from allo.replies import service as replies
from allo.web.auth import Agent, Owner
from allo.web.i18n import render
from allo.web.state import State

router = APIRouter(prefix="/api/v1/inboxes", tags=["inboxes"])


@router.get("", response_model=list[InboxOut], summary="The account's inboxes")
async def list_inboxes(owner: Owner, state: State) -> list[InboxOut]:
    async with state.db.sessions() as session:
        rows = await channels.list_channel_accounts(session, owner.account_id)
    return [InboxOut.model_validate(r) for r in rows]


@router.post("", response_model=InboxOut, status_code=201, summary="Create an API inbox")
async def create_api_inbox(body: ApiInboxCreate, owner: Owner, state: State) -> InboxOut:
    """An inbox any system can push messages into (`POST /api/v1/inboxes/{id}/messages`)."""
    async with state.db.transaction() as session:
        inbox = await channels.create_channel_account(
            session, owner.account_id, "api", body.name, external_id=f"api-{secrets.token_hex(8)}"
        )
    return InboxOut.model_validate(inbox)


pages = APIRouter(include_in_schema=False)


@pages.get("/settings/channels", response_class=HTMLResponse)
async def channels_page(request: Request, agent: Agent, state: State) -> HTMLResponse:
    """The account's connected channels, and how to push messages into an API inbox."""
    async with state.db.sessions() as session:
        rows = await channels.list_channel_accounts(session, agent.account_id)
        templates = await replies.list_templates(session, agent.account_id)
    context = {
        "agent": agent,
        "section": "settings",
        "inboxes": rows,
        "templates": templates,
        "error": request.query_params.get("error"),
        "may_change": agent.role == "admin",
        "base": str(request.base_url).rstrip("/"),
    }
    return render(request, "channels.html", agent.language, context)


@pages.post("/settings/channels", response_model=None)
async def create_inbox_page(
    agent: Agent, state: State, name: Annotated[str, Form(min_length=1, max_length=200)]
) -> RedirectResponse:
    if agent.role == "admin":
        async with state.db.transaction() as session:
            await channels.create_channel_account(
                session,
                agent.account_id,
                "api",
                name.strip() or "API",
                external_id=f"api-{secrets.token_hex(8)}",
            )
    return RedirectResponse("/settings/channels", status_code=303)
