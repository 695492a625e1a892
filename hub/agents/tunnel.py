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
from hub.agents import frames
from hub.agents import service as agents
from hub.agents.live import Link
from hub.db import Database
from hub.errors import Unauthorized
from hub.outage import is_outage
from hub.proxy.bills import entries, replay
from hub.runtime import Runtime, Tunnels, runtime_of
from hub.settings import Settings

log = logging.getLogger("gpuclub.tunnel")
HELLO_SECONDS = 10.0
OUTDATED = "This hub needs a newer gpuclub-agent (one with flow control): upgrade it, then start it again."


def _token(socket: WebSocket[Any, Any, Any]) -> str:
    scheme, _, token = socket.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


@websocket(protocol.PATH, name="agent_tunnel")
async def tunnel(socket: WebSocket[Any, Any, Any]) -> None:
    settings: Settings = runtime_of(socket).settings
    database: Database = runtime_of(socket).database
    registry = runtime_of(socket).registry
    await socket.accept()
    if runtime_of(socket).drain.draining:  # an agent must not settle on a hub that is about to stop
        await socket.close(code=protocol.CLOSE_RESTARTING, reason="the hub is restarting")
        return
    try:
        async with database.session() as db:
            agent, owner = await agents.authenticate(db, _token(socket))
    except Unauthorized as exc:
        await socket.send_text(protocol.text("error", message=exc.message))
        await socket.close(code=protocol.CLOSE_UNAUTHORIZED, reason="agent token not accepted")
        return
    except Exception as exc:
        if not is_outage(exc):
            raise
        runtime_of(socket).outage.noticed(exc)  # one line per outage; the agent tries again with its backoff
        await socket.close(code=protocol.CLOSE_TRY_AGAIN, reason="the hub's database is unreachable")
        return
    try:
        hello = protocol.parse(await asyncio.wait_for(socket.receive_text(), timeout=HELLO_SECONDS))
        if hello["type"] != "hello":
            raise ValueError("expected hello")
    except Exception:  # noqa: BLE001 - whatever the agent sent instead of a hello, the answer is the same
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

    if hello.get("window") is not True:
        # An agent from before flow control would pile answers up in the hub's memory; it must be upgraded.
        await socket.send_text(protocol.text("error", message=OUTDATED))
        await socket.close(code=protocol.CLOSE_UPGRADE, reason="upgrade gpuclub-agent")
        return
    capacity = frames.capacity(hello)
    offered = frames.models(hello)
    welcome = protocol.text(
        "welcome",
        agent_id=agent.pk,
        name=agent.name,
        heartbeat=settings.agent_heartbeat,
        window=protocol.WINDOW,
        notice=offered.notice,
    )
    if capacity <= 0:
        # `gpuclub-agent doctor` checks the token with capacity 0: answer, but do not replace the running agent.
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
        verified=agent.verified,
        capacity=capacity,
        models=offered.names,
        apis=offered.apis,
        # Agents that speak of APIs take request frames of MAX_REQUEST_FRAME; older ones, MAX_FRAME.
        max_request_frame=protocol.MAX_REQUEST_FRAME if "apis" in hello else protocol.MAX_FRAME,
        send=send,
        close=close,
        version=frames.short_text(hello.get("version"), 40),
        gpus=frames.gpus(hello),
    )
    older = registry.add(link)  # not ready yet: nothing is routed to it before the agent is welcomed
    heartbeat: asyncio.Task[None] | None = None
    reason = "the agent disconnected"
    try:  # from here on, however this ends, the link leaves the registry
        if older is not None:
            older.fail_all("the agent reconnected")
            await older.close(protocol.CLOSE_REPLACED, "replaced by a newer connection")
        await send(welcome)
        link.ready = True
        registry.notify()
        log.info("agent %s (%s) connected with %d models", agent.pk, agent.name, len(link.models))
        if offered.notice:
            log.warning("agent %s (%s): %s", agent.pk, agent.name, offered.notice)
        heartbeat = asyncio.create_task(_heartbeat(link, registry, settings.agent_heartbeat, settings.upstream_timeout))
        with contextlib.suppress(Exception):  # "last seen" is not worth a tunnel
            async with database.session() as db:
                await agents.seen(db, agent.pk, version=link.version, models=link.models)
        reason = await _read(socket, link, registry)
        if reason != "the agent disconnected":
            await close(1008, "protocol error")
    finally:
        if heartbeat is not None:
            heartbeat.cancel()
        reason = link.closed_because or reason
        registry.remove(link)
        link.fail_all(reason)
        with contextlib.suppress(Exception):
            async with database.session() as db:
                await agents.seen(db, agent.pk, models=link.models)  # its last list, kept while it is away
        log.info("agent %s (%s) disconnected: %s", agent.pk, agent.name, reason)


