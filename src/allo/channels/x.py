"""X: Account Activity / X Activity API webhooks and API v2."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from allo.channels.inbound import Parsed
from allo.channels.outbound import Connection, Fetched, Health, Lookup, Outgoing, Sent

KINDS = ("x",)
PARSER = "x"
CREDENTIALS = (
    "access_token",
    "consumer_secret",
)
DEFAULT_API_URL = "https://api.x.com"


def verify(headers: Mapping[str, str], raw: bytes, credentials: Mapping[str, str]) -> None:
    raise NotImplementedError


def handshake(query: Mapping[str, str], credentials: Mapping[str, str]) -> tuple[str, str]:
    raise NotImplementedError


def parse(raw: bytes, external_id: str, received_at: datetime, own_id: str) -> Sequence[Parsed]:
    raise NotImplementedError


async def send(connection: Connection, outgoing: Outgoing) -> Sent:
    raise NotImplementedError


async def find_sent(connection: Connection, outgoing: Outgoing) -> Lookup:
    raise NotImplementedError


async def fetch(connection: Connection, cursor: str | None) -> Fetched:
    raise NotImplementedError


async def check(connection: Connection) -> Health:
    raise NotImplementedError


async def media_request(
    connection: Connection, attachment: Mapping[str, Any]
) -> tuple[str, dict[str, str]] | None:
    raise NotImplementedError
