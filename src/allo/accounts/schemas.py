from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class AccountIn(BaseModel):
    name: str | None = Field(None, max_length=200)
    languages: list[str] | None = Field(
        None, description="The languages triage chooses among (fr, en, de, es, it, nl, pt)"
    )
    approve_public_replies: bool | None = Field(
        None, description="Agents' public replies wait for an admin's or supervisor's approval"
    )


class AccountOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    settings: dict[str, Any]
