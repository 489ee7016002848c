"""A WhatsApp channel connected to the fake Cloud API, and the webhook bodies it receives.

Its fixtures (`cloud`: the fake served on loopback; `whatsapp`: an account connected to it)
are registered for every test by tests/conftest.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from allo.accounts import service as accounts
from allo.channels import service as channels
from allo.channels.credentials import CredentialsCipher, load_key
from allo.channels.signatures import meta_signature
from allo.db.engine import Database
from allo.settings import Settings
from tests.fakes.server import serving
from tests.fakes.whatsapp_cloud import ACCESS_TOKEN, APP_SECRET, PHONE_NUMBER_ID, FakeWhatsAppCloud

VERIFY_TOKEN = "a-verify-token"
CUSTOMER = "33612345678"


@dataclass
class Connected:
    account_id: int
    channel_id: int
    fake: FakeWhatsAppCloud


async def connect_whatsapp(
    db: Database, settings: Settings, fake: FakeWhatsAppCloud, url: str
) -> Connected:
    """An account with a WhatsApp number whose API is the fake at `url`."""
    async with db.transaction() as session:
        account = await accounts.create_account(session, "Brand")
        channel = await channels.connect_channel(
            session,
            account.id,
            "whatsapp",
            "WhatsApp",
            PHONE_NUMBER_ID,
            {"access_token": ACCESS_TOKEN, "app_secret": APP_SECRET, "verify_token": VERIFY_TOKEN},
            CredentialsCipher(load_key(settings)),
            {"api_url": url},
        )
    return Connected(account.id, channel.id, fake)


@pytest.fixture
def cloud() -> Iterator[tuple[FakeWhatsAppCloud, str]]:
    fake = FakeWhatsAppCloud()
    with serving(fake.app) as url:
        yield fake, url


@pytest.fixture
async def whatsapp(
    db: Database, settings: Settings, cloud: tuple[FakeWhatsAppCloud, str]
) -> Connected:
    return await connect_whatsapp(db, settings, *cloud)


def change(value: dict[str, Any]) -> bytes:
    body = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "15550783881",
                                "phone_number_id": PHONE_NUMBER_ID,
                            },
                            **value,
                        },
                    }
                ],
            }
        ],
    }
    return json.dumps(body).encode()


def text_message(wamid: str, text: str, sent: int = 1_764_400_000) -> bytes:
    return change(
        {
            "contacts": [{"profile": {"name": "Léa Martin"}, "wa_id": CUSTOMER}],
            "messages": [
                {
                    "from": CUSTOMER,
                    "id": wamid,
                    "timestamp": str(sent),
                    "type": "text",
                    "text": {"body": text},
                }
            ],
        }
    )


def status(wamid: str, kind: str, key: str | None = None) -> bytes:
    update: dict[str, Any] = {
        "id": wamid,
        "status": kind,
        "timestamp": "1764400100",
        "recipient_id": CUSTOMER,
    }
    if key:
        update["biz_opaque_callback_data"] = key
    return change({"statuses": [update]})


def signed(raw: bytes, secret: str = APP_SECRET) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Hub-Signature-256": meta_signature(secret, raw)}
