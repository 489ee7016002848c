"""What the web process holds for its lifetime."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from allo.channels.credentials import CredentialsCipher
from allo.db.engine import Database
from allo.intake.service import Recorder
from allo.jobs import IntakeKicker
from allo.settings import Settings
from allo.web.realtime import Realtime

if TYPE_CHECKING:
    from allo.accounts.service import TokenOwner
    from allo.channels.service import Listening
    from allo.web.auth import SignInThrottle, TtlCache


@dataclass
class AppState:
    settings: Settings
    db: Database
    kicker: IntakeKicker
    recorder: Recorder
    tokens: TtlCache[str, TokenOwner]
    inboxes: TtlCache[tuple[int, int], str]
    webhooks: TtlCache[int, Listening]
    cipher: CredentialsCipher
    realtime: Realtime
    sign_ins: SignInThrottle


async def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.allo
    return state


State = Annotated[AppState, Depends(app_state)]
