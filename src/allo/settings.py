"""One Settings object, read from ALLO_* environment variables and a .env file."""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ALLO_", env_file=".env", extra="ignore")

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL. Unset: Allo runs its own embedded PostgreSQL in data_dir.",
    )
    data_dir: Path = Field(default=Path("allo-data"), description="Embedded database and keys.")
    secret_key: str | None = Field(
        default=None,
        description="Fernet key encrypting channel credentials; generated in data_dir if unset.",
    )
    host: str = "127.0.0.1"
    port: int = 8000
    http_workers: int = Field(default=1, ge=1, description="HTTP worker processes of allo serve.")
    serve_runs_worker: bool = Field(
        default=True,
        description="Run a background job worker process beside the HTTP workers of allo serve.",
    )
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Webhook body limit.")
    reopen_window_hours: float = Field(
        default=72.0,
        ge=0,
        description="A private conversation resolved less than this long ago is reopened when "
        "the contact writes again; after it, a new conversation starts.",
    )
    db_pool_size: int = Field(default=10, ge=1)
    intake_batch_size: int = Field(default=500, ge=1)
    triage_embeddings: bool = Field(
        default=True,
        description="Read messages with sentence embeddings (off: the fast path, lexicons and "
        "n-grams only).",
    )
    auth_cache_seconds: float = Field(
        default=30.0, ge=0, description="How long a verified API token is trusted in memory."
    )
    session_hours: float = Field(
        default=12.0, gt=0, description="A browser session ends after this long unused."
    )
    secure_cookies: bool = Field(
        default=False, description="Send the session cookie over HTTPS only (behind TLS)."
    )
    smtp_url: str | None = Field(
        default=None,
        description="Where Allo sends its own mail (password resets): "
        "smtp://[user:password@]host[:port] or smtps://…",
    )
    mail_from: str = Field(default="Allo <allo@localhost>", description="Sender of that mail.")
    public_url: str | None = Field(
        default=None,
        description="Allo's address as users reach it, for links in mail (default: the "
        "address of the request).",
    )
    attachment_max_bytes: int = Field(
        default=25 * 1024 * 1024, ge=1024, description="Largest attachment Allo downloads."
    )
    attachment_hosts_allowed: list[str] = Field(
        default_factory=list,
        description="Hosts (names or addresses) attachments may be downloaded from even though "
        "they are on a private network; empty: only public addresses.",
    )
    outbox_max_attempts: int = Field(
        default=8, ge=1, description="Sends tried before a reply is marked failed."
    )
    log_level: str = "INFO"

    @property
    def reopen_window(self) -> timedelta:
        return timedelta(hours=self.reopen_window_hours)

    @property
    def session_lifetime(self) -> timedelta:
        return timedelta(hours=self.session_hours)


@lru_cache
def get_settings() -> Settings:
    return Settings()
