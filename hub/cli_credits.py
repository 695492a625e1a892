"""`gpuclub` commands for money and limits: prices, the club fee, quotas, credits and the ledger check."""

from __future__ import annotations

import argparse
from typing import Any

from hub.accounts import service as accounts
from hub.errors import HubError
from hub.ledger import service as ledger
from hub.ledger.grants import grant
from hub.parsing import format_credits, parse_count, parse_credits
from hub.pricing import service as pricing
from hub.quotas import service as quotas
from hub.quotas.key_settings import parse_models
from hub.settings import Settings

Runner = Any  # hub.cli._run: (settings, job) -> str


def cmd_price_set(run: Runner, settings: Settings, args: argparse.Namespace) -> str:
    input_micro = parse_credits(args.input, what="input price", allow_zero=True)
    output_micro = parse_credits(args.output, what="output price", allow_zero=True)
    audio = args.per_audio_minute
    audio_micro = None if audio is None else parse_credits(audio, what="price per audio minute", allow_zero=True)

    async def job(db: Any) -> str:
        price = await pricing.set_price(
            db, None, args.model, input_micro=input_micro, output_micro=output_micro, audio_micro=audio_micro
        )
        audio_price = f", {format_credits(price.audio_per_minute)} per audio minute" if price.audio_per_minute else ""
        return (
            f"{price.model}: {format_credits(price.input_per_million)} in, "
            f"{format_credits(price.output_per_million)} out (credits per million tokens){audio_price}"
        )

    return str(run(settings, job))


def cmd_fee_set(run: Runner, settings: Settings, args: argparse.Namespace) -> str:
    bps = pricing.parse_percent(args.percent)

    async def job(db: Any) -> str:
        await pricing.set_fee(db, None, bps)
        return f"club fee: {bps / 100:g}%"

    return str(run(settings, job))


def _budget(text: str | None, what: str) -> int | None:
    """Credits, or "none" for no budget."""
    return None if text is None or text.strip().lower() == "none" else parse_credits(text, what=what, allow_zero=True)


def cmd_quota_set(run: Runner, settings: Settings, args: argparse.Namespace) -> str:
    values: dict[str, int | None] = {
        name: parse_count(value, what=name.replace("_", " "), high=1_000_000_000)
        for name, value in (
            ("rpm", args.rpm),
            ("tokens_per_day", args.tokens_per_day),
            ("concurrency", args.concurrency),
        )
        if value is not None
    }
    key_only = {
        name: _budget(value, what=f"budget per {name[7:]}")
        for name, value in (("budget_day", args.budget_day), ("budget_month", args.budget_month))
        if value is not None
    }
    models = None if args.models is None else parse_models(args.models)
    if (key_only or models is not None) and not args.key:
        raise HubError("--budget-day, --budget-month and --models are a key's settings: add --key gpc_PREFIX")
    if not values and not key_only and models is None:
        raise HubError("give at least one of --rpm, --tokens-per-day, --concurrency (or a key's budget or models)")

    async def job(db: Any) -> str:
        user = await accounts.get_member(db, args.email)
        if args.key:
            key = await quotas.set_key_limits(db, user, args.key, models=models, **values, **key_only)
            said = [f"{n}={getattr(key, n)}" for n in quotas.FIELDS if getattr(key, n)]
            said += [f"{n}={format_credits(v)}" for n in quotas.BUDGETS if (v := getattr(key, n)) is not None]
            said += [f"models={','.join(models)}"] if models else []
            return f"{user.email} key {args.key}: {', '.join(said)}"
        policy = await quotas.set_member_limits(db, None, user, **values)
        shown = ", ".join(f"{name}={getattr(policy, name)}" for name in quotas.FIELDS if getattr(policy, name))
        return f"{user.email}: {shown}"

    return str(run(settings, job))


def cmd_credits_grant(run: Runner, settings: Settings, args: argparse.Namespace) -> str:
    amount = parse_credits(args.amount)

    async def job(db: Any) -> str:
        user = await accounts.get_member(db, args.email)
        await grant(db, None, user, amount, reason=args.reason or "granted from the command line")
        return format_credits((await ledger.balance_of(db, user.pk)).balance)

    return str(run(settings, job))


def cmd_credits_balance(run: Runner, settings: Settings, args: argparse.Namespace) -> str:
    async def job(db: Any) -> str:
        user = await accounts.get_member(db, args.email)
        return format_credits((await ledger.balance_of(db, user.pk)).balance)

    return str(run(settings, job))


def cmd_ledger_check(run: Runner, settings: Settings, _args: argparse.Namespace) -> str:
    async def job(db: Any) -> str:
        problems = await ledger.check(db)
        if problems:
            raise HubError(f"the ledger has {len(problems)} problem(s): " + "; ".join(problems))
        return "ledger OK: every transaction balances and every cached balance matches its entries"

    return str(run(settings, job))


def add_commands(commands: Any, run: Runner) -> None:
    """Register these commands on the top-level parser's subcommands."""

    def bind(func: Any) -> Any:
        return lambda settings, args: func(run, settings, args)

    price = commands.add_parser("price", help="set model prices").add_subparsers(dest="action", required=True)
    setter = price.add_parser("set", help="set a model's price in credits per million tokens (model * = default)")
    setter.add_argument("model")
    setter.add_argument("--input", required=True)
    setter.add_argument("--output", required=True)
    setter.add_argument(
        "--per-audio-minute", help="credits per minute of transcribed audio, billed by the second (default: unchanged)"
    )
    setter.set_defaults(func=bind(cmd_price_set))

    fee = commands.add_parser("fee", help="set the club fee").add_subparsers(dest="action", required=True)
    fee_set = fee.add_parser("set", help="the percentage of each payment the club keeps")
    fee_set.add_argument("percent")
    fee_set.set_defaults(func=bind(cmd_fee_set))

    quota = commands.add_parser("quota", help="set a member's limits").add_subparsers(dest="action", required=True)
    quota_set = quota.add_parser("set", help="override a member's limits")
    quota_set.add_argument("email")
    quota_set.add_argument("--rpm")
    quota_set.add_argument("--tokens-per-day")
    quota_set.add_argument("--concurrency")
    quota_set.add_argument("--key", help="limit only this API key of the member (its visible prefix, gpc_…)")
    quota_set.add_argument("--budget-day", help="with --key: credits the key may spend per UTC day (none: no budget)")
    quota_set.add_argument("--budget-month", help="with --key: credits per UTC month (none: no budget)")
    quota_set.add_argument("--models", help="with --key: the models it may use, comma-separated (empty: every model)")
    quota_set.set_defaults(func=bind(cmd_quota_set))

    credits = commands.add_parser("credits", help="grant credits, show a balance").add_subparsers(
        dest="action", required=True
    )
    give = credits.add_parser("grant", help="grant credits to a member; prints the new balance")
    give.add_argument("email")
    give.add_argument("amount")
    give.add_argument("--reason")
    give.set_defaults(func=bind(cmd_credits_grant))
    balance = credits.add_parser("balance", help="print a member's balance in credits")
    balance.add_argument("email")
    balance.set_defaults(func=bind(cmd_credits_balance))

    check = commands.add_parser("ledger", help="check the ledger").add_subparsers(dest="action", required=True)
    check.add_parser("check", help="verify the ledger's invariants").set_defaults(func=bind(cmd_ledger_check))
