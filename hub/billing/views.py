"""Buy credits (members), the Stripe webhook, and Admin → Credit packs."""

from __future__ import annotations

from typing import Any

from litestar import MediaType, Request, Response, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from hub.billing import service as billing
from hub.billing.events import handle_event
from hub.billing.models import PurchaseStatus
from hub.billing.stripe_api import StripeApi
from hub.changes import BalanceChanged
from hub.errors import NotFound
from hub.parsing import format_credits
from hub.runtime import runtime_of
from hub.web.context import Db, Viewer, admin, settings_of, signed_in
from hub.web.render import is_htmx, page


def stripe_api(request: Request[Any, Any, Any]) -> StripeApi:
    """Stripe's side of buying; without Stripe keys the purchase pages do not exist."""
    settings = settings_of(request).stripe
    if settings is None:
        raise NotFound("There is nothing at this address.")
    return StripeApi(settings)


@get("/credits/buy", name="credits_buy")
async def buy_page(
    request: Request[Any, Any, Any],
    db: Db,
    viewer: Viewer,
    session_id: FromQuery[str] = "",
    cancelled: FromQuery[str] = "",
) -> Template:
    user = signed_in(viewer)
    api = stripe_api(request)
    flash = "Checkout was cancelled; nothing was charged." if cancelled else None
    if session_id:
        returned = await billing.confirm_return(db, api, user, session_id)
        if returned is not None and returned.status == PurchaseStatus.PENDING:
            flash = "Thank you! Your credits appear here as soon as Stripe confirms the payment."
        elif returned is not None:
            flash = "Thank you! The credits are in your balance."
    return page(
        request,
        "credits_buy.html",
        packs=await billing.list_packs(db, on_sale=True),
        purchases=await billing.purchases_of(db, user),
        stripe_enabled=True,
        credits=format_credits,
        flash=flash,
    )


@post("/credits/buy/{pack_id:int}")
async def buy(request: Request[Any, Any, Any], db: Db, viewer: Viewer, pack_id: FromPath[int]) -> Redirect:
    user = signed_in(viewer)
    api = stripe_api(request)
    settings = settings_of(request)
    url = await billing.start_checkout(
        db,
        api,
        user,
        pack_id,
        # Stripe fills in {CHECKOUT_SESSION_ID} when it sends the member back.
        success_url=settings.url("/credits/buy?session_id={CHECKOUT_SESSION_ID}"),
        cancel_url=settings.url("/credits/buy?cancelled=1"),
    )
    return Redirect(url, status_code=303)


@post("/stripe/webhook", name="stripe_webhook", status_code=200, media_type=MediaType.JSON)
async def stripe_webhook(request: Request[Any, Any, Any], db: Db) -> Response[dict[str, Any]]:
    # Stripe is the caller: the signature is the authorization, checked before anything is read or written.
    api = stripe_api(request)
    event = api.verify_event(await request.body(), request.headers.get("stripe-signature"))
    runtime = runtime_of(request)
    outcome = await handle_event(db, event, runtime.purses.held_by)
    await runtime.changes.publish(BalanceChanged())  # a payment or a refund: read balances again before holds
    return Response({"received": True, "outcome": outcome})


async def _packs(request: Request[Any, Any, Any], db: Db, **extra: Any) -> Template:
    return page(
        request,
        "admin/packs.html",
        block="packs",
        packs=await billing.list_packs(db),
        stripe_enabled=settings_of(request).stripe_enabled,
        credits=format_credits,
        **extra,
    )


@get("/admin/packs", name="admin_packs")
async def pack_list(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Template:
    admin(viewer)
    return await _packs(request, db)


@post("/admin/packs")
async def pack_create(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Template | Redirect:
    user = admin(viewer)
    form = await request.form()
    pack = await billing.create_pack(
        db,
        user,
        name=form.get("name", ""),
        credits=form.get("credits", ""),
        price=form.get("price", ""),
        currency=form.get("currency", ""),
    )
    if is_htmx(request):
        return await _packs(request, db, flash=f"Added {pack.name}.")
    return Redirect("/admin/packs", status_code=303)


@post("/admin/packs/{pack_id:int}/deactivate")
async def pack_deactivate(
    request: Request[Any, Any, Any], db: Db, viewer: Viewer, pack_id: FromPath[int]
) -> Template | Redirect:
    user = admin(viewer)
    pack = await billing.deactivate_pack(db, user, pack_id)
    if is_htmx(request):
        return await _packs(request, db, flash=f"{pack.name} is no longer on sale.")
    return Redirect("/admin/packs", status_code=303)


routes = [buy_page, buy, stripe_webhook, pack_list, pack_create, pack_deactivate]
