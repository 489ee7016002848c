"""Channel credentials encrypted at rest with Fernet (AES-128-CBC + HMAC-SHA256)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from allo.settings import Settings

KEY_FILE = "secret.key"


def load_key(settings: Settings) -> bytes:
    """ALLO_SECRET_KEY, or a key generated once in the data folder (readable by its owner)."""
    if settings.secret_key:
        return settings.secret_key.encode()
    path = Path(settings.data_dir) / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as key_file:
            key_file.write(Fernet.generate_key())
    return path.read_bytes().strip()


class CredentialsCipher:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    def encrypt(self, credentials: dict[str, str]) -> bytes:
        return self._fernet.encrypt(json.dumps(credentials).encode())

    def decrypt(self, token: bytes) -> dict[str, str]:
        try:
            decrypted: dict[str, str] = json.loads(self._fernet.decrypt(token))
        except InvalidToken as error:
            raise ValueError("credentials: cannot be decrypted with this secret key") from error
        return decrypted
