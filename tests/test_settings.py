"""Settings come from the environment once; a bad value fails at start-up naming the variable."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hub.errors import ConfigError
from hub.settings import Settings


def test_defaults_use_sqlite_under_the_data_dir(tmp_path: Path) -> None:
    settings = Settings.from_env({"GPUCLUB_DATA_DIR": str(tmp_path)})

    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path / 'gpuclub.db'}"
    assert settings.public_url == "http://127.0.0.1:8000"
    assert not settings.secure_cookies
    assert settings.github is None and settings.google is None and settings.oidc is None
    assert settings.drain_seconds == 30


def test_the_session_secret_is_made_once_and_kept_private(tmp_path: Path) -> None:
    first = Settings.from_env({"GPUCLUB_DATA_DIR": str(tmp_path)})
    second = Settings.from_env({"GPUCLUB_DATA_DIR": str(tmp_path)})

    assert first.secret_key == second.secret_key and len(first.secret_key) >= 48
    assert stat.S_IMODE((tmp_path / "secret_key").stat().st_mode) == 0o600


def test_postgres_urls_get_the_async_driver(tmp_path: Path) -> None:
    settings = Settings.from_env({"GPUCLUB_DATA_DIR": str(tmp_path), "GPUCLUB_DATABASE_URL": "postgresql://u@db/club"})

    assert settings.database_url == "postgresql+asyncpg://u@db/club"


def test_the_database_url_with_its_password_can_come_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "db").write_text("postgresql://club:s3cret@db/club\n")
    settings = Settings.from_env({"GPUCLUB_DATA_DIR": str(tmp_path), "GPUCLUB_DATABASE_URL_FILE": str(tmp_path / "db")})

    assert settings.database_url == "postgresql+asyncpg://club:s3cret@db/club"


def test_forwarded_headers_are_believed_from_loopback_unless_configured(tmp_path: Path) -> None:
    assert Settings.from_env({"GPUCLUB_DATA_DIR": str(tmp_path)}).trusted_proxies == "127.0.0.1"
    configured = Settings.from_env({"GPUCLUB_DATA_DIR": str(tmp_path), "GPUCLUB_TRUSTED_PROXIES": "10.0.0.2,10.0.0.3"})
    assert configured.trusted_proxies == "10.0.0.2,10.0.0.3"


def test_secrets_can_come_from_files(tmp_path: Path) -> None:
    (tmp_path / "gh").write_text("from-a-file\n")
    settings = Settings.from_env(
        {
            "GPUCLUB_DATA_DIR": str(tmp_path),
            "GPUCLUB_SECRET_KEY": "k" * 40,
            "GPUCLUB_GITHUB_CLIENT_ID": "gh-id",
            "GPUCLUB_GITHUB_CLIENT_SECRET_FILE": str(tmp_path / "gh"),
            "GPUCLUB_PUBLIC_URL": "https://gpus.lab.example.org/",
        }
    )

    assert settings.github is not None and settings.github.client_secret == "from-a-file"
    assert settings.public_url == "https://gpus.lab.example.org" and settings.secure_cookies


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"GPUCLUB_PORT": "http"}, "GPUCLUB_PORT"),
        ({"GPUCLUB_PORT": "70000"}, "GPUCLUB_PORT"),
        ({"GPUCLUB_PUBLIC_URL": "gpus.lab"}, "GPUCLUB_PUBLIC_URL"),
        ({"GPUCLUB_DATABASE_URL": "mysql://x"}, "GPUCLUB_DATABASE_URL"),
        ({"GPUCLUB_GOOGLE_CLIENT_ID": "only-the-id"}, "GPUCLUB_GOOGLE_CLIENT_SECRET"),
        ({"GPUCLUB_OIDC_CLIENT_ID": "a", "GPUCLUB_OIDC_CLIENT_SECRET": "b"}, "GPUCLUB_OIDC_DISCOVERY_URL"),
        ({"GPUCLUB_SECRET_KEY_FILE": "/nonexistent/secret"}, "GPUCLUB_SECRET_KEY_FILE"),
        ({"GPUCLUB_DRAIN_SECONDS": "-1"}, "GPUCLUB_DRAIN_SECONDS"),
        ({"GPUCLUB_OUTAGE_SECONDS": "a day"}, "GPUCLUB_OUTAGE_SECONDS"),
        ({"GPUCLUB_OUTAGE_SECONDS": "-5"}, "GPUCLUB_OUTAGE_SECONDS"),
    ],
    ids=[
        "port-word",
        "port-range",
        "public-url",
        "database",
        "half-google",
        "oidc-without-discovery",
        "secret-file",
        "drain",
        "outage-word",
        "outage-negative",
    ],
)
def test_a_bad_value_names_the_variable(tmp_path: Path, env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({"GPUCLUB_DATA_DIR": str(tmp_path), **env})
