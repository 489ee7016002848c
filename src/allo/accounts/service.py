"""Accounts, users and API tokens: the only code that writes them."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from allo.accounts.models import ROLES, Account, ApiToken, PasswordReset, User, WebSession

TOKEN_PREFIX = "allo_"  # noqa: S105 (a prefix, not a secret)
_hasher = PasswordHasher()


async def create_account(session: AsyncSession, name: str) -> Account:
    account = Account(name=name, settings={})
    session.add(account)
    await session.flush()
    return account


def generate_password() -> str:
    return secrets.token_urlsafe(12)


async def create_user(
    session: AsyncSession, account_id: int, email: str, name: str, role: str, password: str
) -> User:
    if role not in ROLES:
        raise ValueError(f"role: one of {', '.join(ROLES)}")
    if len(password) < 8:
        raise ValueError("password: at least 8 characters")
    user = User(
        account_id=account_id,
        email=email.strip().lower(),
        name=name,
        role=role,
        password_hash=_hasher.hash(password),
    )
    session.add(user)
    await session.flush()
    return user


def password_matches(user: User, password: str) -> bool:
    try:
        return _hasher.verify(user.password_hash, password)
    except VerificationError:
        return False


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_api_token(
    session: AsyncSession, account_id: int, name: str, user_id: int | None = None
) -> str:
    """A new bearer token; only its digest is stored, so this is the one time it is seen."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(
        ApiToken(
            account_id=account_id, user_id=user_id, name=name, token_sha256=token_digest(token)
        )
    )
    await session.flush()
    return token


@dataclass(frozen=True)
class TokenOwner:
    token_id: int
    account_id: int
    user_id: int | None


async def authenticate_token(session: AsyncSession, token: str) -> TokenOwner | None:
    row = await session.scalar(
        select(ApiToken).where(
            ApiToken.token_sha256 == token_digest(token), ApiToken.revoked_at.is_(None)
        )
    )
    if row is None:
        return None
    return TokenOwner(token_id=row.id, account_id=row.account_id, user_id=row.user_id)


def set_password(user: User, password: str) -> None:
    if len(password) < 8:
        raise ValueError("password: at least 8 characters")
    user.password_hash = _hasher.hash(password)


# A session is extended when used, at most once in this interval (not a write per request).
SESSION_TOUCH = timedelta(minutes=5)
# Verified when no user has the email, so that an unknown address takes as long as a wrong
# password and does not tell who has an account.
_UNKNOWN_USER_HASH = _hasher.hash(secrets.token_urlsafe(16))


async def sign_in(session: AsyncSession, email: str, password: str) -> User | None:
    """The user with this email whose password matches (an email may exist in several
    accounts: the first account where the password matches)."""
    users = list(
        await session.scalars(
            select(User).where(User.email == email.strip().lower()).order_by(User.id)
        )
    )
    if not users:
        with_dummy = User(password_hash=_UNKNOWN_USER_HASH)
        password_matches(with_dummy, password)
        return None
    return next((user for user in users if password_matches(user, password)), None)


@dataclass(frozen=True)
class SignedIn:
    """The user behind a browser session, and the session's CSRF token."""

    session_id: int
    user_id: int
    account_id: int
    name: str
    email: str
    role: str
    language: str
    csrf_token: str


async def open_web_session(
    session: AsyncSession, user: User, now: datetime, lifetime: timedelta
) -> str:
    """A new browser session for this user; the cookie's value, shown this once."""
    token = secrets.token_urlsafe(32)
    session.add(
        WebSession(
            account_id=user.account_id,
            user_id=user.id,
            token_sha256=token_digest(token),
            csrf_token=secrets.token_urlsafe(32),
            last_seen_at=now,
            expires_at=now + lifetime,
        )
    )
    await session.flush()
    return token


async def web_session_of(
    session: AsyncSession, token: str, now: datetime, lifetime: timedelta
) -> SignedIn | None:
    """Who this cookie signs in, if its session is live; using it extends it."""
    row = (
        await session.execute(
            select(WebSession, User)
            .join(User, User.id == WebSession.user_id)
            .where(
                WebSession.token_sha256 == token_digest(token),
                WebSession.ended_at.is_(None),
                WebSession.expires_at > now,
            )
        )
    ).first()
    if row is None:
        return None
    web_session, user = row
    if now - web_session.last_seen_at > SESSION_TOUCH:
        web_session.last_seen_at = now
        web_session.expires_at = now + lifetime
    return SignedIn(
        session_id=web_session.id,
        user_id=user.id,
        account_id=user.account_id,
        name=user.name,
        email=user.email,
        role=user.role,
        language=user.language,
        csrf_token=web_session.csrf_token,
    )


