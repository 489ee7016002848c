"""Proof that a webhook comes from the network: checked on the exact bytes, before parsing.

Meta (Facebook, Messenger, Instagram, WhatsApp) signs the body with the app secret
(`X-Hub-Signature-256: sha256=<hex HMAC-SHA256>`) and subscribes with a GET handshake; X signs
with the consumer secret (`x-twitter-webhooks-signature: sha256=<base64 HMAC-SHA256>`) and
checks Allo with a CRC challenge answered the same way.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping


class SignatureMissing(Exception):
    """No signature: answered 401."""


class SignatureInvalid(Exception):
    """A signature that does not match: answered 403."""


def _hmac(secret: str, message: bytes) -> bytes:
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()


def meta_signature(app_secret: str, raw: bytes) -> str:
    return "sha256=" + _hmac(app_secret, raw).hex()


def verify_meta(headers: Mapping[str, str], raw: bytes, app_secret: str) -> None:
    """Raises unless X-Hub-Signature-256 is the HMAC of these bytes (not of re-encoded JSON)."""
    given = headers.get("x-hub-signature-256")
    if not given:
        raise SignatureMissing("X-Hub-Signature-256 is missing")
    if not app_secret or not hmac.compare_digest(given.strip(), meta_signature(app_secret, raw)):
        raise SignatureInvalid("X-Hub-Signature-256 does not match the body")


def meta_handshake(query: Mapping[str, str], verify_token: str) -> str:
    """The challenge to echo when Meta subscribes with our verify token."""
    mode, token = query.get("hub.mode"), query.get("hub.verify_token", "")
    if mode != "subscribe" or not verify_token or not hmac.compare_digest(token, verify_token):
        raise SignatureInvalid("hub.mode or hub.verify_token does not match")
    return query.get("hub.challenge", "")


def x_signature(consumer_secret: str, message: bytes) -> str:
    return "sha256=" + base64.b64encode(_hmac(consumer_secret, message)).decode()


def x_crc_response(crc_token: str, consumer_secret: str) -> str:
    """The `response_token` X expects for a CRC challenge."""
    if not crc_token:
        raise SignatureInvalid("crc_token is missing")
    return x_signature(consumer_secret, crc_token.encode())


def verify_x(headers: Mapping[str, str], raw: bytes, consumer_secret: str) -> None:
    given = headers.get("x-twitter-webhooks-signature")
    if not given:
        raise SignatureMissing("x-twitter-webhooks-signature is missing")
    expected = x_signature(consumer_secret, raw)
    if not consumer_secret or not hmac.compare_digest(given.strip(), expected):
        raise SignatureInvalid("x-twitter-webhooks-signature does not match the body")
