from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query
from fastapi.responses import RedirectResponse

from allo.contacts import service as contacts
from allo.contacts.schemas import ContactDetail, ContactOut, ContactPage, IdentityOut, MergeIn
from allo.web.auth import Agent, Owner
from allo.web.errors import ApiError
from allo.web.state import State

router = APIRouter(prefix="/api/v1/contacts", tags=["contacts"])


@router.get("", response_model=ContactPage, summary="List contacts")
async def list_contacts(
    owner: Owner,
    state: State,
    q: Annotated[str | None, Query(min_length=2, max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(pattern=r"^\d+$")] = None,
) -> ContactPage:
    async with state.db.sessions() as session:
        rows = await contacts.list_contacts(
            session, owner.account_id, q, limit + 1, int(cursor) if cursor else None
        )
    next_cursor = str(rows[limit - 1].id) if len(rows) > limit else None
    return ContactPage(
        contacts=[ContactOut.model_validate(r) for r in rows[:limit]], next_cursor=next_cursor
    )


@router.get("/{contact_id}", response_model=ContactDetail, summary="One contact, every identity")
async def get_contact(contact_id: int, owner: Owner, state: State) -> ContactDetail:
    async with state.db.sessions() as session:
        found = await contacts.get_contact(session, owner.account_id, contact_id)
    if found is None:
        raise ApiError(404, "not_found", f"no contact {contact_id} in this account")
    contact, identities = found
    return ContactDetail(
        **ContactOut.model_validate(contact).model_dump(),
        identities=[IdentityOut.model_validate(i) for i in identities],
    )


@router.post(
    "/{contact_id}/merge",
    response_model=ContactDetail,
    summary="Merge another contact into this one (identities, conversations, messages)",
)
async def merge(contact_id: int, body: MergeIn, owner: Owner, state: State) -> ContactDetail:
    try:
        async with state.db.transaction() as session:
            kept = await contacts.merge(session, owner.account_id, contact_id, body.contact_id)
            if kept is None:
                raise ApiError(404, "not_found", "both contacts must be in this account")
            found = await contacts.get_contact(session, owner.account_id, contact_id)
    except contacts.ContactError as error:
        raise ApiError(422, "invalid", str(error), error.field) from None
    assert found is not None
    contact, identities = found
    return ContactDetail(
        **ContactOut.model_validate(contact).model_dump(),
        identities=[IdentityOut.model_validate(i) for i in identities],
    )


pages = APIRouter(include_in_schema=False)


@pages.post("/contacts/{contact_id}/merge", response_model=None)
async def merge_page(
    contact_id: int,
    agent: Agent,
    state: State,
    merged_id: Annotated[int, Form()],
    back_to: Annotated[int, Form()],
) -> RedirectResponse:
    """The customer panel's "Same customer: merge"."""
    try:
        async with state.db.transaction() as session:
            await contacts.merge(session, agent.account_id, contact_id, merged_id)
    except contacts.ContactError:
        pass
    return RedirectResponse(f"/conversations/{back_to}", status_code=303)


@pages.post("/contacts/{contact_id}/notes", response_model=None)
async def add_note_page(
    contact_id: int,
    agent: Agent,
    state: State,
    text: Annotated[str, Form(max_length=10_000)],
    back_to: Annotated[int, Form()],
) -> RedirectResponse:
    """The customer panel's notes."""
    try:
        async with state.db.transaction() as session:
            await contacts.add_note(
                session, agent.account_id, contact_id, agent.user_id, agent.name, text
            )
    except contacts.ContactError:
        pass
    return RedirectResponse(f"/conversations/{back_to}", status_code=303)
