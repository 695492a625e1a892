"""Stripe settings: both keys or none, from the environment or from files, with errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.errors import ConfigError
from hub.settings import STRIPE_API_BASE, Settings

KEYS = {"GPUCLUB_STRIPE_SECRET_KEY": "sk_test_abc", "GPUCLUB_STRIPE_WEBHOOK_SECRET": "whsec_abc"}


def test_without_stripe_keys_purchases_are_off(tmp_path: Path) -> None:
    settings = Settings.from_env({"GPUCLUB_DATA_DIR": str(tmp_path)})

    assert settings.stripe is None and not settings.stripe_enabled


def test_stripe_keys_turn_purchases_on_with_stripes_own_address(tmp_path: Path) -> None:
    settings = Settings.from_env({"GPUCLUB_DATA_DIR": str(tmp_path), **KEYS})

    assert settings.stripe_enabled and settings.stripe is not None
    assert (settings.stripe.secret_key, settings.stripe.webhook_secret) == ("sk_test_abc", "whsec_abc")
    assert settings.stripe.api_base == STRIPE_API_BASE == "https://api.stripe.com"


def test_stripe_secrets_can_come_from_files_and_the_api_base_can_move(tmp_path: Path) -> None:
    (tmp_path / "sk").write_text("rk_live_restricted\n")
    (tmp_path / "wh").write_text("whsec_from_file\n")
    settings = Settings.from_env(
        {
            "GPUCLUB_DATA_DIR": str(tmp_path),
            "GPUCLUB_STRIPE_SECRET_KEY_FILE": str(tmp_path / "sk"),
            "GPUCLUB_STRIPE_WEBHOOK_SECRET_FILE": str(tmp_path / "wh"),
            "GPUCLUB_STRIPE_API_BASE": "http://127.0.0.1:12111/",
        }
    )

    assert settings.stripe is not None
    assert settings.stripe.secret_key == "rk_live_restricted" and settings.stripe.webhook_secret == "whsec_from_file"
    assert settings.stripe.api_base == "http://127.0.0.1:12111"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GPUCLUB_STRIPE_SECRET_KEY": "sk_test_abc"}, "GPUCLUB_STRIPE_WEBHOOK_SECRET must be set together"),
        ({"GPUCLUB_STRIPE_WEBHOOK_SECRET": "whsec_abc"}, "GPUCLUB_STRIPE_SECRET_KEY and"),
        (KEYS | {"GPUCLUB_STRIPE_SECRET_KEY": "pk_test_abc"}, "GPUCLUB_STRIPE_SECRET_KEY must be a Stripe secret"),
        (KEYS | {"GPUCLUB_STRIPE_WEBHOOK_SECRET": "abc"}, "GPUCLUB_STRIPE_WEBHOOK_SECRET must be a webhook"),
        (KEYS | {"GPUCLUB_STRIPE_API_BASE": "api.stripe.com"}, "GPUCLUB_STRIPE_API_BASE must be an http"),
        (KEYS | {"GPUCLUB_STRIPE_SECRET_KEY_FILE": "/nonexistent/sk"}, "GPUCLUB_STRIPE_SECRET_KEY_FILE"),
    ],
    ids=["key-only", "webhook-only", "publishable-key", "webhook-prefix", "api-base", "missing-file"],
)
def test_a_bad_stripe_setting_names_the_variable(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({"GPUCLUB_DATA_DIR": str(tmp_path), **env})


def test_the_error_never_shows_the_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env({"GPUCLUB_DATA_DIR": str(tmp_path), **KEYS, "GPUCLUB_STRIPE_SECRET_KEY": "pk_live_secretish"})

    assert "secretish" not in str(error.value)
