"""Landing, dashboard, the health check and the metrics; the Models page is in `hub.pages.models`."""

from __future__ import annotations

from typing import Any

from litestar import MediaType, Request, Response, get
from litestar.response import Redirect, Template
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from hub.accounts.models import User
from hub.keys import service as keys
from hub.metrics import Metrics
from hub.outage import is_outage
from hub.pages import models
from hub.proxy.views import api_caller
from hub.runtime import runtime_of
from hub.usage import service as usage
from hub.web.context import Db, Viewer, admin, signed_in
from hub.web.render import page


@get("/", name="landing")
async def landing(request: Request[Any, Any, Any], viewer: Viewer) -> Template | Redirect:
    if viewer is not None:
        return Redirect("/dashboard", status_code=303)
    return page(request, "landing.html")


@get("/dashboard", name="dashboard")
async def dashboard(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Template:
    user = signed_in(viewer)
    return page(
        request, "dashboard.html", key_count=len(await keys.list_keys(db, user)), recent=await usage.recent(db, user)
    )


@get("/healthz", name="healthz", media_type=MediaType.JSON)
async def healthz(request: Request[Any, Any, Any], db: Db) -> Response[dict[str, str]]:
    """ok (200); draining (503) before a restart; degraded (200: a load balancer should keep a hub that still
    serves /v1 from what it read) while the database is away, for up to GPUCLUB_OUTAGE_SECONDS; else error (503)."""
    runtime = runtime_of(request)
    if runtime.drain.draining:  # so a load balancer sends new requests elsewhere
        return Response({"status": "draining", "database": "not checked"}, status_code=503)
    outage = runtime.outage
    if not outage.degraded:  # while it is, the outage's own probe asks the database (which may not answer soon)
        try:
            await db.exec(text("SELECT 1"))  # type: ignore[call-overload]
        except Exception as exc:  # noqa: BLE001 - whatever the driver raises, the database is not serving
            if not is_outage(exc):
                return Response({"status": "error", "database": "unreachable"}, status_code=503)
            outage.noticed(exc)
        else:
            outage.recovered()
            return Response({"status": "ok", "database": "ok"})
    if outage.serving:
        return Response({"status": "degraded", "database": "unreachable"})
    return Response({"status": "error", "database": "unreachable"}, status_code=503)


@get("/metrics", name="metrics")
async def metrics(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Response[bytes]:
    """Prometheus metrics, for admins: a signed-in admin, or a scraper with an admin's API key."""
    if viewer is None and request.headers.get("authorization"):
        caller = await api_caller(request)
        viewer = await db.get(User, caller.user_id)
    admin(viewer)
    collected: Metrics = runtime_of(request).metrics
    return Response(collected.render(), media_type=CONTENT_TYPE_LATEST)


routes = [landing, dashboard, *models.routes, healthz, metrics]
