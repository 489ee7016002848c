"""Channel accounts (inboxes): the only code that writes them."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from allo.channels.credentials import CredentialsCipher
from allo.channels.models import CHANNEL_KINDS, ChannelAccount


async def create_channel_account(
    session: AsyncSession,
    account_id: int,
    kind: str,
    name: str,
    external_id: str,
    credentials: dict[str, str] | None = None,
    cipher: CredentialsCipher | None = None,
    settings: dict[str, object] | None = None,
) -> ChannelAccount:
    if kind not in CHANNEL_KINDS:
        raise ValueError(f"kind: one of {', '.join(CHANNEL_KINDS)}")
    encrypted = None
    if credentials:
        if cipher is None:
            raise ValueError("credentials need a cipher to be stored encrypted")
        encrypted = cipher.encrypt(credentials)
    channel_account = ChannelAccount(
        account_id=account_id,
        kind=kind,
        name=name,
        external_id=external_id,
        credentials_encrypted=encrypted,
        settings=settings or {},
    )
    session.add(channel_account)
    await session.flush()
    return channel_account


async def get_channel_account(
    session: AsyncSession, account_id: int, channel_account_id: int
) -> ChannelAccount | None:
    found: ChannelAccount | None = await session.scalar(
        select(ChannelAccount).where(
            ChannelAccount.account_id == account_id, ChannelAccount.id == channel_account_id
        )
    )
    return found


async def list_channel_accounts(session: AsyncSession, account_id: int) -> list[ChannelAccount]:
    rows = await session.scalars(
        select(ChannelAccount)
        .where(ChannelAccount.account_id == account_id)
        .order_by(ChannelAccount.id)
    )
    return list(rows.all())
