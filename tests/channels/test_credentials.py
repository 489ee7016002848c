"""Channel credentials are encrypted at rest with a key that is generated once or configured."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from allo.channels.credentials import KEY_FILE, CredentialsCipher, load_key
from allo.settings import Settings

SECRETS = {"page_token": "EAAG-very-secret-ünïcode", "app_secret": "s3cr3t"}


def settings_for(data_dir: Path, secret_key: str | None = None) -> Settings:
    return Settings(secret_key=secret_key, data_dir=data_dir, _env_file=None)  # type: ignore[call-arg]


def test_credentials_survive_a_round_trip() -> None:
    cipher = CredentialsCipher(Fernet.generate_key())
    assert cipher.decrypt(cipher.encrypt(SECRETS)) == SECRETS
    assert cipher.decrypt(cipher.encrypt({})) == {}


def test_the_ciphertext_does_not_contain_the_plaintext_and_differs_each_time() -> None:
    cipher = CredentialsCipher(Fernet.generate_key())
    first, second = cipher.encrypt(SECRETS), cipher.encrypt(SECRETS)
    assert isinstance(first, bytes)
    for secret in ("EAAG", "s3cr3t", "page_token", "app_secret"):
        assert secret.encode() not in first
    assert first != second


def test_another_key_cannot_decrypt() -> None:
    token = CredentialsCipher(Fernet.generate_key()).encrypt(SECRETS)
    with pytest.raises(ValueError, match="cannot be decrypted"):
        CredentialsCipher(Fernet.generate_key()).decrypt(token)


def test_a_tampered_ciphertext_cannot_be_decrypted() -> None:
    cipher = CredentialsCipher(Fernet.generate_key())
    token = bytearray(cipher.encrypt(SECRETS))
    token[-5] = ord("A") if token[-5] != ord("A") else ord("B")
    with pytest.raises(ValueError, match="cannot be decrypted"):
        cipher.decrypt(bytes(token))
    with pytest.raises(ValueError, match="cannot be decrypted"):
        cipher.decrypt(b"not a fernet token")


def test_a_key_is_generated_once_readable_only_by_its_owner_and_then_reused(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "not" / "yet" / "there"
    key = load_key(settings_for(data_dir))
    path = data_dir / KEY_FILE
    assert path.read_bytes().strip() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    Fernet(key)  # a valid Fernet key

    assert load_key(settings_for(data_dir)) == key
    assert path.read_bytes().strip() == key
    cipher = CredentialsCipher(key)
    token = cipher.encrypt(SECRETS)
    assert CredentialsCipher(load_key(settings_for(data_dir))).decrypt(token) == SECRETS


def test_a_key_file_with_a_trailing_newline_is_read_as_the_key(tmp_path: Path) -> None:
    key = Fernet.generate_key()
    (tmp_path / KEY_FILE).write_bytes(key + b"\n")
    assert load_key(settings_for(tmp_path)) == key


def test_the_secret_key_setting_wins_over_the_key_file(tmp_path: Path) -> None:
    generated = load_key(settings_for(tmp_path))
    configured = Fernet.generate_key().decode()
    assert load_key(settings_for(tmp_path, configured)) == configured.encode()
    assert load_key(settings_for(tmp_path, configured)) != generated
    assert (tmp_path / KEY_FILE).read_bytes().strip() == generated


def test_a_configured_secret_key_writes_no_key_file(tmp_path: Path) -> None:
    load_key(settings_for(tmp_path, Fernet.generate_key().decode()))
    assert not (tmp_path / KEY_FILE).exists()


def test_a_configured_secret_key_that_is_not_a_fernet_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        CredentialsCipher(load_key(settings_for(tmp_path, "too-short")))
