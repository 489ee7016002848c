"""The account's own settings, through the API and the admin's settings page."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from allo.accounts import service as accounts
from allo.accounts.models import Account
from allo.accounts.schemas import AccountIn, AccountOut
from allo.web.auth import Agent, Owner, require_role
from allo.web.errors import ApiError
from allo.web.i18n import render
from allo.web.state import State

router = APIRouter(prefix="/api/v1/account", tags=["account"])
pages = APIRouter(include_in_schema=False)


@router.get("", response_model=AccountOut, summary="The account and its settings")
async def get_account(owner: Owner, state: State) -> AccountOut:
    async with state.db.sessions() as session:
        account = await session.get(Account, owner.account_id)
    return AccountOut.model_validate(account)


@router.patch("", response_model=AccountOut, summary="Change the account's name or settings")
async def change_account(body: AccountIn, owner: Owner, state: State) -> AccountOut:
    async with state.db.transaction() as session:
        await require_role(session, owner, ("admin",))
        try:
            account = await accounts.change_account(
                session, owner.account_id, body.name, body.languages, body.approve_public_replies
            )
        except accounts.AccountError as error:
            raise ApiError(422, "invalid", str(error), error.field) from None
        return AccountOut.model_validate(account)


@pages.get("/settings/account", response_class=HTMLResponse)
async def account_page(request: Request, agent: Agent, state: State) -> HTMLResponse:
    async with state.db.sessions() as session:
        account = await session.get(Account, agent.account_id)
    context = {
        "agent": agent,
        "section": "settings",
        "account": account,
        "languages": accounts.ACCOUNT_LANGUAGES,
        "may_change": agent.role == "admin",
        "error": request.query_params.get("error"),
    }
    return render(request, "account.html", agent.language, context)


@pages.post("/settings/account", response_model=None)
async def save_account_page(
    agent: Agent,
    state: State,
    name: Annotated[str, Form(max_length=400)] = "",
    languages: Annotated[list[str] | None, Form()] = None,
    approve_public_replies: Annotated[bool, Form()] = False,
) -> Response:
    if agent.role != "admin":
        return RedirectResponse("/settings/account?error=role", status_code=303)
    try:
        async with state.db.transaction() as session:
            await accounts.change_account(
                session, agent.account_id, name, languages or [], approve_public_replies
            )
    except accounts.AccountError as error:
        return RedirectResponse(f"/settings/account?error={error.field}", status_code=303)
    return RedirectResponse("/settings/account", status_code=303)
