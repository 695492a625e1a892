"""The agent tunnel: one WebSocket per agent, authenticated with an agent token (never an API key).

The agent dials in, says hello with its models and capacity, then carries many requests at once. The hub
pings every `heartbeat` seconds; a tunnel silent for three heartbeats is dead and its requests fail at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from litestar import WebSocket, websocket

from agent import protocol
from hub.agents import service as agents
from hub.agents.live import Link, Registry
from hub.db import Database
from hub.errors import Unauthorized
from hub.settings import Settings

log = logging.getLogger("gpuclub.tunnel")
HELLO_SECONDS = 10.0


def _token(socket: WebSocket[Any, Any, Any]) -> str:
    scheme, _, token = socket.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


@websocket(protocol.PATH, name="agent_tunnel")
async def tunnel(socket: WebSocket[Any, Any, Any]) -> None:
    settings: Settings = socket.app.state.settings
    database: Database = socket.app.state.db
    registry: Registry = socket.app.state.registry
    await socket.accept()
    try:
        async with database.session() as db:
            agent, owner = await agents.authenticate(db, _token(socket))
    except Unauthorized as exc:
        await socket.send_text(protocol.text("error", message=exc.message))
        await socket.close(code=protocol.CLOSE_UNAUTHORIZED, reason="agent token not accepted")
        return
    try:
        hello = protocol.parse(await asyncio.wait_for(socket.receive_text(), timeout=HELLO_SECONDS))
        if hello["type"] != "hello":
            raise ValueError("expected hello")
    except (TimeoutError, ValueError, KeyError):
        await socket.close(code=1002, reason="expected hello")
        return

    lock = asyncio.Lock()

    async def send(data: str | bytes) -> None:
        async with lock:
            if isinstance(data, str):
                await socket.send_text(data)
            else:
                await socket.send_bytes(data)

    async def close(code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await socket.close(code=code, reason=reason)

    capacity = int(hello.get("capacity") or 0) if isinstance(hello.get("capacity"), int) else 0
    if capacity <= 0:
        # `gpuclub-agent doctor` checks the token with capacity 0: answer, but do not replace the running agent.
        welcome = protocol.text("welcome", agent_id=agent.pk, name=agent.name, heartbeat=settings.agent_heartbeat)
        await socket.send_text(welcome)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(socket.receive(), timeout=HELLO_SECONDS)
        return
    link = Link(
        agent_id=agent.pk,
        owner_id=owner.pk,
        name=agent.name,
        shared=agent.shared,
        paused=agent.paused,
        capacity=min(capacity, 1024),
        models=_models(hello),
        send=send,
        close=close,
        version=str(hello.get("version", ""))[:40],
        gpus=[g for g in hello.get("gpus", []) if isinstance(g, dict)][:16],
    )
    older = registry.add(link)  # not ready yet: nothing is routed to it before the agent is welcomed
    if older is not None:
        older.fail_all("the agent reconnected")
        await older.close(protocol.CLOSE_REPLACED, "replaced by a newer connection")
    await send(protocol.text("welcome", agent_id=agent.pk, name=agent.name, heartbeat=settings.agent_heartbeat))
    link.ready = True
    registry.notify()
    log.info("agent %s (%s) connected with %d models", agent.pk, agent.name, len(link.models))
    async with database.session() as db:
        await agents.seen(db, agent.pk, version=link.version)

    heartbeat = asyncio.create_task(_heartbeat(link, registry, settings.agent_heartbeat))
    reason = "the agent disconnected"
    try:
        reason = await _read(socket, link, registry)
    finally:
        heartbeat.cancel()
        reason = link.closed_because or reason
        registry.remove(link)
        link.fail_all(reason)
        with contextlib.suppress(Exception):
            async with database.session() as db:
                await agents.seen(db, agent.pk)
        log.info("agent %s (%s) disconnected: %s", agent.pk, agent.name, reason)


def _models(message: dict[str, Any]) -> frozenset[str]:
    models = message.get("models", [])
    return (
        frozenset(m for m in models if isinstance(m, str) and 0 < len(m) <= 200)
        if isinstance(models, list)
        else frozenset()
    )


async def _read(socket: WebSocket[Any, Any, Any], link: Link, registry: Registry) -> str:
    while True:
        event = await socket.receive()
        if event["type"] == "websocket.disconnect":
            return "the agent disconnected"
        link.last_frame_at = time.monotonic()
        data = event.get("bytes")
        if isinstance(data, bytes) and data:
            request_id, chunk = protocol.split_chunk(data)
            if exchange := link.exchanges.get(request_id):
                exchange.on_chunk(chunk)
            continue
        try:
            message = protocol.parse(str(event.get("text") or ""))
        except ValueError:
            continue
        kind = message["type"]
        exchange = link.exchanges.get(str(message.get("id", "")))
        if kind == "start" and exchange:
            headers = message.get("headers") or {}
            exchange.on_start(int(message.get("status", 502)), {str(k): str(v) for k, v in headers.items()})
        elif kind == "end" and exchange:
            link.finish(exchange.id)
            exchange.on_end(message.get("error"))
        elif kind == "models":
            link.models = _models(message)
            registry.notify()
        elif kind == "draining":
            link.draining = True
            registry.notify()


async def _heartbeat(link: Link, registry: Registry, interval: float) -> None:
    """Ping often; a tunnel that stays silent for three intervals is dead, whatever TCP thinks."""
    while True:
        await asyncio.sleep(interval)
        if time.monotonic() - link.last_frame_at > 3 * interval:
            link.closed_because = "the agent stopped answering"
            registry.remove(link)
            link.fail_all(link.closed_because)
            await link.close(1011, "heartbeat timeout")
            return
        try:
            await link.send(protocol.text("ping", t=time.time()))
        except Exception:  # noqa: BLE001 - a failed send means the tunnel is gone; the reader notices
            return
