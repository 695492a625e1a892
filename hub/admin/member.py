"""Admin → Members → one member: balance, held, spent and earned, limits, keys, agents, recent requests; grant or
deduct credits and set the member's limits from there; and the club's low-balance warning (on Admin → Members).

The forms reuse the services behind Admin → Money (`hub.ledger.grants`, `hub.quotas.service`) and announce their
changes the same way, so admission sees new limits and balances from the next request.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from litestar import Request, get, post
from litestar.params import FromPath
from litestar.response import Redirect, Template

from hub.accounts import service as accounts
from hub.accounts.models import User
from hub.changes import BalanceChanged, PricesChanged
from hub.club import standing
from hub.club.member_report import member_report
from hub.credits.admin_views import member_limits_form
from hub.db import utcnow
from hub.errors import BadRequest
from hub.ledger.grants import deduct, grant
from hub.parsing import format_credits, parse_credits
from hub.quotas import service as quotas
from hub.runtime import runtime_of
from hub.web.context import Db, Viewer, admin
from hub.web.render import is_htmx, page

MEMBERS = "/admin/members"
_ONCE = re.compile(r"^[0-9a-f]{32}$")


def _url(user_id: int) -> str:
    return f"{MEMBERS}/{user_id}"


async def _page(request: Request[Any, Any, Any], db: Db, user: User, user_id: int, **extra: Any) -> Template:
    runtime = runtime_of(request)
    report = await member_report(db, user, user_id, held=runtime.purses.held_by(user_id))
    return page(
        request,
        "admin/member.html",
        block="member",
        report=report,
        online={agent.pk for agent in report.agents if runtime.registry.get(agent.pk) is not None},
        now=utcnow(),  # for each key's state (active, expired, revoked)
        once=uuid.uuid4().hex,  # one grant or deduction per rendered form, so a double submit moves credits once
        **extra,
    )


async def _done(request: Request[Any, Any, Any], db: Db, user: User, user_id: int, message: str) -> Template | Redirect:
    if is_htmx(request):
        return await _page(request, db, user, user_id, flash=message)
    return Redirect(_url(user_id), status_code=303)


@get(f"{MEMBERS}/{{user_id:int}}", name="admin_member")
async def member_page(request: Request[Any, Any, Any], db: Db, viewer: Viewer, user_id: FromPath[int]) -> Template:
    user = admin(viewer)
    return await _page(request, db, user, user_id)


@post(f"{MEMBERS}/{{user_id:int}}/credits")
async def member_credits(
    request: Request[Any, Any, Any], db: Db, viewer: Viewer, user_id: FromPath[int]
) -> Template | Redirect:
    user = admin(viewer)
    target = await accounts.get_member_by_id(db, user, user_id)
    form = await request.form()
    action = form.get("action", "grant")
    if action not in ("grant", "deduct"):
        raise BadRequest("Choose whether to grant or deduct credits.")
    amount = parse_credits(form.get("amount", ""))
    reason = form.get("reason", "")
    runtime = runtime_of(request)
    once = form.get("once", "")
    once = once if _ONCE.match(once) else ""
    if action == "deduct":
        held = runtime.purses.held_by(target.pk)
        done = await deduct(db, user, target, amount, reason=reason, held=held, key=f"deduct:{once}" if once else None)
        message = f"Deducted {format_credits(amount)} credits from {target.display_name}."
        message = message if done else "Those credits were already deducted (the form was sent twice)."
    else:
        done = await grant(db, user, target, amount, reason=reason, key=f"grant:{once}" if once else None)
        message = f"Granted {format_credits(amount)} credits to {target.display_name}."
        message = message if done else "Those credits were already granted (the form was sent twice)."
    await runtime.changes.publish(BalanceChanged(target.pk))  # the purse reads the new balance before its next hold
    return await _done(request, db, user, user_id, message)


@post(f"{MEMBERS}/{{user_id:int}}/limits")
async def member_limits(
    request: Request[Any, Any, Any], db: Db, viewer: Viewer, user_id: FromPath[int]
) -> Template | Redirect:
    user = admin(viewer)
    target = await accounts.get_member_by_id(db, user, user_id)
    form = await request.form()
    await quotas.set_member_limits(db, user, target, **member_limits_form(form))
    await runtime_of(request).changes.publish(PricesChanged())  # admission reads limits again on the next request
    return await _done(request, db, user, user_id, f"The limits of {target.display_name} are saved.")


@post(f"{MEMBERS}/low-balance")
async def low_balance(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Redirect:
    user = admin(viewer)
    form = await request.form()
    micro = parse_credits(form.get("below", "") or "0", what="low-balance warning", allow_zero=True)
    await standing.set_low_balance_warning(db, user, micro)
    return Redirect(MEMBERS, status_code=303)


routes = [member_page, member_credits, member_limits, low_balance]