async def _read(socket: WebSocket[Any, Any, Any], link: Link, registry: Tunnels) -> str:
    """Handle frames until the tunnel ends; returns why. A frame that breaks the protocol never raises out."""
    while True:
        event = await socket.receive()
        if event["type"] == "websocket.disconnect":
            return "the agent disconnected"
        link.last_frame_at = time.monotonic()
        try:
            await _handle(event, link, registry, runtime_of(socket))
        except frames.BadFrame as exc:
            log.warning("agent %s (%s) broke the protocol: %s; closing its tunnel", link.agent_id, link.name, exc)
            return f"the agent broke the protocol: {exc}"


async def _handle(event: Any, link: Link, registry: Tunnels, runtime: Runtime) -> None:
    data = event.get("bytes")
    if isinstance(data, bytes) and data:
        try:
            request_id, chunk = protocol.split_chunk(data)
        except ValueError as exc:
            raise frames.BadFrame(f"a binary frame without a valid request id ({exc})") from None
        exchange = link.exchanges.get(request_id)
        if exchange is None:
            return  # a request the hub has finished or cancelled: late bytes are dropped
        if len(chunk) > protocol.MAX_CHUNK:
            exchange.fail(f"the agent sent a chunk larger than {protocol.MAX_CHUNK} bytes")  # on_chunk: no-op then
        if exchange.ended or not exchange.on_chunk(chunk):
            await link.cancel(request_id)
        return
    try:
        message = protocol.parse(str(event.get("text") or ""))
    except (ValueError, RecursionError):
        raise frames.BadFrame("a text frame that is not a control message") from None
    kind = message["type"]
    named = message.get("id")
    exchange = link.exchanges.get(named) if isinstance(named, str) else None
    if kind == "start" and exchange:
        try:
            status, headers = frames.start(message)
        except frames.BadFrame as exc:
            exchange.fail(str(exc))  # that one request fails; the tunnel goes on
            await link.cancel(exchange.id)
            return
        exchange.on_start(status, headers)
    elif kind == "end" and exchange:
        link.finish(exchange.id)
        exchange.on_end(frames.error(message))
    elif kind == "models":
        offered = frames.models(message)
        link.models, link.apis = offered.names, offered.apis
        registry.notify()
        if offered.notice:
            log.warning("agent %s (%s): %s", link.agent_id, link.name, offered.notice)
            await link.send(protocol.text("notice", message=offered.notice))
    elif kind == "draining":
        link.draining = True
        registry.notify()
    elif kind == "bills":
        try:
            replay(runtime.bills, runtime.recorder, link, entries(message))
        except ValueError as exc:
            raise frames.BadFrame(str(exc)) from None


async def _heartbeat(link: Link, registry: Tunnels, interval: float, upstream_timeout: float) -> None:
    """Ping often; a tunnel that stays silent for three intervals is dead, whatever TCP thinks.

    The same round ends answers whose upstream has sent nothing for `upstream_timeout` while the client waits.
    """
    while True:
        await asyncio.sleep(interval)
        now = time.monotonic()
        for exchange in list(link.exchanges.values()):
            if exchange.started.done() and not exchange.parts and now - exchange.last_chunk_at > upstream_timeout:
                exchange.fail(f"the GPU's server sent nothing for {upstream_timeout:g} s")
                await link.cancel(exchange.id)
        if now - link.last_frame_at > 3 * interval:
            link.closed_because = "the agent stopped answering"
            registry.remove(link)
            link.fail_all(link.closed_because)
            await link.close(1011, "heartbeat timeout")
            return
        try:
            await link.send(protocol.text("ping", t=time.time()))
        except Exception:  # noqa: BLE001 - a failed send means the tunnel is gone; the reader notices
            return
