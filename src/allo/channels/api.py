"""The generic API channel: any system pushes customer messages as JSON.

Like Chatwoot's API inbox: a CRM, a form or a bot posts to `/api/v1/inboxes/{id}/messages`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from allo.channels.inbound import Author, InboundMessage, ParseError
from allo.channels.text import clean_text, html_to_text, sanitise_html

PARSER = "api"

ShortText = Annotated[str, Field(min_length=1, max_length=998)]


class ApiContact(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: ShortText = Field(description="The sender's id in the pushing system; one contact per id.")
    name: str | None = Field(default=None, max_length=300)
    handle: str | None = Field(default=None, max_length=320)
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=40)
    followers: int | None = Field(default=None, ge=0)
    verified: bool = False
    language: str | None = Field(default=None, max_length=8)


class ApiAttachment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048)
    content_type: str | None = Field(default=None, max_length=200)
    filename: str | None = Field(default=None, max_length=500)
    size: int | None = Field(default=None, ge=0)


class ApiInboundMessage(BaseModel):
    """A message pushed to `POST /api/v1/inboxes/{id}/messages`."""

    model_config = ConfigDict(extra="forbid")

    external_id: ShortText | None = Field(
        default=None,
        description="Your id for this message. The same id twice stores one message; "
        "without it (and without an Idempotency-Key header) every call is a new message.",
    )
    contact: ApiContact = Field(description="The customer the message comes from or goes to.")
    text: str | None = Field(default=None, max_length=100_000)
    html: str | None = Field(default=None, max_length=500_000)
    direction: Literal["in", "out"] = Field(
        default="in", description='"out" records a message the brand sent elsewhere.'
    )
    visibility: Literal["public", "private"] = "private"
    in_reply_to: ShortText | None = Field(
        default=None, description="external_id of the message this one answers."
    )
    references: list[ShortText] = Field(default_factory=list, max_length=100)
    thread_id: ShortText | None = Field(
        default=None, description="Groups public messages into one thread (a post's id)."
    )
    subject: str | None = Field(default=None, max_length=998)
    sent_at: datetime | None = None
    author_name: str | None = Field(
        default=None, max_length=300, description="Who wrote it, when not the contact."
    )
    attachments: list[ApiAttachment] = Field(default_factory=list, max_length=50)

    def has_content(self) -> bool:
        return bool((self.text and self.text.strip()) or self.html or self.attachments)


def validate(raw: bytes) -> ApiInboundMessage:
    """Validate a pushed message; raises ValidationError (shown to the sender as 422)."""
    message = ApiInboundMessage.model_validate_json(raw)
    if not message.has_content():
        raise ValueError("a message needs text, html or attachments")
    return message


def parse(
    raw: bytes, external_id: str, received_at: datetime, own_id: str = ""
) -> list[InboundMessage]:
    try:
        pushed = validate(raw)
    except (ValidationError, ValueError) as error:
        raise ParseError(str(error)) from error
    html = sanitise_html(pushed.html) if pushed.html else None
    text = clean_text(pushed.text) if pushed.text is not None else ""
    if not text.strip() and html:
        text = html_to_text(html)
    contact = pushed.contact
    sent_at = pushed.sent_at or received_at
    if sent_at.tzinfo is None:
        sent_at = sent_at.replace(tzinfo=UTC)
    return [
        InboundMessage(
            external_id=external_id,
            contact=Author(
                platform_id=clean_text(contact.id),
                handle=_optional(contact.handle),
                display_name=_optional(contact.name),
                followers=contact.followers,
                verified=contact.verified,
                email=_optional(contact.email),
                phone=_optional(contact.phone),
                language=_optional(contact.language),
            ),
            text=text,
            html=html,
            author_name=_optional(pushed.author_name),
            sent_at=sent_at,
            direction=pushed.direction,
            visibility=pushed.visibility,
            subject=_optional(pushed.subject),
            reply_to_external_id=pushed.in_reply_to,
            references=tuple(pushed.references),
            thread_key=pushed.thread_id,
            attachments=tuple(a.model_dump(exclude_none=True) for a in pushed.attachments),
        )
    ]


def _optional(value: str | None) -> str | None:
    return clean_text(value) if value else None
