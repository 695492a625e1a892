"""`gpuclub` money commands: results on stdout, one line on stderr for bad input, nothing written twice."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.keys import service as keys
from hub.ledger.models import Account
from hub.pricing import service as pricing
from hub.quotas.models import KeyPolicy, MemberPolicy
from tests.support.hub import cli, hub_env
from tests.support.people import person


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> dict[str, str]:
    return hub_env(tmp_path, port=8000, database_url=database_url)


def fails(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0 and result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    return line


async def test_grants_and_balances_in_credits(env: dict[str, str], db: AsyncSession) -> None:
    await person(db, "alice@lab.example.org")

    granted = cli(env, "credits", "grant", "alice@lab.example.org", "12.5", "--reason", "welcome")
    again = cli(env, "credits", "grant", "alice@lab.example.org", "0.5")
    balance = cli(env, "credits", "balance", "alice@lab.example.org")

    assert (granted.stdout, again.stdout, balance.stdout) == ("12.5\n", "13\n", "13\n")
    assert cli(env, "ledger", "check").returncode == 0


@pytest.mark.parametrize(
    ("amount", "message"),
    [("-5", "number of credits"), ("0", "more than zero"), ("abc", "number of credits"), ("99999999999", "at most")],
    ids=["negative", "zero", "words", "huge"],
)
async def test_bad_amounts_are_refused_and_change_nothing(
    env: dict[str, str], db: AsyncSession, amount: str, message: str
) -> None:
    await person(db, "alice@lab.example.org")

    assert message in fails(cli(env, "credits", "grant", "alice@lab.example.org", "--", amount))
    assert cli(env, "credits", "balance", "alice@lab.example.org").stdout == "0\n"


def test_an_unknown_member_is_one_line(env: dict[str, str]) -> None:
    assert "No member" in fails(cli(env, "credits", "balance", "nobody@lab.example.org"))


async def test_prices_fees_and_quotas_from_the_command_line(env: dict[str, str], db: AsyncSession) -> None:
    alice = await person(db, "alice@lab.example.org")

    price = cli(env, "price", "set", "llama-3-8b", "--input", "0.5", "--output", "1.25")
    fee = cli(env, "fee", "set", "12.5")
    quota = cli(env, "quota", "set", alice.email, "--rpm", "60", "--concurrency", "2")

    assert price.stdout == "llama-3-8b: 0.5 in, 1.25 out (credits per million tokens)\n"
    assert fee.stdout == "club fee: 12.5%\n"
    assert quota.stdout == f"{alice.email}: rpm=60, concurrency=2\n"
    rate = await pricing.rate_for(db, "llama-3-8b")
    assert (rate.input_per_million, rate.output_per_million) == (500_000, 1_250_000)
    assert await pricing.fee_bps(db) == 1250
    policy = await db.get(MemberPolicy, alice.pk)
    assert policy is not None and (policy.rpm, policy.concurrency, policy.tokens_per_day) == (60, 2, None)
    assert "between 0 and 100" in fails(cli(env, "fee", "set", "150"))
    assert "whole number" in fails(cli(env, "quota", "set", alice.email, "--rpm", "lots"))


async def test_a_price_per_audio_minute_from_the_command_line(env: dict[str, str], db: AsyncSession) -> None:
    audio = cli(env, "price", "set", "whisper", "--input", "0", "--output", "0", "--per-audio-minute", "0.006")
    tokens_only = cli(env, "price", "set", "whisper", "--input", "1", "--output", "2")

    assert audio.stdout == "whisper: 0 in, 0 out (credits per million tokens), 0.006 per audio minute\n"
    assert tokens_only.stdout == "whisper: 1 in, 2 out (credits per million tokens), 0.006 per audio minute\n"
    for bad in ["-1", "lots"]:
        line = fails(cli(env, "price", "set", "whisper", "--input", "5", "--output", "5", "--per-audio-minute", bad))
        assert f"The price per audio minute must be a number of credits such as 10 or 2.5, got '{bad}'." in line
    rate = await pricing.rate_for(db, "whisper")
    assert (rate.input_per_million, rate.output_per_million, rate.audio_per_minute) == (1_000_000, 2_000_000, 6_000)


async def test_ledger_check_fails_with_a_report_when_something_is_wrong(env: dict[str, str], db: AsyncSession) -> None:
    await person(db, "alice@lab.example.org")
    cli(env, "credits", "grant", "alice@lab.example.org", "2")
    await db.exec(update(Account).where(col(Account.user_id).is_not(None)).values(balance=1))
    await db.commit()

    report = fails(cli(env, "ledger", "check"))

    assert "1 problem" in report and "caches a balance of 1 but its entries sum to 2000000" in report


async def test_one_api_key_can_get_its_own_limits(env: dict[str, str], db: AsyncSession) -> None:
    alice = await person(db, "alice@lab.example.org")
    key, _ = await keys.create_key(db, alice, name="ci")

    limited = cli(env, "quota", "set", alice.email, "--key", key.prefix, "--rpm", "5")

    assert limited.stdout == f"{alice.email} key {key.prefix}: rpm=5\n"
    policy = await db.get(KeyPolicy, key.id)
    assert policy is not None and policy.rpm == 5
    assert "no active API key" in fails(cli(env, "quota", "set", alice.email, "--key", "gpc_nothing", "--rpm", "5"))
