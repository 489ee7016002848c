"""Parsers by name, so intake has no per-channel branches."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from allo.channels import api, email, twcs
from allo.channels.inbound import InboundMessage, ParseError

Parser = Callable[[bytes, str, datetime], list[InboundMessage]]

PARSERS: dict[str, Parser] = {
    api.PARSER: api.parse,
    email.PARSER: email.parse,
    twcs.PARSER: twcs.parse,
}


def parser_for(name: str) -> Parser:
    try:
        return PARSERS[name]
    except KeyError:
        raise ParseError(f"no parser named {name!r}") from None
