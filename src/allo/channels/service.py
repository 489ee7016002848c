"""Channel accounts (inboxes): the only code that writes them."""

from __future__ import annotations

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from allo.channels.credentials import CredentialsCipher
from allo.channels.models import CHANNEL_KINDS, ChannelAccount
from allo.channels.outbound import Connection
from allo.channels.registry import network_for


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


def connect(
    channel_account: ChannelAccount, cipher: CredentialsCipher, http: httpx.AsyncClient
) -> Connection:
    """The channel account as its network module sees it: credentials decrypted, and the
    network's API address (the account's `api_url` setting, else the network's own)."""
    network = network_for(channel_account.kind)
    if network is None:
        raise ValueError(f"{channel_account.kind} channels have no network to connect to")
    credentials = (
        cipher.decrypt(channel_account.credentials_encrypted)
        if channel_account.credentials_encrypted
        else {}
    )
    api_url = str(channel_account.settings.get("api_url") or network.DEFAULT_API_URL)
    return Connection(
        channel_account_id=channel_account.id,
        kind=channel_account.kind,
        external_id=channel_account.external_id,
        credentials=credentials,
        settings=dict(channel_account.settings),
        api_url=api_url.rstrip("/"),
        http=http,
    )
