"""Accounts, users and API tokens: the only code that writes them."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from allo.accounts.models import ROLES, Account, ApiToken, User

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
