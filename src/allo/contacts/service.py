"""Contacts and identities: the only code that writes them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from allo.channels.inbound import Author
from allo.contacts.models import Contact, ContactNote, Identity
from allo.conversations.models import Conversation, Message
from allo.db import bulk
from allo.db.keys import among
from allo.db.search import contains_pattern

IdentityKey = tuple[int, str, str]
IDENTITY_KEY = ("account_id", "platform", "platform_id")  # a unique index


async def resolve_identities(
    session: AsyncSession, authors: Sequence[tuple[int, str, Author]]
) -> list[int]:
    """The contact behind each (account, platform, author), created on first contact.

    One query finds the known identities, one insert creates what is missing; profile fields
    (handle, name, followers, verified) are refreshed when the channel says they changed.
    """
    wanted: dict[IdentityKey, Author] = {}
    for account_id, platform, author in authors:
        wanted[(account_id, platform, author.platform_id)] = author
    known = await _known_identities(session, list(wanted))
    for key, identity in known.items():
        _refresh(identity, wanted[key])
    missing = [key for key in wanted if key not in known]
    contact_ids = {key: identity.contact_id for key, identity in known.items()}
    contact_ids.update(await _create(session, missing, wanted))
    return [contact_ids[(a, p, author.platform_id)] for a, p, author in authors]


async def resolve_identity(
    session: AsyncSession, account_id: int, platform: str, author: Author
) -> int:
    """The contact behind one channel identity (see resolve_identities)."""
    [contact_id] = await resolve_identities(session, [(account_id, platform, author)])
    return contact_id


async def _known_identities(
    session: AsyncSession, keys: list[IdentityKey]
) -> dict[IdentityKey, Identity]:
    if not keys:
        return {}
    by_platform: dict[tuple[int, str], list[str]] = defaultdict(list)
    for account_id, platform, platform_id in keys:
        by_platform[(account_id, platform)].append(platform_id)
    # Grouped rather than a row-value IN list, which PostgreSQL 15 plans poorly.
    rows = await session.scalars(
        select(Identity).where(
            or_(
                *(
                    and_(
                        Identity.account_id == account_id,
                        Identity.platform == platform,
                        among(Identity.platform_id, platform_ids),
                    )
                    for (account_id, platform), platform_ids in by_platform.items()
                )
            )
        )
    )
    return {(i.account_id, i.platform, i.platform_id): i for i in rows}


async def _create(
    session: AsyncSession, keys: list[IdentityKey], authors: dict[IdentityKey, Author]
) -> dict[IdentityKey, int]:
    if not keys:
        return {}
    contact_ids = await bulk.allocate_ids(session, Contact, len(keys))
    created = dict(zip(keys, contact_ids, strict=True))
    await bulk.insert_rows(
        session,
        Contact,
        [
            {
                "id": created[key],
                "account_id": key[0],
                "name": authors[key].display_name or authors[key].handle,
                "email": authors[key].email,
                "phone": authors[key].phone,
                "language": authors[key].language,
            }
            for key in keys
        ],
    )
    inserted = await bulk.insert_rows(
        session,
        Identity,
        [
            {
                "account_id": key[0],
                "contact_id": created[key],
                "platform": key[1],
                "platform_id": key[2],
                "handle": authors[key].handle,
                "display_name": authors[key].display_name,
                "followers": authors[key].followers,
                "verified": authors[key].verified,
            }
            for key in keys
        ],
        skip_conflicts_on=IDENTITY_KEY,
        returning=IDENTITY_KEY,
    )
    won = {(a, p, i) for a, p, i in inserted}
    lost = [key for key in keys if key not in won]
    if lost:
        # Another transaction created these identities first: use its contacts, drop ours.
        await session.execute(delete(Contact).where(Contact.id.in_([created[k] for k in lost])))
        for key, identity in (await _known_identities(session, lost)).items():
            created[key] = identity.contact_id
    return created


def _refresh(identity: Identity, author: Author) -> None:
    if author.handle and identity.handle != author.handle:
        identity.handle = author.handle
    if author.display_name and identity.display_name != author.display_name:
        identity.display_name = author.display_name
    if author.followers is not None and identity.followers != author.followers:
        identity.followers = author.followers
    if author.verified and not identity.verified:
        identity.verified = True


# Reading


async def list_contacts(
    session: AsyncSession, account_id: int, text: str | None, limit: int, after_id: int | None
) -> list[Contact]:
    """In creation order; `text` matches a name, email, phone or any identity's handle."""
    query = select(Contact).where(Contact.account_id == account_id)
    if text:
        pattern = contains_pattern(text)
        handles = select(Identity.contact_id).where(
            Identity.account_id == account_id,
            or_(Identity.handle.ilike(pattern), Identity.display_name.ilike(pattern)),
        )
        query = query.where(
            or_(
                Contact.name.ilike(pattern),
                Contact.email.ilike(pattern),
                Contact.phone.ilike(pattern),
                Contact.id.in_(handles),
            )
        )
    if after_id is not None:
        query = query.where(Contact.id > after_id)
    return list((await session.scalars(query.order_by(Contact.id).limit(limit))).all())


