"""Admin → Money (prices, fee, limits, allowances, grants, disputes), Admin → Usage and Admin → Ledger."""

from __future__ import annotations

import re
import uuid
from typing import Any

from litestar import Request, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from hub.accounts.models import User
from hub.agents.dispute_report import club_disputes
from hub.agents.disputes import Disputes, dispute_rules
from hub.changes import BalanceChanged, PricesChanged
from hub.credits import club
from hub.credits.charts import parse_span
from hub.credits.service import window_start
from hub.credits.views import From, To
from hub.errors import BadRequest
from hub.ledger.grants import deduct, grant
from hub.parsing import format_credits, parse_count, parse_credits
from hub.pricing import service as pricing
from hub.pricing.models import DEFAULT
from hub.quotas import service as quotas
from hub.runtime import runtime_of
from hub.web.context import Db, Viewer, admin
from hub.web.render import is_htmx, page

MONEY = "/admin/money"
_ONCE = re.compile(r"^[0-9a-f]{32}$")


def parse_limit(text: str, what: str) -> int | None:
    """Empty means no limit of its own (the club default, or unlimited for the defaults themselves)."""
    return parse_count(text, what=f"{what} limit", high=1_000_000_000) if text.strip() else None


def member_limits_form(form: Any) -> dict[str, int | None]:
    """A member's own limits and allowance from a posted form (Admin → Money or the member's page)."""
    allowance = form.get("allowance", "").strip()
    return {
        "rpm": parse_limit(form.get("rpm", ""), "requests per minute"),
        "tokens_per_day": parse_limit(form.get("tokens_per_day", ""), "tokens per day"),
        "concurrency": parse_limit(form.get("concurrency", ""), "concurrent requests"),
        "allowance": parse_credits(allowance, what="monthly allowance", allow_zero=True) if allowance else None,
    }


async def _money(request: Request[Any, Any, Any], db: Db, user: User, **extra: Any) -> Template:
    return page(
        request,
        "admin/money.html",
        block="money",
        prices=await pricing.list_prices(db),
        fee_bps=await pricing.fee_bps(db),
        defaults=await quotas.club_defaults(db),
        allowance=await quotas.default_allowance(db),
        disputes=await dispute_rules(db),
        overrides=await club.overrides(db, user),
        once=uuid.uuid4().hex,  # one grant per rendered form, so a double submit grants once
        credits=format_credits,
        **extra,
    )


async def _changed(request: Request[Any, Any, Any], db: Db, user: User, message: str) -> Template | Redirect:
    # The proxy caches prices, the fee and limits for a few seconds; changes apply from the next request.
    await runtime_of(request).changes.publish(PricesChanged())
    return await _money(request, db, user, flash=message) if is_htmx(request) else Redirect(MONEY, status_code=303)


