"""A member's money pages: Credits (balance and history, CSV export), Usage, and what their GPUs earned."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Response, get
from litestar.params import FromQuery, QueryParameter
from litestar.response import Template

from hub.credits import reports
from hub.credits import service as credits
from hub.credits.charts import parse_span
from hub.ledger import service as ledger
from hub.parsing import format_credits
from hub.runtime import runtime_of
from hub.settings import Settings
from hub.web.context import Db, Viewer, settings_of, signed_in
from hub.web.render import page

# Taken as text and parsed by the service, so a bad value gets a readable message rather than a validation dump.
From = Annotated[str, QueryParameter(name="from", required=False)]
To = Annotated[str, QueryParameter(name="to", required=False)]


def can_buy(settings: Settings) -> bool:
    """Purchases exist only with Stripe configured (read defensively: billing owns these settings)."""
    return bool(getattr(settings, "stripe_enabled", False) or getattr(settings, "stripe_secret_key", None))


@get("/credits", name="credits")
async def credits_page(
    request: Request[Any, Any, Any],
    db: Db,
    viewer: Viewer,
    kind: FromQuery[str] = "",
    before: FromQuery[str] = "",
    after: FromQuery[str] = "",
) -> Template:
    user = signed_in(viewer)
    found = await credits.history(db, user, kind=kind, before=before, after=after)
    # Filter and paging links push their URL; htmx asks for the whole page when it restores one from history.
    restoring = request.headers.get("hx-history-restore-request") == "true"
    return page(
        request,
        "credits.html",
        block=None if restoring else "history",
        balance=ledger.Balance(
            (await ledger.balance_of(db, user.pk)).balance, runtime_of(request).purses.held_by(user.pk)
        ),
        history=found,
        can_buy=can_buy(settings_of(request)),
        credits=format_credits,
    )


@get("/credits/history.csv", name="credits_csv")
async def credits_csv(db: Db, viewer: Viewer, kind: FromQuery[str] = "") -> Response[str]:
    user = signed_in(viewer)
    body = await credits.history_csv(db, user, kind=kind)
    name = f"gpuclub-credits{'-' + kind.strip().lower() if kind.strip() else ''}.csv"
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
    )


@get("/usage", name="usage")
async def usage_page(
    request: Request[Any, Any, Any],
    db: Db,
    viewer: Viewer,
    days: FromQuery[str] = "",
    start: From = "",
    end: To = "",
    by: FromQuery[str] = "",
) -> Template:
    user = signed_in(viewer)
    span = parse_span(days, start, end)
    report = await reports.my_usage(db, user, span, reports.parse_grouping(by))
    return page(request, "usage.html", report=report, credits=format_credits)


@get("/earnings", name="earnings")
async def earnings_page(
    request: Request[Any, Any, Any], db: Db, viewer: Viewer, days: FromQuery[str] = "", start: From = "", end: To = ""
) -> Template:
    user = signed_in(viewer)
    earnings = await reports.my_earnings(db, user, parse_span(days, start, end))
    return page(request, "earnings.html", earnings=earnings, credits=format_credits)


routes = [credits_page, credits_csv, usage_page, earnings_page]
