"""In-process domain events and their listeners.

Services record events on the session; they are dispatched only after the transaction that
caused them commits, so a listener never sees a change that was rolled back. Triage, routing,
realtime and reporting hang off these events (later issues), never off ORM hooks. A failing
listener is logged and does not undo or block anything.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

logger = logging.getLogger(__name__)

E = TypeVar("E")
Listener = Callable[[Any], Awaitable[None]]

_listeners: dict[type, list[Listener]] = defaultdict(list)
_PENDING_KEY = "allo.domain_events"


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
