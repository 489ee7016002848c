"""`allo channel add / list / check`, run for real as subprocesses against the test database
and a fake of the network's API."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from allo.channels.credentials import CredentialsCipher, load_key
from allo.settings import Settings
from tests.conftest import RunAllo
from tests.fakes.server import serving
from tests.fakes.whatsapp_cloud import (
    ACCESS_TOKEN,
    APP_SECRET,
    PHONE_NUMBER_ID,
    WABA_ID,
    FakeWhatsAppCloud,
)
from tests.test_cli import create_account, rows


@pytest.fixture
def cloud() -> Iterator[tuple[FakeWhatsAppCloud, str]]:
    fake = FakeWhatsAppCloud()
    with serving(fake.app) as url:
        yield fake, url


def add_whatsapp(run_allo: RunAllo, account_id: int, api_url: str, *extra: str) -> int:
    result = run_allo(
        "channel", "add", "whatsapp", "--account", str(account_id),
        "--external-id", PHONE_NUMBER_ID, "--access-token", ACCESS_TOKEN,
        "--app-secret", APP_SECRET, "--api-url", api_url, "--waba-id", WABA_ID, *extra,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    found = re.search(r"^channel (\d+)$", result.stdout, re.MULTILINE)
    assert found, result.stdout
    return int(found.group(1))


def test_channel_add_prints_the_webhook_url_and_a_random_verify_token_stored_encrypted(
    run_allo: RunAllo, database_url: str, tmp_path: Path, cloud: tuple[FakeWhatsAppCloud, str]
) -> None:
    account_id = create_account(run_allo)
    channel_id = add_whatsapp(run_allo, account_id, cloud[1])
    output = run_allo("channel", "list").stdout
    assert f"{channel_id}\taccount {account_id}\twhatsapp\t{PHONE_NUMBER_ID}" in output
    added = add_whatsapp  # the same number twice is refused below
    again = run_allo(
        "channel", "add", "whatsapp", "--account", str(account_id), "--external-id",
        PHONE_NUMBER_ID, "--access-token", "t", "--app-secret", "s",
    )  # fmt: skip
    assert again.returncode != 0 and "connected already" in again.stderr
    assert added is add_whatsapp
    [(encrypted, settings)] = rows(
        database_url, "SELECT credentials_encrypted, settings FROM channel_accounts WHERE id = %s",
        channel_id,
    )  # fmt: skip
    assert ACCESS_TOKEN.encode() not in bytes(encrypted) and APP_SECRET.encode() not in bytes(
        encrypted
    )
    key_settings = Settings(database_url=database_url, data_dir=tmp_path, _env_file=None)  # type: ignore[call-arg]
    credentials = CredentialsCipher(load_key(key_settings)).decrypt(bytes(encrypted))
    assert credentials["access_token"] == ACCESS_TOKEN
    assert len(credentials["verify_token"]) >= 24
    assert settings["api_url"] == cloud[1] and settings["waba_id"] == WABA_ID


def test_channel_add_prints_the_url_meta_must_call(
    run_allo: RunAllo, cloud: tuple[FakeWhatsAppCloud, str]
) -> None:
    account_id = create_account(run_allo)
    result = run_allo(
        "channel", "add", "whatsapp", "--account", str(account_id), "--external-id", "1065",
        "--access-token", "t", "--app-secret", "s", "--verify-token", "my-token",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    channel_id = int(re.findall(r"^channel (\d+)$", result.stdout, re.MULTILINE)[0])
    assert f"webhook URL: http://127.0.0.1:8000/webhooks/{channel_id}" in result.stdout
    assert "verify token: my-token" in result.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["whatsapp", "--external-id", "1", "--access-token", "t"], "needs app_secret"),
        (["telegram", "--external-id", "1"], "kind: one of"),
        (["x", "--external-id", " ", "--access-token", "t"], "id on the network"),
    ],
)
def test_channel_add_refuses_what_cannot_work_and_stores_nothing(
    run_allo: RunAllo, database_url: str, args: list[str], says: str
) -> None:
    account_id = create_account(run_allo)
    result = run_allo("channel", "add", args[0], "--account", str(account_id), *args[1:])
    assert result.returncode != 0
    assert says in " ".join(result.stderr.split())
    assert rows(database_url, "SELECT id FROM channel_accounts") == []


def test_channel_check_reports_a_working_connection_and_its_subscription(
    run_allo: RunAllo, database_url: str, cloud: tuple[FakeWhatsAppCloud, str]
) -> None:
    channel_id = add_whatsapp(run_allo, create_account(run_allo), cloud[1])
    result = run_allo("channel", "check", str(channel_id))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("ok") and "subscribed: True" in result.stdout
    assert "ok (checked" in run_allo("channel", "list").stdout


def test_channel_check_of_a_broken_connection_exits_1_and_alerts_the_admins(
    run_allo: RunAllo, database_url: str, cloud: tuple[FakeWhatsAppCloud, str]
) -> None:
    account_id = create_account(run_allo)
    admin = run_allo(
        "user", "create", "--account", str(account_id), "--email", "admin@velia.example",
        "--name", "Ada", "--role", "admin",
    )  # fmt: skip
    assert admin.returncode == 0, admin.stderr
    channel_id = add_whatsapp(run_allo, account_id, cloud[1])
    cloud[0].access_token = "rotated-elsewhere"  # the stored token no longer works
    result = run_allo("channel", "check", str(channel_id))
    assert result.returncode == 1
    assert result.stdout.startswith("BROKEN")
    [(kind, text)] = rows(database_url, "SELECT kind, text FROM notifications")
    assert kind == "channel_broken" and f"whatsapp {PHONE_NUMBER_ID}" in text
    again = run_allo("channel", "check", str(channel_id))
    assert again.returncode == 1
    assert len(rows(database_url, "SELECT id FROM notifications")) == 1  # told once, not each time


def test_channel_check_of_an_unknown_channel_says_so(run_allo: RunAllo) -> None:
    result = run_allo("channel", "check", "4242")
    assert result.returncode != 0 and "no channel 4242" in " ".join(result.stderr.split())
