from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from allo.conversations.schemas import MessageOut


class ReplyIn(BaseModel):
    kind: Literal["reply", "note"] = Field(
        "reply", description="`reply`: to the customer, in the conversation's channel; `note`."
    )
    text: str = Field(min_length=1, max_length=20_000)
    idempotency_key: str = Field(
        min_length=1,
        max_length=200,
        description="Sending again with the same key writes nothing new and answers the same.",
    )
    seen_message_id: int | None = Field(
        None,
        description="The last message the writer saw: a reply is refused (409) when someone "
        "else answered after it.",
    )


class ReplyOut(BaseModel):
    message: MessageOut
    created: bool


class OutboxPage(BaseModel):
    messages: list[MessageOut]
