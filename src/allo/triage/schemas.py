"""What triage says about one message (stored on the message, returned by the API and CLI)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SENTIMENT_LABELS = ("negative", "neutral", "positive")
# The score an agent's correction gives: certain, at the end of the scale its label names.
SENTIMENT_SCORES = {"negative": -1.0, "neutral": 0.0, "positive": 1.0}
INTENTS = (
    "question",
    "complaint",
    "incident",
    "praise",
    "suggestion",
    "purchase",
    "churn",
    "spam",
    "other",
)
URGENCY_REASONS = ("safety", "legal", "outage", "in_store")
PII_KINDS = ("card", "iban", "phone", "email", "address")


class Sentiment(BaseModel):
    label: str = Field(description="negative, neutral or positive")
    score: float = Field(description="from -1 (most negative) to 1 (most positive)")


class Assessment(BaseModel):
    language: str | None = Field(description="ISO 639-1 code; null when it cannot be told")
    sentiment: Sentiment
    intents: list[str] = Field(description=f"among {', '.join(INTENTS)} (and custom labels)")
    urgent: bool
    urgency: list[str] = Field(description=f"why: among {', '.join(URGENCY_REASONS)}")
    needs_answer: bool
    spam: bool
    offensive: bool
    pii: list[str] = Field(description=f"kinds found: among {', '.join(PII_KINDS)}")
    place: str | None = Field(description="the store or place named, if any")


class IntentLabelIn(BaseModel):
    name: str = Field(min_length=1, max_length=80, pattern=r"^[^\s].*[^\s]$|^[^\s]$")
    description: str = Field(default="", max_length=2000)
    examples: list[str] = Field(
        default_factory=list, max_length=1000, description="Example messages of this intent"
    )


class IntentLabelOut(IntentLabelIn):
    model_config = ConfigDict(from_attributes=True)

    id: int


class CorrectionIn(BaseModel):
    field: Literal["intent", "sentiment", "spam", "offensive", "language", "needs_answer"]
    value: Any = Field(
        description="intent: a label or a list of labels; sentiment: negative, neutral or "
        "positive; language: an ISO 639-1 code; spam, offensive, needs_answer: true or false"
    )


class CorrectionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    message_id: int
    field: str
    previous: Any
    value: Any
    created_at: datetime


class IntentModelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    version: int
    active: bool
    labels: list[str]
    examples: int
    corrections: int
    metrics: dict[str, Any]
    trained_at: datetime
