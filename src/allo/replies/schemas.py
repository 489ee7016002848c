from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from allo.conversations.schemas import MessageOut


class ReplyIn(BaseModel):
    kind: Literal["reply", "private_reply", "note"] = Field(
        "reply",
        description="`reply`: to the customer, in the conversation's channel and visibility; "
        "`private_reply`: privately in the same network (a public post answered by direct "
        "message); `note`: internal, never sent.",
    )
    text: str = Field(min_length=1, max_length=20_000)
    idempotency_key: str = Field(
        min_length=1,
        max_length=200,
        description="Sending again with the same key writes nothing new and answers the same.",
    )
    confirm_personal_data: bool = Field(
        False,
        description="A public reply holding personal data (card, IBAN, phone, email, address) "
        "is refused (422, `personal_data`) unless this is true.",
    )
    seen_message_id: int | None = Field(
        None,
        description="The last message the writer saw: a reply is refused (409) when someone "
        "else answered after it.",
    )
    in_reply_to_message_id: int | None = Field(
        None,
        description="The customer's message this reply answers: quoted on WhatsApp, the "
        "comment or post answered on public threads (default: the customer's latest).",
    )


class ReplyOut(BaseModel):
    message: MessageOut
    created: bool


class OutboxEntryOut(BaseModel):
    id: int
    status: str = Field(
        description="held (waiting for approval), queued, sending, sent, failed, rejected"
    )
    attempts: int
    last_error: str | None
    message: MessageOut


class OutboxPage(BaseModel):
    entries: list[OutboxEntryOut]


class CannedIn(BaseModel):
    shortcut: str = Field(min_length=1, max_length=50, examples=["refund-delay"])
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(
        min_length=1,
        max_length=5_000,
        description="The text; variables: {{contact.name}}, {{contact.first_name}}, "
        "{{agent.name}}, {{agent.first_name}}, {{conversation.id}}.",
    )
    language: str | None = Field(None, description="fr, en…; null: for every language.")


class CannedOut(CannedIn):
    model_config = ConfigDict(from_attributes=True)

    id: int


class SuggestionOut(BaseModel):
    text: str
    score: float = Field(description="Trigram similarity of the two customer messages, 0 to 1")
    from_conversation_id: int


class TemplateIn(BaseModel):
    name: str = Field(min_length=1, max_length=512, examples=["order_update"])
    language: str = Field(min_length=2, max_length=16, examples=["fr"])
    body: str = Field(min_length=1, max_length=1_024, examples=["Bonjour {{1}}, votre commande…"])


class TemplateOut(TemplateIn):
    model_config = ConfigDict(from_attributes=True)

    id: int
    channel: str


class TemplateMessageIn(BaseModel):
    template_id: int
    parameters: list[str] = Field(default_factory=list, max_length=20)
    idempotency_key: str = Field(min_length=1, max_length=200)
