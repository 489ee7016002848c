"""The Customer Support on Twitter export: one tweet per CSV row, brands answering customers.

`allo import` turns each row into an inbound event whose raw bytes are the row as JSON; this
parser reads them back as X messages. Customer ids in the export are anonymised numbers, and a
brand's reply starts with the customer's @id, which names the contact when the tweet it
answers is not in the export.
"""

from __future__ import annotations

import json
import re
from datetime import datetime

from allo.channels.inbound import Author, Direction, InboundMessage, ParseError
from allo.channels.text import clean_text

PARSER = "twcs"
COLUMNS = (
    "tweet_id",
    "author_id",
    "inbound",
    "created_at",
    "text",
    "response_tweet_id",
    "in_response_to_tweet_id",
)
CREATED_AT_FORMAT = "%a %b %d %H:%M:%S %z %Y"
LEADING_MENTIONS = re.compile(r"^(?:@(\w{1,50})\s*)+")
MENTION = re.compile(r"@(\w{1,50})")


def tweet_id(value: str) -> str:
    """Ids as written by pandas exports sometimes carry a '.0'; the id is the integer part."""
    return value.strip().removesuffix(".0")


def created_at(row: dict[str, str]) -> datetime:
    try:
        return datetime.strptime(row["created_at"].strip(), CREATED_AT_FORMAT)
    except (KeyError, ValueError) as error:
        raise ParseError(f"created_at: not a Twitter date: {row.get('created_at')!r}") from error


def is_inbound(row: dict[str, str]) -> bool:
    value = row.get("inbound", "").strip()
    if value not in ("True", "False"):
        raise ParseError(f"inbound: expected True or False, got {value!r}")
    return value == "True"


def leading_mentions(text: str) -> list[str]:
    match = LEADING_MENTIONS.match(text)
    return MENTION.findall(match.group(0)) if match else []


def parse(
    raw: bytes, external_id: str, received_at: datetime, own_id: str = ""
) -> list[InboundMessage]:
    try:
        row = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ParseError(f"not a JSON object: {error}") from error
    if not isinstance(row, dict) or any(not isinstance(row.get(c), str) for c in COLUMNS):
        raise ParseError(f"a TWCS row needs the string columns {', '.join(COLUMNS)}")
    text = clean_text(row["text"])
    author_id = clean_text(row["author_id"].strip())
    if not author_id:
        raise ParseError("author_id: empty")
    parent = tweet_id(row["in_response_to_tweet_id"]) or None
    direction: Direction
    if is_inbound(row):
        direction = "in"
        contact: Author | None = Author(platform_id=author_id, handle=author_id)
        author_name = None
    else:
        direction = "out"
        customers = [m for m in leading_mentions(text) if m.lower() != author_id.lower()]
        contact = Author(platform_id=customers[0], handle=customers[0]) if customers else None
        author_name = author_id
    return [
        InboundMessage(
            external_id=external_id,
            contact=contact,
            text=text,
            sent_at=created_at(row),
            direction=direction,
            visibility="public",
            author_name=author_name,
            reply_to_external_id=parent,
        )
    ]
