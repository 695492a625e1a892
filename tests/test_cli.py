"""The operator's `gpuclub` command: results on stdout, one line on stderr and a non-zero exit on error."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from hub.accounts.models import Role
from hub.keys import service as keys
from hub.keys.models import ApiKey
from tests.conftest import BASE_URL
from tests.support.hub import cli, hub_env
from tests.support.people import Client


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> dict[str, str]:
    env = hub_env(tmp_path, port=8000, database_url=database_url)
    env["GPUCLUB_PUBLIC_URL"] = BASE_URL
    return env


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


async def test_member_add_creates_a_member_with_the_role(env: dict[str, str], db: AsyncSession) -> None:
    result = cli(env, "member", "add", "Alice@Lab.example.org", "--role", "admin", "--name", "Alice")

    assert result.returncode == 0, result.stderr
    assert result.stdout == "alice@lab.example.org\n"
    alice = await accounts.find_by_email(db, "alice@lab.example.org")
    assert alice is not None and alice.role == Role.ADMIN and alice.name == "Alice"


def test_adding_an_existing_member_fails_with_one_line(env: dict[str, str]) -> None:
    cli(env, "member", "add", "alice@lab.example.org")

    again = cli(env, "member", "add", "alice@lab.example.org")

    assert "already a member" in one_error_line(again)


def test_a_bad_email_fails_with_one_line(env: dict[str, str]) -> None:
    assert "not an email address" in one_error_line(cli(env, "member", "add", "not-an-email"))


async def test_key_create_prints_only_a_working_key(env: dict[str, str], client: Client) -> None:
    cli(env, "member", "add", "bob@lab.example.org")

    result = cli(env, "key", "create", "bob@lab.example.org", "--name", "ci")

    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert result.stdout == key + "\n" and key.startswith("gpc_")
    response = await client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200


def test_key_create_for_an_unknown_member_fails(env: dict[str, str]) -> None:
    assert "No member" in one_error_line(cli(env, "key", "create", "nobody@lab.example.org"))


@pytest.mark.parametrize(
    ("flags", "trust", "trusted"),
    [
        ([], "any", []),
        (["--only-own"], "own", []),
        (["--verified-only"], "verified", []),
        (["--trust", "cy@lab.example.org", "--trust", "Dee@lab.example.org"], "trusted", ["cy", "dee"]),
    ],
    ids=["any", "only-own", "verified-only", "trust-two"],
)
async def test_key_create_limits_whose_gpus_the_key_reaches(
    env: dict[str, str], db: AsyncSession, flags: list[str], trust: str, trusted: list[str]
) -> None:
    for name in ("bob", "cy", "dee"):
        cli(env, "member", "add", f"{name}@lab.example.org")

    result = cli(env, "key", "create", "bob@lab.example.org", *flags)

    assert result.returncode == 0, result.stderr
    key = (await db.exec(select(ApiKey))).one()
    emails = (await keys.trusted_emails(db, [key])).get(key.id or 0, [])
    assert (key.trust, emails) == (trust, [f"{name}@lab.example.org" for name in trusted])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--trust", "nobody@lab.example.org"], "nobody@lab.example.org is not a member of this club"),
        (["--trust", "cy@lab.example.org", "--trust", "nope"], "'nope' is not an email address"),
        (["--trust", "bob@lab.example.org"], "Name at least one other member"),
    ],
    ids=["unknown-member", "not-an-email", "only-themselves"],
)
async def test_key_create_with_a_bad_trusted_member_writes_nothing(
    env: dict[str, str], db: AsyncSession, flags: list[str], message: str
) -> None:
    cli(env, "member", "add", "bob@lab.example.org")
    cli(env, "member", "add", "cy@lab.example.org")

    assert message in one_error_line(cli(env, "key", "create", "bob@lab.example.org", *flags))
    assert (await db.exec(select(ApiKey))).all() == []


async def test_login_link_signs_the_member_in_once(env: dict[str, str], client: Client) -> None:
    cli(env, "member", "add", "carol@lab.example.org")

    result = cli(env, "login-link", "carol@lab.example.org")

    assert result.returncode == 0, result.stderr
    url = result.stdout.strip()
    assert url.startswith(f"{BASE_URL}/login/gpl_")
    first = await client.get(url.removeprefix(BASE_URL))
    assert first.status_code == 303 and first.headers["location"] == "/dashboard"
    assert (await client.get("/dashboard")).status_code == 200
    second = await client.get(url.removeprefix(BASE_URL))
    assert second.status_code == 404


async def test_invite_create_prints_a_link_with_the_requested_terms(env: dict[str, str], client: Client) -> None:
    result = cli(env, "invite", "create", "--role", "admin", "--uses", "3", "--expires", "2d")

    assert result.returncode == 0, result.stderr
    url = result.stdout.strip()
    assert url.startswith(f"{BASE_URL}/invite/gpi_")
    landing = await client.get(url.removeprefix(BASE_URL))
    assert landing.status_code == 200 and "admin" in landing.text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--uses", "0"], "between 1 and 10000"),
        (["--uses", "many"], "whole number"),
        (["--expires", "forever"], "30m, 12h, 7d or 2w"),
    ],
    ids=["zero-uses", "words-for-uses", "bad-expiry"],
)
def test_invite_create_rejects_bad_terms(env: dict[str, str], args: list[str], message: str) -> None:
    assert message in one_error_line(cli(env, "invite", "create", *args))


def test_a_bad_setting_names_the_variable(env: dict[str, str]) -> None:
    env["GPUCLUB_PORT"] = "eighty"

    assert "GPUCLUB_PORT" in one_error_line(cli(env, "migrate"))


def test_an_unreachable_database_is_one_line(env: dict[str, str]) -> None:
    env["GPUCLUB_DATABASE_URL"] = "postgresql://nobody@127.0.0.1:1/nothing"

    assert "cannot reach the database" in one_error_line(cli(env, "member", "add", "dan@lab.example.org"))
