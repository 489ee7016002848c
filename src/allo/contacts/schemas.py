from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class IdentityOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    platform: str
    platform_id: str
    handle: str | None
    display_name: str | None
    followers: int | None
    verified: bool


class ContactOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str | None
    email: str | None
    phone: str | None
    language: str | None
    attributes: dict[str, Any]
    created_at: datetime


class ContactDetail(ContactOut):
    identities: list[IdentityOut]


class ContactPage(BaseModel):
    contacts: list[ContactOut]
    next_cursor: str | None


class MergeIn(BaseModel):
    contact_id: int = Field(description="The contact merged into this one (then deleted)")
