"""Who is asking: bearer tokens for the API, session cookies (with CSRF tokens) for pages."""

from __future__ import annotations

import hmac
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Generic, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from allo.accounts import service as accounts
from allo.accounts.models import User
from allo.accounts.service import SignedIn, TokenOwner
from allo.web.errors import ApiError, CsrfRejected, SignInRequired
from allo.web.state import AppState

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """A small in-process cache: verified tokens are not looked up on every request."""

    def __init__(self, seconds: float, max_entries: int = 10_000) -> None:
        self._seconds = seconds
        self._max_entries = max_entries
        self._entries: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key: K, value: V) -> None:
        if len(self._entries) >= self._max_entries:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + self._seconds, value)


bearer = HTTPBearer(auto_error=False, description="An API token made by `allo token create`.")


async def token_owner(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> TokenOwner:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(401, "unauthenticated", "an API token is required: Authorization: Bearer …")
    return await owner_of(request.app.state.allo, credentials.credentials)


async def request_owner(request: Request) -> TokenOwner:
    """The same check as `token_owner`, without FastAPI's dependency machinery (hot paths)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthenticated", "an API token is required: Authorization: Bearer …")
    return await owner_of(request.app.state.allo, token.strip())


async def owner_of(state: AppState, token: str) -> TokenOwner:
    owner = state.tokens.get(token)
    if owner is None:
        async with state.db.sessions() as session:
            owner = await accounts.authenticate_token(session, token)
        if owner is None:
            raise ApiError(401, "unauthenticated", "this API token is not valid")
        state.tokens.put(token, owner)
    return owner


Owner = Annotated[TokenOwner, Depends(token_owner)]


SESSION_COOKIE = "allo_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def signed_in(request: Request) -> SignedIn:
    """The signed-in user of a page request. A request that changes something must carry the
    session's CSRF token, in the `X-CSRF-Token` header (htmx) or the `csrf_token` form field:
    another site can make a browser send the cookie, never the token."""
    state: AppState = request.app.state.allo
    token = request.cookies.get(SESSION_COOKIE)
    user = None
    if token:
        async with state.db.transaction() as session:
            user = await accounts.web_session_of(
                session, token, datetime.now(UTC), state.settings.session_lifetime
            )
    if user is None:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(path)
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER)
        if sent is None and _is_form(request):
            sent = str((await request.form()).get(CSRF_FIELD, ""))
        if not sent or not hmac.compare_digest(sent.encode(), user.csrf_token.encode()):
            raise CsrfRejected()
    return user


def _is_form(request: Request) -> bool:
    kind = request.headers.get("content-type", "")
    return kind.startswith(("application/x-www-form-urlencoded", "multipart/form-data"))


Agent = Annotated[SignedIn, Depends(signed_in)]


async def require_role(session: AsyncSession, owner: TokenOwner, roles: Sequence[str]) -> None:
    """403 unless the token's person has one of `roles`. An account-wide token (no person)
    is the integration an admin made it for, and may."""
    user = await session.get(User, owner.user_id) if owner.user_id else None
    if user is not None and user.role not in roles:
        raise ApiError(403, "forbidden", f"only {' and '.join(roles)}s may change this")


class SignInThrottle:
    """Failed sign-ins per email and per client address, in this process: past the limit
    within the window, sign-in is refused (429) before any password is checked, so a guessing
    script gets a few tries an hour rather than thousands."""

    def __init__(
        self, per_email: int = 10, per_address: int = 50, window_seconds: float = 900.0
    ) -> None:
        self._limits = {"email": per_email, "address": per_address}
        self._window = window_seconds
        self._failures: dict[tuple[str, str], list[float]] = {}

    def _recent(self, key: tuple[str, str]) -> list[float]:
        since = time.monotonic() - self._window
        kept = [moment for moment in self._failures.get(key, []) if moment > since]
        if kept:
            self._failures[key] = kept
        else:
            self._failures.pop(key, None)
        return kept

    def blocked(self, email: str, address: str) -> bool:
        keys = (("email", email.strip().lower()), ("address", address))
        return any(len(self._recent(key)) >= self._limits[key[0]] for key in keys)

    def failed(self, email: str, address: str) -> None:
        if len(self._failures) > 100_000:
            self._failures.clear()
        for key in (("email", email.strip().lower()), ("address", address)):
            self._failures.setdefault(key, []).append(time.monotonic())
