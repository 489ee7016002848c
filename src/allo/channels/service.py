"""Channel accounts (inboxes): the only code that writes them."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession

from allo.accounts.models import User
from allo.channels.credentials import CredentialsCipher
from allo.channels.models import CHANNEL_KINDS, ChannelAccount
from allo.channels.outbound import Connection, Health
from allo.channels.registry import NETWORKS, network_for
from allo.db.engine import Database
from allo.intake.recording import NewEvent, record_many
from allo.routing.models import Notification

logger = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class Listening:
    """What a webhook needs of its channel account to check and record an event."""

    channel_account_id: int
    account_id: int
    kind: str
    credentials: Mapping[str, str]


async def listening(
    session: AsyncSession, channel_account_id: int, cipher: CredentialsCipher
) -> Listening | None:
    """The channel account a webhook names, when it is one of a network's."""
    channel_account = await session.get(ChannelAccount, channel_account_id)
    if (
        channel_account is None
        or network_for(channel_account.kind) is None
        or channel_account.credentials_encrypted is None
    ):
        return None
    credentials = (
        cipher.decrypt(channel_account.credentials_encrypted)
        if channel_account.credentials_encrypted
        else {}
    )
    return Listening(
        channel_account.id, channel_account.account_id, channel_account.kind, credentials
    )


