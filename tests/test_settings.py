"""Settings: ALLO_* environment variables, then a .env file in the working directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from allo.settings import Settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No ALLO_* variable of the test run leaks in, and the current directory has no .env."""
    for name in list(os.environ):
        if name.upper().startswith("ALLO_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_env(folder: Path, *lines: str) -> None:
    (folder / ".env").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_without_environment_or_env_file_the_defaults_apply() -> None:
    settings = Settings()
    assert settings.database_url is None
    assert settings.data_dir == Path("allo-data")
    assert (settings.host, settings.port, settings.http_workers) == ("127.0.0.1", 8000, 1)
    assert settings.serve_runs_worker is True
    assert settings.max_body_bytes == 1_048_576


def test_allo_environment_variables_are_read_and_converted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ALLO_DATABASE_URL", "postgresql://allo@db.example:5432/allo")
    monkeypatch.setenv("ALLO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ALLO_PORT", "9001")
    monkeypatch.setenv("ALLO_HTTP_WORKERS", "3")
    monkeypatch.setenv("ALLO_SERVE_RUNS_WORKER", "false")
    monkeypatch.setenv("ALLO_REOPEN_WINDOW_HOURS", "1.5")
    monkeypatch.setenv("ALLO_LOG_LEVEL", "debug")
    settings = Settings()
    assert settings.database_url == "postgresql://allo@db.example:5432/allo"
    assert settings.data_dir == tmp_path / "data"
    assert settings.port == 9001 and settings.http_workers == 3
    assert settings.serve_runs_worker is False
    assert settings.reopen_window_hours == 1.5
    assert settings.log_level == "debug"


def test_variables_without_the_allo_prefix_are_not_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PORT", "1234")
    monkeypatch.setenv("DATABASE_URL", "postgresql://elsewhere/db")
    settings = Settings()
    assert settings.port == 8000
    assert settings.database_url is None


def test_a_dotenv_file_in_the_current_directory_is_read(clean_environment: Path) -> None:
    write_env(
        clean_environment,
        "ALLO_DATABASE_URL=postgresql://from-dotenv/allo",
        "ALLO_PORT=8123",
        "ALLO_SERVE_RUNS_WORKER=0",
    )
    settings = Settings()
    assert settings.database_url == "postgresql://from-dotenv/allo"
    assert settings.port == 8123
    assert settings.serve_runs_worker is False


def test_a_dotenv_file_outside_the_current_directory_is_ignored(
    clean_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_env(clean_environment, "ALLO_PORT=8123")
    below = clean_environment / "below"
    below.mkdir()
    monkeypatch.chdir(below)
    assert Settings().port == 8000


def test_the_environment_wins_over_the_dotenv_file(
    clean_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_env(clean_environment, "ALLO_PORT=8123", "ALLO_HOST=0.0.0.0")
    monkeypatch.setenv("ALLO_PORT", "9999")
    settings = Settings()
    assert settings.port == 9999
    assert settings.host == "0.0.0.0"  # only in .env: still read


def test_unknown_allo_variables_are_ignored(
    clean_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLO_TEST_DATABASE_URL", "postgresql://only-for-tests/x")
    write_env(clean_environment, "ALLO_SOMETHING_ELSE=1")
    assert Settings().database_url is None


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("ALLO_PORT", "abc", "port"),
        ("ALLO_MAX_BODY_BYTES", "10", "max_body_bytes"),
        ("ALLO_HTTP_WORKERS", "0", "http_workers"),
        ("ALLO_SERVE_RUNS_WORKER", "perhaps", "serve_runs_worker"),
        ("ALLO_REOPEN_WINDOW_HOURS", "-1", "reopen_window_hours"),
    ],
)
def test_an_invalid_environment_value_raises_a_validation_error_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert [error["loc"] for error in raised.value.errors()] == [(field,)]
    assert field in str(raised.value)


def test_an_invalid_value_in_the_dotenv_file_raises_a_validation_error_naming_the_field(
    clean_environment: Path,
) -> None:
    write_env(clean_environment, "ALLO_PORT=eighty")
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert [error["loc"] for error in raised.value.errors()] == [("port",)]
