"""Live agents: the open tunnels, what each serves and how busy it is. In memory, one hub process.

An `Exchange` is one proxied request travelling over a tunnel: the hub waits on `started` for the status and
headers, then reads body chunks from `chunks` until `None`. A tunnel that dies fails every open exchange.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agent import protocol


class AgentLost(Exception):
    """The agent or its upstream failed; `started` says whether the client has already seen bytes."""

    def __init__(self, message: str, *, started: bool = False) -> None:
        super().__init__(message)
        self.started = started


class Exchange:
    def __init__(self, request_id: str) -> None:
        self.id = request_id
        self.started: asyncio.Future[tuple[int, dict[str, str]]] = asyncio.get_running_loop().create_future()
        self.chunks: asyncio.Queue[bytes | AgentLost | None] = asyncio.Queue()

    def on_start(self, status: int, headers: dict[str, str]) -> None:
        if not self.started.done():
            self.started.set_result((status, headers))

    def on_chunk(self, data: bytes) -> None:
        self.chunks.put_nowait(data)

    def on_end(self, error: str | None) -> None:
        if not self.started.done():
            self.started.set_exception(AgentLost(error or "the agent ended the request without an answer"))
            return
        self.chunks.put_nowait(AgentLost(error, started=True) if error else None)

    async def body(self) -> bytes:
        """The whole body (for answers that are not streams)."""
        parts = []
        while (part := await self.chunks.get()) is not None:
            if isinstance(part, AgentLost):
                raise part
            parts.append(part)
        return b"".join(parts)


Sender = Callable[[str | bytes], Awaitable[None]]


@dataclass
class Link:
    """One connected agent."""

    agent_id: int
    owner_id: int
    name: str
    shared: bool
    paused: bool
    capacity: int
    models: frozenset[str]
    send: Sender
    close: Callable[[int, str], Awaitable[None]]
    version: str = ""
    gpus: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    ready: bool = False
    closed_because: str = ""
    draining: bool = False
    connected_at: float = field(default_factory=time.monotonic)
    last_frame_at: float = field(default_factory=time.monotonic)
    exchanges: dict[str, Exchange] = field(default_factory=dict)

    def admits(self, user_id: int) -> bool:
        return self.ready and not self.paused and not self.draining and (self.shared or self.owner_id == user_id)

    @property
    def load(self) -> float:
        return self.in_flight / max(self.capacity, 1)

    @property
    def has_room(self) -> bool:
        return self.in_flight < self.capacity

    async def open(self, request_id: str, path: str, body: str) -> Exchange:
        exchange = Exchange(request_id)
        self.exchanges[request_id] = exchange
        try:
            await self.send(protocol.text("request", id=request_id, path=path, body=body))
        except Exception as exc:
            self.exchanges.pop(request_id, None)
            raise AgentLost("the agent's connection broke") from exc
        return exchange

    async def cancel(self, request_id: str) -> None:
        """Tell the agent to stop the upstream request (an unknown or finished id is ignored there)."""
        self.exchanges.pop(request_id, None)
        try:
            await self.send(protocol.text("cancel", id=request_id))
        except Exception:  # noqa: BLE001 - the tunnel is gone; nothing left to cancel
            return

    def finish(self, request_id: str) -> None:
        self.exchanges.pop(request_id, None)

    def fail_all(self, reason: str) -> None:
        for exchange in self.exchanges.values():
            exchange.on_end(reason)
        self.exchanges.clear()


class Registry:
    """The connected agents of this hub process, by agent id."""

    def __init__(self) -> None:
        self.links: dict[int, Link] = {}
        self.changed: list[Callable[[], None]] = []

    def add(self, link: Link) -> Link | None:
        """Register a tunnel; returns the older tunnel of the same agent, which the caller closes."""
        older = self.links.get(link.agent_id)
        self.links[link.agent_id] = link
        self.notify()
        return older

    def remove(self, link: Link) -> None:
        if self.links.get(link.agent_id) is link:
            del self.links[link.agent_id]
        self.notify()

    def notify(self) -> None:
        for callback in self.changed:
            callback()

    def get(self, agent_id: int) -> Link | None:
        return self.links.get(agent_id)

    def configure(self, agent_id: int, *, name: str, shared: bool, paused: bool) -> None:
        """Apply the owner's changes to a connected agent at once."""
        if link := self.links.get(agent_id):
            link.name, link.shared, link.paused = name, shared, paused
            self.notify()

    async def disconnect(self, agent_id: int, reason: str) -> None:
        if link := self.links.pop(agent_id, None):
            link.fail_all(reason)
            await link.send(protocol.text("error", message=reason))
            await link.close(protocol.CLOSE_UNAUTHORIZED, reason)
            self.notify()

    def serving(self, model: str, user_id: int) -> list[Link]:
        return [link for link in self.links.values() if model in link.models and link.admits(user_id)]

    def models_for(self, user_id: int) -> dict[str, int]:
        """The models this member can reach right now, with how many agents serve each."""
        counts: dict[str, int] = {}
        for link in self.links.values():
            if link.admits(user_id):
                for model in link.models:
                    counts[model] = counts.get(model, 0) + 1
        return dict(sorted(counts.items()))

    def club_models(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for link in self.links.values():
            if link.ready and link.shared and not link.paused and not link.draining:
                for model in link.models:
                    counts[model] = counts.get(model, 0) + 1
        return dict(sorted(counts.items()))