def health_of(health: Health) -> dict[str, Any]:
    """A health check as stored on the channel account."""
    return {
        "ok": health.ok,
        "problems": list(health.problems),
        "token_expires_at": _iso(health.token_expires_at),
        "subscribed": health.subscribed,
        "checked_at": _iso(health.checked_at),
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


async def check(
    session: AsyncSession,
    channel_account: ChannelAccount,
    cipher: CredentialsCipher,
    http: httpx.AsyncClient,
    now: datetime,
) -> Health:
    """Check one connection now and keep the result; admins are told when it breaks."""
    network = network_for(channel_account.kind)
    if network is None:
        return Health(ok=True, checked_at=now)
    try:
        found = await network.check(connect(channel_account, cipher, http))
    except Exception as error:
        found = Health(ok=False, problems=(f"the check itself failed: {error}",))
    health = replace(found, checked_at=now)
    was_ok = (channel_account.health or {}).get("ok", True)
    channel_account.health = health_of(health)
    if was_ok and not health.ok:
        await _alert_admins(session, channel_account, health, now)
    await session.flush()
    return health


async def _alert_admins(
    session: AsyncSession, channel_account: ChannelAccount, health: Health, now: datetime
) -> None:
    admins = await session.scalars(
        select(User.id).where(User.account_id == channel_account.account_id, User.role == "admin")
    )
    problems = "; ".join(health.problems) or "it does not answer"
    for admin_id in admins:
        session.add(
            Notification(
                account_id=channel_account.account_id,
                user_id=admin_id,
                kind="channel_broken",
                text=f"{channel_account.name} ({channel_account.kind}) stopped working: {problems}"[
                    :1000
                ],
                created_at=now,
            )
        )


async def check_all(
    db: Database, cipher: CredentialsCipher, http: httpx.AsyncClient, every: timedelta
) -> int:
    """Check every network connection not checked within `every`; returns how many."""
    now = datetime.now(UTC)
    checked = 0
    async for session, channel_account in _each_connected(db):
        if _due(channel_account.health, every, now):
            await check(session, channel_account, cipher, http, now)
            checked += 1
    return checked


async def _each_connected(
    db: Database, *conditions: ColumnElement[bool]
) -> AsyncIterator[tuple[AsyncSession, ChannelAccount]]:
    """Each connected network channel account (meeting `conditions`), locked in a transaction
    of its own: one slow network holds up no other, and two workers never do one twice."""
    async with db.sessions() as session:
        ids = (
            await session.scalars(
                select(ChannelAccount.id).where(
                    ChannelAccount.kind.in_(list(NETWORKS)),
                    ChannelAccount.credentials_encrypted.is_not(None),
                    *conditions,
                )
            )
        ).all()
    for channel_account_id in ids:
        async with db.transaction() as session:
            channel_account = await session.get(
                ChannelAccount, channel_account_id, with_for_update=True
            )
            if channel_account is not None:
                yield session, channel_account


def _due(health: dict[str, Any] | None, every: timedelta, now: datetime) -> bool:
    checked_at = (health or {}).get("checked_at")
    return checked_at is None or datetime.fromisoformat(checked_at) + every <= now


POLL_SETTING = "poll_seconds"


async def poll_due(db: Database, cipher: CredentialsCipher, http: httpx.AsyncClient) -> int:
    """Fetch what webhooks cannot deliver, for channel accounts that poll (`poll_seconds`),
    and record it like a webhook's events; returns how many events were new."""
    now = datetime.now(UTC)
    new = 0
    polling = ChannelAccount.settings.has_key(POLL_SETTING)
    async for session, channel_account in _each_connected(db, polling):
        if _poll_due(channel_account, now):
            new += await _poll(session, channel_account, cipher, http, now)
    return new


def _poll_due(channel_account: ChannelAccount, now: datetime) -> bool:
    seconds = float(channel_account.settings.get(POLL_SETTING) or 0)
    last = channel_account.fetched_at
    return seconds > 0 and (last is None or last + timedelta(seconds=seconds) <= now)


async def _poll(
    session: AsyncSession,
    channel_account: ChannelAccount,
    cipher: CredentialsCipher,
    http: httpx.AsyncClient,
    now: datetime,
) -> int:
    network = network_for(channel_account.kind)
    assert network is not None
    try:
        fetched = await network.fetch(
            connect(channel_account, cipher, http), channel_account.fetch_cursor
        )
    except Exception as error:
        logger.warning("polling %s failed: %s", channel_account.id, error)
        channel_account.fetched_at = now
        return 0
    recorded = await record_many(
        session,
        [
            NewEvent(
                account_id=channel_account.account_id,
                channel_account_id=channel_account.id,
                parser=network.PARSER,
                external_id=key,
                raw=raw,
                content_type="application/json",
                headers={"x-allo-polled": now.isoformat()},
            )
            for key, raw in fetched.events
        ],
    )
    channel_account.fetch_cursor = fetched.cursor
    channel_account.fetched_at = now
    return sum(1 for r in recorded if not r.duplicate)


class ConnectError(ValueError):
    """A channel account that cannot be connected as given."""


async def connect_channel(
    session: AsyncSession,
    account_id: int,
    kind: str,
    name: str,
    external_id: str,
    credentials: dict[str, str],
    cipher: CredentialsCipher,
    settings: dict[str, object] | None = None,
) -> ChannelAccount:
    """Connect a network's account with its credentials (stored encrypted). A Meta channel
    without a verify token gets a random one, to give Meta when subscribing the webhook."""
    network = network_for(kind)
    if network is None:
        raise ConnectError(f"kind: one of {', '.join(NETWORKS)}")
    if not external_id.strip():
        raise ConnectError("the account's id on the network is needed (page, number or user id)")
    given = {key: value.strip() for key, value in credentials.items() if value and value.strip()}
    if "verify_token" in network.CREDENTIALS and "verify_token" not in given:
        given["verify_token"] = secrets.token_urlsafe(24)
    missing = [key for key in network.CREDENTIALS if key not in given]
    if missing:
        raise ConnectError(f"{kind} needs {', '.join(missing)}")
    taken = await session.scalar(
        select(ChannelAccount.id).where(
            ChannelAccount.account_id == account_id,
            ChannelAccount.kind == kind,
            ChannelAccount.external_id == external_id.strip(),
        )
    )
    if taken is not None:
        raise ConnectError(f"{kind} {external_id} is connected already (channel {taken})")
    return await create_channel_account(
        session, account_id, kind, name, external_id.strip(), given, cipher, settings
    )


def webhook_url(base_url: str, channel_account_id: int) -> str:
    return f"{base_url.rstrip('/')}/webhooks/{channel_account_id}"
