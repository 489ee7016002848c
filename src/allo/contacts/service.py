"""Contacts and identities: the only code that writes them."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from allo.channels.inbound import Author
from allo.contacts.models import Contact, Identity


async def resolve_identity(
    session: AsyncSession, account_id: int, platform: str, author: Author
) -> int:
    """The contact behind a channel identity, created on first contact; profile fields refreshed."""
    identity = await session.scalar(
        select(Identity).where(
            Identity.account_id == account_id,
            Identity.platform == platform,
            Identity.platform_id == author.platform_id,
        )
    )
    if identity is not None:
        _refresh(identity, author)
        return identity.contact_id
    contact = Contact(
        account_id=account_id,
        name=author.display_name or author.handle,
        email=author.email,
        phone=author.phone,
        language=author.language,
    )
    session.add(contact)
    await session.flush()
    inserted = await session.scalar(
        insert(Identity)
        .values(
            account_id=account_id,
            contact_id=contact.id,
            platform=platform,
            platform_id=author.platform_id,
            handle=author.handle,
            display_name=author.display_name,
            followers=author.followers,
            verified=author.verified,
        )
        .on_conflict_do_nothing(index_elements=["account_id", "platform", "platform_id"])
        .returning(Identity.contact_id)
    )
    if inserted is not None:
        return int(inserted)
    # Another transaction created this identity first: use its contact, drop ours.
    await session.delete(contact)
    existing = await session.scalar(
        select(Identity.contact_id).where(
            Identity.account_id == account_id,
            Identity.platform == platform,
            Identity.platform_id == author.platform_id,
        )
    )
    assert existing is not None
    return existing


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
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
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
