from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class InboxOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    name: str
    external_id: str
    created_at: datetime


class ApiInboxCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