@get(MONEY, name="admin_money")
async def money_page(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Template:
    user = admin(viewer)
    return await _money(request, db, user)


@post(f"{MONEY}/prices")
async def price_set(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Template | Redirect:
    user = admin(viewer)
    form = await request.form()
    input_micro = parse_credits(form.get("input", ""), what="input price", allow_zero=True)
    output_micro = parse_credits(form.get("output", ""), what="output price", allow_zero=True)
    audio = form.get("audio", "").strip()  # empty keeps the model's price per audio minute
    audio_micro = parse_credits(audio, what="price per audio minute", allow_zero=True) if audio else None
    max_tokens = parse_count(form.get("max_tokens", "") or "1024", what="default max tokens", high=1_000_000)
    price = await club.save_price(
        db,
        user,
        form.get("model", ""),
        input_micro=input_micro,
        output_micro=output_micro,
        max_tokens=max_tokens,
        audio_micro=audio_micro,
    )
    name = "The default price" if price.model == DEFAULT else f"The price of {price.model}"
    return await _changed(request, db, user, f"{name} is saved.")


@post(f"{MONEY}/prices/remove")
async def price_remove(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Template | Redirect:
    user = admin(viewer)
    form = await request.form()
    model = form.get("model", "").strip()
    if not model:
        raise BadRequest("Please say which model's price to remove.")
    await pricing.remove_price(db, user, model)
    return await _changed(request, db, user, f"The price of {model} is removed.")


@post(f"{MONEY}/fee")
async def fee_set(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Template | Redirect:
    user = admin(viewer)
    form = await request.form()
    bps = await pricing.set_fee(db, user, pricing.parse_percent(form.get("percent", "")))
    return await _changed(request, db, user, f"The club fee is now {bps / 100:g}%.")


@post(f"{MONEY}/quotas")
async def quotas_set(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Template | Redirect:
    user = admin(viewer)
    form = await request.form()
    limits = quotas.Limits(
        rpm=parse_limit(form.get("rpm", ""), "requests per minute"),
        tokens_per_day=parse_limit(form.get("tokens_per_day", ""), "tokens per day"),
        concurrency=parse_limit(form.get("concurrency", ""), "concurrent requests"),
    )
    await quotas.set_defaults(db, user, limits)
    return await _changed(request, db, user, "The club's default limits are saved.")


@post(f"{MONEY}/allowance")
async def allowance_set(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Template | Redirect:
    user = admin(viewer)
    form = await request.form()
    micro = parse_credits(form.get("allowance", "") or "0", what="monthly allowance", allow_zero=True)
    await quotas.set_default_allowance(db, user, micro)
    return await _changed(request, db, user, f"Every member now gets {format_credits(micro)} credits a month.")


@post(f"{MONEY}/members")
async def member_limits(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Template | Redirect:
    user = admin(viewer)
    form = await request.form()
    target = await club.member_by_email(db, user, form.get("email", ""))
    await quotas.set_member_limits(db, user, target, **member_limits_form(form))
    return await _changed(request, db, user, f"The limits of {target.display_name} are saved.")


@post(f"{MONEY}/credits")
async def credits_move(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Template | Redirect:
    user = admin(viewer)
    form = await request.form()
    action = form.get("action", "grant")
    if action not in ("grant", "deduct"):
        raise BadRequest("Choose whether to grant or deduct credits.")
    amount = parse_credits(form.get("amount", ""))
    target = await club.member_by_email(db, user, form.get("email", ""))
    reason = form.get("reason", "")
    purses = runtime_of(request).purses
    if action == "deduct":
        once = form.get("once", "")
        key = f"deduct:{once}" if _ONCE.match(once) else None
        done = await deduct(db, user, target, amount, reason=reason, held=purses.held_by(target.pk), key=key)
        await runtime_of(request).changes.publish(BalanceChanged(target.pk))
        message = f"Deducted {format_credits(amount)} credits from {target.display_name}."
        message = message if done else "Those credits were already deducted (the form was sent twice)."
    else:
        once = form.get("once", "")
        key = f"grant:{once}" if _ONCE.match(once) else None
        done = await grant(db, user, target, amount, reason=reason, key=key)
        message = f"Granted {format_credits(amount)} credits to {target.display_name}."
        message = message if done else "Those credits were already granted (the form was sent twice)."
    return await _changed(request, db, user, message)


@post(f"{MONEY}/disputes")
async def disputes_set(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Template | Redirect:
    user = admin(viewer)
    form = await request.form()
    rules = await _disputes(request).set_rules(db, user, limit=form.get("limit", ""), window=form.get("window", ""))
    message = f"{rules.limit} disputes within {rules.window_minutes} minutes now pause an agent."
    return await _changed(request, db, user, message)


@get("/admin/usage", name="admin_usage")
async def usage_page(
    request: Request[Any, Any, Any],
    db: Db,
    viewer: Viewer,
    days: FromQuery[str] = "",
    start: From = "",
    end: To = "",
    show: FromQuery[str] = "",
) -> Template:
    user = admin(viewer)
    report = await club.club_usage(db, user, parse_span(days, start, end), club.parse_show(show))
    return page(
        request,
        "admin/usage.html",
        report=report,
        disputes=await club_disputes(db, user, window_start()),
        credits=format_credits,
    )


@post("/admin/usage/agents/{agent_id:int}/clear")
async def dispute_clear(request: Request[Any, Any, Any], db: Db, viewer: Viewer, agent_id: FromPath[int]) -> Redirect:
    user = admin(viewer)
    await _disputes(request).clear(db, user, agent_id)
    return Redirect("/admin/usage", status_code=303)


def _disputes(request: Request[Any, Any, Any]) -> Disputes:
    disputes: Disputes = runtime_of(request).disputes
    return disputes


@get("/admin/ledger", name="admin_ledger")
async def ledger_page(request: Request[Any, Any, Any], db: Db, viewer: Viewer, whole: FromQuery[str] = "") -> Template:
    user = admin(viewer)
    health = await club.ledger_health(db, user, whole=whole == "1")
    return page(request, "admin/ledger.html", health=health, credits=format_credits)


routes = [
    money_page,
    price_set,
    price_remove,
    fee_set,
    quotas_set,
    allowance_set,
    member_limits,
    credits_move,
    disputes_set,
    usage_page,
    dispute_clear,
    ledger_page,
]
