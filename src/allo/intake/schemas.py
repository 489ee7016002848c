from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class Accepted(BaseModel):
    event_id: int
    duplicate: bool
    status: str = "accepted"


class InboundEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    channel_account_id: int
    parser: str
    external_id: str
    status: str
    attempts: int
    error: str | None
    received_at: datetime
    processed_at: datetime | None
    message_ids: list[int]


class RetryRequest(BaseModel):
    event_ids: list[int] | None = None


class RetryResult(BaseModel):
    requeued: int
