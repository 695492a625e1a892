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


def test_smtp_is_off_by_default_and_its_port_follows_the_tls_mode(tmp_path: Path) -> None:
    assert Settings.from_env({"GPUCLUB_DATA_DIR": str(tmp_path)}).smtp is None
    base = {"GPUCLUB_DATA_DIR": str(tmp_path), "GPUCLUB_SMTP_HOST": "mail.lab", "GPUCLUB_SMTP_FROM": "hub@lab.org"}
    (tmp_path / "smtp").write_text("s3cret\n")

    starttls = Settings.from_env(base).smtp
    tls = Settings.from_env(
        {
            **base,
            "GPUCLUB_SMTP_TLS": "TLS",
            "GPUCLUB_SMTP_USERNAME": "hub",
            "GPUCLUB_SMTP_PASSWORD_FILE": f"{tmp_path}/smtp",
        }
    ).smtp

    assert starttls is not None and (starttls.port, starttls.tls, starttls.username) == (587, "starttls", None)
    assert tls is not None and (tls.port, tls.tls, tls.username, tls.password) == (465, "tls", "hub", "s3cret")


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"GPUCLUB_SMTP_FROM": "hub@lab.org"}, "GPUCLUB_SMTP_HOST"),
        ({"GPUCLUB_SMTP_HOST": "mail.lab"}, "GPUCLUB_SMTP_FROM"),
        ({"GPUCLUB_SMTP_HOST": "mail.lab", "GPUCLUB_SMTP_FROM": "not an address"}, "GPUCLUB_SMTP_FROM"),
        ({"GPUCLUB_SMTP_HOST": "m", "GPUCLUB_SMTP_FROM": "h@l.org", "GPUCLUB_SMTP_TLS": "ssl"}, "GPUCLUB_SMTP_TLS"),
        ({"GPUCLUB_SMTP_HOST": "m", "GPUCLUB_SMTP_FROM": "h@l.org", "GPUCLUB_SMTP_PORT": "0"}, "GPUCLUB_SMTP_PORT"),
        ({"GPUCLUB_SMTP_HOST": "m", "GPUCLUB_SMTP_FROM": "h@l.org", "GPUCLUB_SMTP_USERNAME": "u"}, "PASSWORD"),
    ],
    ids=["no-host", "no-from", "bad-from", "bad-tls", "bad-port", "user-without-password"],
)
def test_a_bad_smtp_setting_names_the_variable(tmp_path: Path, env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({"GPUCLUB_DATA_DIR": str(tmp_path), **env})


def test_the_data_dirs_env_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    (tmp_path / "gpuclub.env").write_text(
        "# the club's hub\n"
        "export GPUCLUB_PUBLIC_URL='https://gpus.lab.example.org'\n"
        'GPUCLUB_CLUB_NAME="Night # Owls"  # quoted: the # stays\n'
        "GPUCLUB_PORT=9000 # a comment\n\n"
    )

    from_file = Settings.from_env({"GPUCLUB_DATA_DIR": str(tmp_path)})
    overridden = Settings.from_env({"GPUCLUB_DATA_DIR": str(tmp_path), "GPUCLUB_PORT": "9100"})

    assert (from_file.public_url, from_file.club_name, from_file.port) == (
        "https://gpus.lab.example.org",
        "Night # Owls",
        9000,
    )
    assert overridden.port == 9100 and overridden.public_url == "https://gpus.lab.example.org"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("GPUCLUB_PORT", "line 2: expected NAME=value"),
        ("GPUCLUB_CLUB_NAME='Night Owls", "line 2: the quoted value of GPUCLUB_CLUB_NAME is not closed"),
        ("PORT=9000", "line 2: the setting's name does not start with GPUCLUB_$"),
        ("c2VjcmV0LXNtdHA=", "line 2: the setting's name does not start with GPUCLUB_$"),  # a pasted secret
        ("GPUCLUB_SMTP_HOTS=mail.lab", r"line 2: no setting is called GPUCLUB_SMTP_HOTS \(is it misspelt\?\)"),
        ("GPUCLUB_DATA_DIR=/elsewhere", "line 2: GPUCLUB_DATA_DIR cannot be set"),
    ],
    ids=["no-equals", "open-quote", "not-gpuclub", "secret", "unknown", "data-dir"],
)
def test_a_bad_line_in_the_env_file_names_the_file_and_the_line(tmp_path: Path, line: str, message: str) -> None:
    (tmp_path / "gpuclub.env").write_text(f"# settings\n{line}\n")

    with pytest.raises(ConfigError, match=f"{tmp_path / 'gpuclub.env'}, {message}"):
        Settings.from_env({"GPUCLUB_DATA_DIR": str(tmp_path)})


def test_an_empty_variable_does_not_hide_the_file_and_either_spelling_in_the_environment_wins(tmp_path: Path) -> None:
    (tmp_path / "password").write_text("from-the-file's-file\n")
    (tmp_path / "gpuclub.env").write_text(
        "GPUCLUB_PUBLIC_URL=https://gpus.lab.example.org\nGPUCLUB_SMTP_HOST=mail.lab\nGPUCLUB_SMTP_FROM=hub@lab\n"
        f"GPUCLUB_SMTP_USERNAME=hub\nGPUCLUB_SMTP_PASSWORD_FILE={tmp_path / 'password'}\n"
    )
    base = {"GPUCLUB_DATA_DIR": str(tmp_path), "GPUCLUB_PUBLIC_URL": "", "GPUCLUB_SMTP_HOST": " "}

    from_file = Settings.from_env(base)
    from_env = Settings.from_env(base | {"GPUCLUB_SMTP_PASSWORD": "from-the-environment"})

    assert from_file.public_url == "https://gpus.lab.example.org" and from_file.smtp is not None
    assert (from_file.smtp.host, from_file.smtp.password) == ("mail.lab", "from-the-file's-file")
    assert from_env.smtp is not None and from_env.smtp.password == "from-the-environment"