async def get_contact(
    session: AsyncSession, account_id: int, contact_id: int
) -> tuple[Contact, list[Identity]] | None:
    contact = await session.scalar(
        select(Contact).where(Contact.account_id == account_id, Contact.id == contact_id)
    )
    if contact is None:
        return None
    identities = await session.scalars(
        select(Identity)
        .where(Identity.account_id == account_id, Identity.contact_id == contact_id)
        .order_by(Identity.id)
    )
    return contact, list(identities.all())


class ContactError(ValueError):
    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


async def merge(
    session: AsyncSession, account_id: int, keep_id: int, merged_id: int
) -> Contact | None:
    """One customer known twice becomes one: the merged contact's identities, conversations
    and messages move to the kept one, which keeps its own details and takes the other's
    where it has none; the merged contact is deleted. None when either is not the account's."""
    if keep_id == merged_id:
        raise ContactError("a contact cannot be merged into itself", "contact_id")
    found = await session.scalars(
        select(Contact)
        .where(Contact.account_id == account_id, Contact.id.in_([keep_id, merged_id]))
        .order_by(Contact.id)
        .with_for_update()
    )
    by_id = {contact.id: contact for contact in found}
    keep, merged = by_id.get(keep_id), by_id.get(merged_id)
    if keep is None or merged is None:
        return None
    for column in ("name", "email", "phone", "language"):
        if getattr(keep, column) is None:
            setattr(keep, column, getattr(merged, column))
    keep.attributes = {**merged.attributes, **keep.attributes}
    moved = {"contact_id": keep_id}
    await session.execute(
        update(Identity)
        .where(Identity.account_id == account_id, Identity.contact_id == merged_id)
        .values(moved)
    )
    await session.execute(
        update(Conversation)
        .where(Conversation.account_id == account_id, Conversation.contact_id == merged_id)
        .values(moved)
    )
    await session.execute(
        update(Message)
        .where(Message.account_id == account_id, Message.author_contact_id == merged_id)
        .values(author_contact_id=keep_id)
    )
    await session.execute(
        update(ContactNote)
        .where(ContactNote.account_id == account_id, ContactNote.contact_id == merged_id)
        .values(moved)
    )
    await session.delete(merged)
    await session.flush()
    return keep


async def possible_duplicates(
    session: AsyncSession, account_id: int, contact: Contact, limit: int = 5
) -> list[Contact]:
    """Other contacts of the account with the same name, email or phone."""
    same = [
        func.lower(Contact.name) == contact.name.lower() if contact.name else None,
        func.lower(Contact.email) == contact.email.lower() if contact.email else None,
        Contact.phone == contact.phone if contact.phone else None,
    ]
    conditions = [condition for condition in same if condition is not None]
    if not conditions:
        return []
    rows = await session.scalars(
        select(Contact)
        .where(Contact.account_id == account_id, Contact.id != contact.id, or_(*conditions))
        .order_by(Contact.id)
        .limit(limit)
    )
    return list(rows.all())


MAX_NOTE = 5_000


async def add_note(
    session: AsyncSession,
    account_id: int,
    contact_id: int,
    author_user_id: int | None,
    author_name: str,
    body: str,
) -> ContactNote | None:
    """A note about the customer, kept across conversations; None when the contact is not
    the account's."""
    text = body.strip()
    if not text or len(text) > MAX_NOTE:
        raise ContactError(f"1 to {MAX_NOTE:,} characters", "text")
    contact = await session.get(Contact, contact_id)
    if contact is None or contact.account_id != account_id:
        return None
    note = ContactNote(
        account_id=account_id,
        contact_id=contact_id,
        author_user_id=author_user_id,
        author_name=author_name,
        text=text,
    )
    session.add(note)
    await session.flush()
    return note


async def notes_of(session: AsyncSession, contact_id: int, limit: int = 20) -> list[ContactNote]:
    rows = await session.scalars(
        select(ContactNote)
        .where(ContactNote.contact_id == contact_id)
        .order_by(ContactNote.id.desc())
        .limit(limit)
    )
    return list(rows.all())