async def session_is_live(session: AsyncSession, session_id: int, now: datetime) -> bool:
    found = await session.scalar(
        select(WebSession.id).where(
            WebSession.id == session_id,
            WebSession.ended_at.is_(None),
            WebSession.expires_at > now,
        )
    )
    return found is not None


async def end_web_session(session: AsyncSession, session_id: int, now: datetime) -> None:
    await session.execute(
        update(WebSession).where(WebSession.id == session_id).values(ended_at=now)
    )


RESET_LIFETIME = timedelta(hours=1)
# Links sent per user and hour at most: a form anyone can fill must not flood a mailbox.
RESETS_PER_HOUR = 3


@dataclass(frozen=True)
class ResetLink:
    email: str
    name: str
    language: str
    token: str


async def request_password_reset(
    session: AsyncSession, email: str, now: datetime
) -> list[ResetLink]:
    """A one-hour link for each user with this email (one per account), unless three were
    sent to them within the hour. The caller mails them; who has an account is never said."""
    users = await session.scalars(select(User).where(User.email == email.strip().lower()))
    links = []
    for user in users:
        recent = await session.scalar(
            select(func.count())
            .select_from(PasswordReset)
            .where(
                PasswordReset.user_id == user.id, PasswordReset.created_at > now - RESET_LIFETIME
            )
        )
        if (recent or 0) >= RESETS_PER_HOUR:
            continue
        token = secrets.token_urlsafe(32)
        session.add(
            PasswordReset(
                account_id=user.account_id,
                user_id=user.id,
                token_sha256=token_digest(token),
                expires_at=now + RESET_LIFETIME,
                created_at=now,
            )
        )
        links.append(ResetLink(user.email, user.name, user.language, token))
    await session.flush()
    return links


async def reset_link_works(session: AsyncSession, token: str, now: datetime) -> bool:
    return await _live_reset(session, token, now) is not None


async def _live_reset(session: AsyncSession, token: str, now: datetime) -> PasswordReset | None:
    found: PasswordReset | None = await session.scalar(
        select(PasswordReset)
        .where(
            PasswordReset.token_sha256 == token_digest(token),
            PasswordReset.used_at.is_(None),
            PasswordReset.expires_at > now,
        )
        .with_for_update()
    )
    return found


async def reset_password(
    session: AsyncSession, token: str, password: str, now: datetime
) -> User | None:
    """Set a new password through a live link (None: used, expired or unknown). The link and
    every other link of the user stop working, and the user's sessions end everywhere."""
    reset = await _live_reset(session, token, now)
    if reset is None:
        return None
    user = await session.get(User, reset.user_id)
    if user is None:
        return None
    set_password(user, password)
    await session.execute(
        update(PasswordReset)
        .where(PasswordReset.user_id == user.id, PasswordReset.used_at.is_(None))
        .values(used_at=now)
    )
    await session.execute(
        update(WebSession)
        .where(WebSession.user_id == user.id, WebSession.ended_at.is_(None))
        .values(ended_at=now)
    )
    return user


async def set_profile(session: AsyncSession, user_id: int, name: str, language: str) -> None:
    await session.execute(
        update(User).where(User.id == user_id).values(name=name, language=language)
    )


ACCOUNT_LANGUAGES = ("fr", "en", "de", "es", "it", "nl", "pt")


class AccountError(ValueError):
    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


async def change_account(
    session: AsyncSession,
    account_id: int,
    name: str | None = None,
    languages: list[str] | None = None,
    approve_public_replies: bool | None = None,
) -> Account:
    """The account's name and settings: the languages triage chooses among, and whether
    agents' public replies wait for a supervisor's approval."""
    account = await session.get(Account, account_id, with_for_update=True)
    if account is None:
        raise LookupError(f"no account {account_id}")
    settings = dict(account.settings)
    if name is not None:
        if not name.strip() or len(name) > 200:
            raise AccountError("1 to 200 characters", "name")
        account.name = name.strip()
    if languages is not None:
        unknown = [code for code in languages if code not in ACCOUNT_LANGUAGES]
        if unknown or not languages:
            raise AccountError(f"one or more of {', '.join(ACCOUNT_LANGUAGES)}", "languages")
        settings["languages"] = list(dict.fromkeys(languages))
    if approve_public_replies is not None:
        settings["approve_public_replies"] = approve_public_replies
    account.settings = settings
    await session.flush()
    return account
