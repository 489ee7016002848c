from __future__ import annotations

import secrets

from fastapi import APIRouter

from allo.channels import service as channels
from allo.channels.schemas import ApiInboxCreate, InboxOut
from allo.web.auth import Owner
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
