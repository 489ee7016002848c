"""In-process domain events and their listeners.

Services record events on the session; they are dispatched only after the transaction that
caused them commits, so a listener never sees a change that was rolled back. Triage, routing,
realtime and reporting hang off these events (later issues), never off ORM hooks. A failing
listener is logged and does not undo or block anything.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

logger = logging.getLogger(__name__)

E = TypeVar("E")
Listener = Callable[[Any], Awaitable[None]]

_listeners: dict[type, list[Listener]] = defaultdict(list)
_PENDING_KEY = "allo.domain_events"
# The PostgreSQL NOTIFY channel that tells open workspaces what changed (`web.realtime`).
REALTIME_CHANNEL = "allo_realtime"
# Conversation ids per notification: a payload stays far under NOTIFY's 8,000 bytes.
ANNOUNCED_PER_NOTIFY = 200


@dataclass(frozen=True)
class MessageReceived:
    """A message joined a conversation (from the customer, or the brand's own seen by a channel)."""

    account_id: int
    conversation_id: int
    message_id: int
    direction: str
    conversation_created: bool


def subscribe(event_type: type[E]) -> Callable[[Callable[[E], Awaitable[None]]], Listener]:
    def register(listener: Callable[[E], Awaitable[None]]) -> Listener:
        _listeners[event_type].append(listener)
        return listener

    return register


def unsubscribe(event_type: type, listener: Listener) -> None:
    _listeners[event_type].remove(listener)


def record(session: AsyncSession, event: object) -> None:
    session.info.setdefault(_PENDING_KEY, []).append(event)


def take_recorded(session: AsyncSession) -> list[object]:
    recorded: list[object] = session.info.pop(_PENDING_KEY, [])
    return recorded


async def dispatch(events: Iterable[object]) -> None:
    for event in events:
        for listener in list(_listeners[type(event)]):
            try:
                await listener(event)
            except Exception:
                logger.exception("listener %s failed on %r", listener.__qualname__, event)


async def announce(
    session: AsyncSession, account_id: int, kind: str, conversation_ids: Iterable[int]
) -> None:
    """Tell the account's open workspaces, in every `allo serve` process, that these
    conversations changed (`kind`: message, assignment, status). PostgreSQL delivers the
    notification when the transaction commits, and never if it rolls back."""
    ids = sorted(set(conversation_ids))
    for start in range(0, len(ids), ANNOUNCED_PER_NOTIFY):
        payload = {
            "account": account_id,
            "kind": kind,
            "conversations": ids[start : start + ANNOUNCED_PER_NOTIFY],
        }
        await session.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": REALTIME_CHANNEL, "payload": json.dumps(payload)},
        )


async def announce_received(session: AsyncSession, recorded: Iterable[object]) -> None:
    """Announce the conversations that the recorded `MessageReceived` events touched."""
    by_account: dict[int, set[int]] = defaultdict(set)
    for event in recorded:
        if isinstance(event, MessageReceived):
            by_account[event.account_id].add(event.conversation_id)
    for account_id, conversation_ids in sorted(by_account.items()):
        await announce(session, account_id, "message", conversation_ids)


PRESENCE_STATES = ("viewing", "typing", "left")


async def announce_presence(
    session: AsyncSession,
    account_id: int,
    conversation_id: int,
    user_id: int,
    name: str,
    state: str,
) -> None:
    """Tell the others on a conversation that this person opened it, is typing, or left.
    Nothing is stored: browsers forget a presence not repeated within a short while."""
    payload = {
        "account": account_id,
        "kind": "presence",
        "conversations": [conversation_id],
        "user": {"id": user_id, "name": name[:100]},
        "state": state,
    }
    await session.execute(
        text("SELECT pg_notify(:channel, :payload)"),
        {"channel": REALTIME_CHANNEL, "payload": json.dumps(payload)},
    )
