from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlencode

import httpx
from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from allo.channels import attachments
from allo.channels import service as channels
from allo.channels.models import ChannelAccount
from allo.channels.registry import NETWORKS
from allo.channels.schemas import ApiInboxCreate, InboxOut
from allo.conversations import service as conversations
from allo.conversations.routes import viewer_of
from allo.replies import service as replies
from allo.web.auth import Agent, Owner
from allo.web.i18n import render
from allo.web.state import AppState, State

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
    admin = agent.role == "admin"
    context = {
        "agent": agent,
        "section": "settings",
        "inboxes": rows,
        "templates": templates,
        "error": request.query_params.get("error"),
        "connect_error": request.query_params.get("connect_error"),
        "may_change": admin,
        "base": str(request.base_url).rstrip("/"),
        "webhook_base": (state.settings.public_url or str(request.base_url)).rstrip("/"),
        "networks": {kind: network.CREDENTIALS for kind, network in NETWORKS.items()},
        # Meta asks for it when subscribing the webhook: only admins see it.
        "verify_tokens": {r.id: _verify_token(r, state) for r in rows} if admin else {},
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


def _verify_token(channel_account: ChannelAccount, state: AppState) -> str | None:
    if not channel_account.credentials_encrypted:
        return None
    return state.cipher.decrypt(channel_account.credentials_encrypted).get("verify_token")


@pages.post("/settings/channels/connect", response_model=None)
async def connect_channel_page(
    agent: Agent,
    state: State,
    kind: Annotated[str, Form()],
    external_id: Annotated[str, Form(max_length=200)],
    name: Annotated[str, Form(max_length=200)] = "",
    access_token: Annotated[str, Form(max_length=4000)] = "",
    app_secret: Annotated[str, Form(max_length=500)] = "",
    verify_token: Annotated[str, Form(max_length=500)] = "",
    consumer_secret: Annotated[str, Form(max_length=500)] = "",
) -> RedirectResponse:
    """An admin connects a network's account with its credentials (stored encrypted)."""
    if agent.role != "admin":
        return RedirectResponse("/settings/channels?error=role", status_code=303)
    credentials = {
        "access_token": access_token,
        "app_secret": app_secret,
        "verify_token": verify_token,
        "consumer_secret": consumer_secret,
    }
    try:
        async with state.db.transaction() as session:
            await channels.connect_channel(
                session,
                agent.account_id,
                kind,
                name.strip() or f"{kind} {external_id.strip()}",
                external_id,
                credentials,
                state.cipher,
            )
    except channels.ConnectError as refused:
        query = urlencode({"connect_error": str(refused)})
        return RedirectResponse(f"/settings/channels?{query}", status_code=303)
    return RedirectResponse("/settings/channels", status_code=303)


@pages.post("/settings/channels/{channel_account_id}/check", response_model=None)
async def check_channel_page(
    channel_account_id: int, agent: Agent, state: State
) -> RedirectResponse:
    """Check a connection now, as the worker does every few minutes."""
    if agent.role != "admin":
        return RedirectResponse("/settings/channels?error=role", status_code=303)
    async with state.db.transaction() as session:
        channel_account = await channels.get_channel_account(
            session, agent.account_id, channel_account_id
        )
        if channel_account is not None:
            async with httpx.AsyncClient(timeout=20, trust_env=False) as http:
                await channels.check(
                    session, channel_account, state.cipher, http, datetime.now(UTC)
                )
    return RedirectResponse("/settings/channels", status_code=303)


@pages.get("/attachments/{message_id}/{index}", response_model=None)
async def attachment_file(
    request: Request, message_id: int, index: int, agent: Agent, state: State
) -> Response:
    """A file a customer sent, as Allo downloaded it, for whoever may open its conversation."""
    async with state.db.sessions() as session:
        found = await attachments.stored_attachment(session, agent.account_id, message_id, index)
        visible = found is not None and await conversations.visible(
            session, viewer_of(agent), found[0]
        )
    if found is not None and visible:
        path = attachments.stored_path(state.settings, found[1]["stored"])
        if path.is_file():
            headers = attachments.serving_headers(found[1])
            return FileResponse(path, media_type=headers.pop("Content-Type"), headers=headers)
    return render(request, "not_found.html", agent.language, {"agent": agent}, 404)
