"""Landing, dashboard, the GPUs placeholder and the health check."""

from __future__ import annotations

from typing import Any

from litestar import MediaType, Request, Response, get
from litestar.response import Redirect, Template
from sqlalchemy import text

from hub.keys import service as keys
from hub.web.context import Db, Viewer, signed_in
from hub.web.render import page


@get("/", name="landing")
async def landing(request: Request[Any, Any, Any], viewer: Viewer) -> Template | Redirect:
    if viewer is not None:
        return Redirect("/dashboard", status_code=303)
    return page(request, "landing.html")


@get("/dashboard", name="dashboard")
async def dashboard(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Template:
    user = signed_in(viewer)
    return page(request, "dashboard.html", key_count=len(await keys.list_keys(db, user)))


@get("/gpus", name="gpus")
async def gpus(request: Request[Any, Any, Any], viewer: Viewer) -> Template:
    signed_in(viewer)
    return page(request, "gpus.html")


@get("/healthz", name="healthz", media_type=MediaType.JSON)
async def healthz(db: Db) -> Response[dict[str, str]]:
    try:
        await db.exec(text("SELECT 1"))  # type: ignore[call-overload]
    except Exception:  # noqa: BLE001 - whatever the driver raises, the answer is "database down"
        return Response({"status": "error", "database": "unreachable"}, status_code=503)
    return Response({"status": "ok", "database": "ok"})


routes = [landing, dashboard, gpus, healthz]
