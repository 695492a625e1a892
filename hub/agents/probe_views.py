"""Admin → Probes: each model's last identity probe, "probe now", and the reference agent of a model."""

from __future__ import annotations

from typing import Any

from litestar import Request, get, post
from litestar.response import Redirect, Template

from hub.accounts.models import User
from hub.agents import probes
from hub.agents.prober import Prober
from hub.errors import BadRequest
from hub.runtime import runtime_of
from hub.web.context import Db, Viewer, admin
from hub.web.render import is_htmx, page

PROBES = "/admin/probes"


def _prober(request: Request[Any, Any, Any]) -> Prober:
    prober: Prober = runtime_of(request).prober
    return prober


async def _render(request: Request[Any, Any, Any], db: Db, user: User, **extra: Any) -> Template:
    prober = _prober(request)
    return page(
        request,
        "admin/probes.html",
        block="probes",
        models=await probes.overview(db, user, prober.serving()),
        minutes=prober.minutes,
        tokens=probes.MAX_TOKENS,
        **extra,
    )


async def _done(request: Request[Any, Any, Any], db: Db, user: User, message: str) -> Template | Redirect:
    return await _render(request, db, user, flash=message) if is_htmx(request) else Redirect(PROBES, status_code=303)


def _model(form: Any) -> str:
    model = str(form.get("model", "")).strip()
    if not model:
        raise BadRequest("Please say which model to probe.")
    return model


@get(PROBES, name="admin_probes")
async def probes_page(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Template:
    user = admin(viewer)
    return await _render(request, db, user)


@post(f"{PROBES}/run")
async def probe_now(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Template | Redirect:
    user = admin(viewer)
    model = _model(await request.form())
    run = await _prober(request).probe(model)
    return await _done(request, db, user, run.summary)


@post(f"{PROBES}/reference")
async def probe_reference(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Template | Redirect:
    user = admin(viewer)
    form = await request.form()
    model = _model(form)
    raw = str(form.get("agent", "")).strip()
    if raw and not raw.isdigit():
        raise BadRequest("Please pick a GPU from the list.")
    agent = await probes.set_reference(db, user, model, int(raw) if raw else None)
    message = (
        f"Probes of {model} now compare every answer with {agent.name}'s."
        if agent
        else f"Probes of {model} now compare the answers with each other."
    )
    return await _done(request, db, user, message)


routes = [probes_page, probe_now, probe_reference]
