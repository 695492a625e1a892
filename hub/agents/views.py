"""My GPUs: agent tokens (shown once, with the exact command to run), each agent live, and the agent's wheel."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

from litestar import Request, get, post
from litestar.params import FromPath
from litestar.response import File, Redirect, Template

from hub.accounts.models import User
from hub.agents import service as agents
from hub.agents import wheel
from hub.agents.dispute_report import disputed_by_agent
from hub.agents.disputes import dispute_rules
from hub.agents.probes import flags_by_agent
from hub.changes import AgentChanged, AgentRevoked
from hub.errors import NotFound
from hub.runtime import Tunnels, runtime_of
from hub.settings import Settings
from hub.usage.service import requests_today_by_agent, since
from hub.web.context import Db, Viewer, settings_of, signed_in
from hub.web.render import is_htmx, page

DISPUTE_DAYS = 30
# Where the servers people run listen by default, in the order the page suggests them. The first one that is not
# this hub's own port goes into the command: an agent pointed at its own hub would only talk to itself.
UPSTREAM_DEFAULTS = (("Ollama", 11434), ("llama.cpp's llama-server", 8080), ("LM Studio", 1234), ("vLLM", 8000))


def upstream_choices(settings: Settings) -> tuple[list[tuple[str, str]], list[tuple[str, int]]]:
    """(server, address) of the usual local model servers off the hub's own port, and (server, port) of those on it."""
    public = urlsplit(settings.public_url)
    own = {settings.port, public.port or (443 if public.scheme == "https" else 80)}
    choices = [(name, f"http://127.0.0.1:{port}/v1") for name, port in UPSTREAM_DEFAULTS if port not in own]
    return choices, [(name, port) for name, port in UPSTREAM_DEFAULTS if port in own]


def _registry(request: Request[Any, Any, Any]) -> Tunnels:
    registry = runtime_of(request).registry
    return registry


async def _render(request: Request[Any, Any, Any], db: Db, user: User, *, block: str, **extra: Any) -> Template:
    mine = await agents.list_agents(db, user)
    registry = _registry(request)
    upstreams, on_hub_port = upstream_choices(settings_of(request))
    return page(
        request,
        "gpus.html",
        block=block,
        agents=mine,
        live={a.pk: registry.get(a.pk) for a in mine},
        today=await requests_today_by_agent(db, [a.pk for a in mine]),
        disputed=await disputed_by_agent(db, [a.pk for a in mine], since(DISPUTE_DAYS * 24)),
        rules=await dispute_rules(db),
        probe_flags=await flags_by_agent(db, [a.pk for a in mine], since(DISPUTE_DAYS * 24)),
        hub_url=settings_of(request).public_url,
        wheel_url=f"{settings_of(request).public_url}/agent/{wheel.filename()}",
        upstreams=upstreams,
        on_hub_port=on_hub_port,
        **extra,
    )


@get("/gpus", name="gpus")
async def gpu_list(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Template:
    user = signed_in(viewer)
    return await _render(request, db, user, block="gpus")


@get("/gpus/live", name="gpus_live")
async def gpu_live(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Template:
    user = signed_in(viewer)
    return await _render(request, db, user, block="agent_list")


@post("/gpus")
async def gpu_create(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Template:
    user = signed_in(viewer)
    form = await request.form()
    agent, token = await agents.create_agent(db, user, name=form.get("name", ""))
    return await _render(request, db, user, block="gpus", new_agent=agent, token=token)


@post("/gpus/{agent_id:int}/{action:str}")
async def gpu_action(
    request: Request[Any, Any, Any], db: Db, viewer: Viewer, agent_id: FromPath[int], action: FromPath[str]
) -> Template | Redirect:
    user = signed_in(viewer)
    form = await request.form()
    if action == "revoke":
        agent = await agents.revoke(db, user, agent_id)
        await runtime_of(request).changes.publish(AgentRevoked(agent.pk, "this agent's token was revoked by its owner"))
        message = f"Revoked {agent.name}; it was disconnected."
    else:
        options: dict[str, dict[str, Any]] = {
            "rename": {"name": form.get("name", "")},
            "pause": {"paused": True},
            "resume": {"paused": False},
            "share": {"shared": True},
            "private": {"shared": False},
        }
        changes = options.get(action)
        if changes is None:
            raise NotFound("There is nothing at this address.")
        agent = await agents.update_agent(db, user, agent_id, **changes)
        await runtime_of(request).changes.publish(
            AgentChanged(agent.pk, agent.name, shared=agent.shared, paused=agent.paused, verified=agent.verified)
        )
        state = "paused" if agent.paused else "running"
        message = f"{agent.name}: {state}, {'shared with the club' if agent.shared else 'private'}."
    if is_htmx(request):
        return await _render(request, db, user, block="agent_list", flash=message)
    return Redirect("/gpus", status_code=303)


# Public: the wheel holds only the agent's code, and a GPU machine installs it before it has any token.
@get("/agent/{name:str}", name="agent_wheel")
async def agent_wheel(request: Request[Any, Any, Any], name: FromPath[str]) -> File:
    if name != wheel.filename():
        raise NotFound("There is nothing at this address.")
    path = await asyncio.to_thread(wheel.wheel_path, settings_of(request).data_dir)
    return File(path=path, filename=name, media_type="application/zip")


routes = [gpu_list, gpu_live, gpu_create, gpu_action, agent_wheel]
