"""Admin → GPUs: every member's agent, and marking an agent verified for keys limited to verified agents."""

from __future__ import annotations

from typing import Any

from litestar import Request, get, post
from litestar.params import FromPath
from litestar.response import Redirect, Template

from hub.accounts.models import User
from hub.agents import service as agents
from hub.changes import AgentChanged
from hub.errors import NotFound
from hub.runtime import runtime_of
from hub.web.context import Db, Viewer, admin
from hub.web.render import is_htmx, page

GPUS = "/admin/gpus"


async def _render(request: Request[Any, Any, Any], db: Db, user: User, **extra: Any) -> Template:
    registry = runtime_of(request).registry
    rows = await agents.club_agents(db, user)
    return page(
        request,
        "admin/gpus.html",
        block="club_gpus",
        rows=rows,
        live={agent.pk: registry.get(agent.pk) for agent, _ in rows},
        **extra,
    )


@get(GPUS, name="admin_gpus")
async def gpu_list(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Template:
    user = admin(viewer)
    return await _render(request, db, user)


@post(GPUS + "/{agent_id:int}/{action:str}")
async def gpu_verify(
    request: Request[Any, Any, Any], db: Db, viewer: Viewer, agent_id: FromPath[int], action: FromPath[str]
) -> Template | Redirect:
    user = admin(viewer)
    if action not in ("verify", "unverify"):
        raise NotFound("There is nothing at this address.")
    agent = await agents.set_verified(db, user, agent_id, verified=action == "verify")
    await runtime_of(request).changes.publish(  # a connected agent follows at once, not at its next connect
        AgentChanged(agent.pk, agent.name, shared=agent.shared, paused=agent.paused, verified=agent.verified)
    )
    if is_htmx(request):
        state = "verified" if agent.verified else "no longer verified"
        return await _render(request, db, user, flash=f"{agent.name} is {state}.")
    return Redirect(GPUS, status_code=303)


routes = [gpu_list, gpu_verify]
