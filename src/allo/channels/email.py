"""Email as RFC 5322 bytes: threading headers, plain and HTML bodies, attachments."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime

from allo.channels.inbound import Author, InboundMessage, ParseError
from allo.channels.text import clean_text, html_to_text, sanitise_html

PARSER = "email"
MESSAGE_ID = re.compile(r"<([^<>\s]+)>")


def _message(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def _ids(value: str | None) -> list[str]:
    return MESSAGE_ID.findall(value or "")


def message_id(raw: bytes) -> str:
    """The Message-ID, or a digest of the bytes for a message that has none."""
    ids = _ids(_header(_message(raw), "Message-ID"))
    return ids[0] if ids else "sha256:" + hashlib.sha256(raw).hexdigest()


def _header(message: EmailMessage, name: str) -> str | None:
    try:
        value = message.get(name)
    except (ValueError, IndexError, TypeError):
        return None
    return str(value) if value is not None else None


def _sent_at(message: EmailMessage, received_at: datetime) -> datetime:
    try:
        sent = parsedate_to_datetime(_header(message, "Date") or "")
    except (TypeError, ValueError):
        return received_at
    return sent if sent.tzinfo else sent.replace(tzinfo=UTC)


def _body(message: EmailMessage, subtype: str) -> str | None:
    part = message.get_body(preferencelist=(subtype,))
    if part is None:
        return None
    try:
        content = part.get_content()
    except (LookupError, ValueError):
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return content if isinstance(content, str) else None


def _attachments(message: EmailMessage) -> tuple[dict[str, object], ...]:
    """Every part that is not a body, however deeply nested (Apple Mail nests them)."""
    bodies = {id(message.get_body(preferencelist=(kind,))) for kind in ("plain", "html")}
    found = []
    for part in message.walk():
        if part.is_multipart() or id(part) in bodies:
            continue
        if part.get_content_disposition() is None and not part.get_filename():
            continue
        payload = part.get_payload(decode=True)
        found.append(
            {
                "filename": clean_text(part.get_filename() or ""),
                "content_type": part.get_content_type(),
                "size": len(payload) if isinstance(payload, bytes) else 0,
            }
        )
    return tuple(found)


def parse(
    raw: bytes, external_id: str, received_at: datetime, own_id: str = ""
) -> list[InboundMessage]:
    message = _message(raw)
    senders = getaddresses([_header(message, "From") or ""])
    name, address = senders[0] if senders else ("", "")
    if "@" not in address:
        raise ParseError("From: no sender address")
    html = _body(message, "html")
    text = _body(message, "plain")
    if text is None:
        text = html_to_text(html) if html else ""
    in_reply_to = _ids(_header(message, "In-Reply-To"))
    return [
        InboundMessage(
            external_id=external_id,
            contact=Author(
                platform_id=address.lower(),
                handle=address.lower(),
                display_name=clean_text(name) or None,
                email=address.lower(),
            ),
            text=clean_text(text).strip(),
            html=sanitise_html(html) if html else None,
            sent_at=_sent_at(message, received_at),
            subject=clean_text(_header(message, "Subject") or "") or None,
            reply_to_external_id=in_reply_to[0] if in_reply_to else None,
            # A multi-id In-Reply-To names several parents: the others thread like References.
            references=tuple(_ids(_header(message, "References")) + in_reply_to[:0:-1]),
            attachments=_attachments(message),
        )
    ]
