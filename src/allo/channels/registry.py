"""Channels by name, so intake, webhooks and the outbox have no per-channel branches."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from allo.channels import api, email, meta, twcs, whatsapp, x
from allo.channels.inbound import Parsed, ParseError
from allo.channels.outbound import Connection, Fetched, Health, Lookup, Outgoing, Sent

# raw bytes, the event's idempotency key, when it was received, the brand's own id on the
# network (the channel account's external id: a page id tells the brand's comments apart).
Parser = Callable[[bytes, str, datetime, str], Sequence[Parsed]]


class Network(Protocol):
    """What each social or messaging network module implements (x, meta, whatsapp)."""

    KINDS: tuple[str, ...]
    PARSER: str
    CREDENTIALS: tuple[str, ...]
    """Credential names an admin must give to connect an account."""
    DEFAULT_API_URL: str

    def verify(
        self, headers: Mapping[str, str], raw: bytes, credentials: Mapping[str, str]
    ) -> None:
        """Raise signatures.SignatureMissing / SignatureInvalid unless the webhook is genuine."""
        ...

    def handshake(
        self, query: Mapping[str, str], credentials: Mapping[str, str]
    ) -> tuple[str, str]:
        """The answer (body, media type) to the network's GET subscription check."""
        ...

    def parse(
        self, raw: bytes, external_id: str, received_at: datetime, own_id: str
    ) -> Sequence[Parsed]: ...

    async def send(self, connection: Connection, outgoing: Outgoing) -> Sent:
        """Send one message; raises outbound.SendError."""
        ...

    async def find_sent(self, connection: Connection, outgoing: Outgoing) -> Lookup:
        """After an interrupted send: whether the network has the message."""
        ...

    async def fetch(self, connection: Connection, cursor: str | None) -> Fetched:
        """What webhooks cannot deliver, since `cursor`."""
        ...

    async def check(self, connection: Connection) -> Health: ...

    async def media_request(
        self, connection: Connection, attachment: Mapping[str, Any]
    ) -> tuple[str, dict[str, str]] | None:
        """Where to download an attachment from and with which headers (a token where the
        network wants one); None when it cannot be downloaded."""
        ...


NETWORKS: dict[str, Network] = {
    kind: module for module in (meta, whatsapp, x) for kind in module.KINDS
}

PARSERS: dict[str, Parser] = {
    api.PARSER: api.parse,
    email.PARSER: email.parse,
    twcs.PARSER: twcs.parse,
    **{network.PARSER: network.parse for network in NETWORKS.values()},
}


def parser_for(name: str) -> Parser:
    try:
        return PARSERS[name]
    except KeyError:
        raise ParseError(f"no parser named {name!r}") from None


def network_for(kind: str) -> Network | None:
    """The network module of a channel kind; None for kinds without one (api, email…)."""
    return NETWORKS.get(kind)
