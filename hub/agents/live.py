"""Live agents: the open tunnels, what each serves and how busy it is. In memory, one hub process.

An `Exchange` is one proxied request travelling over a tunnel: the hub waits on `started` for the status and
headers, then reads body chunks with `next` until `None`. A tunnel that dies fails every open exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agent import protocol
from hub.errors import PayloadTooLarge
from hub.keys.trust import ANY, Scope

CHAT = "chat/completions"
LEGACY = frozenset(protocol.LEGACY_APIS)


class AgentLost(Exception):
    """The agent or its upstream failed; `started` says whether the client has already seen bytes."""

    def __init__(self, message: str, *, started: bool = False) -> None:
        super().__init__(message)
        self.started = started


MERGE_BYTES = 16 * 1024


class AnswerTooLarge(Exception):
    """A whole answer passed the hub's size limit."""


class Exchange:
    """One request's answer as it arrives: the status line, then body parts read with `next` until None.

    Memory is bounded whatever the agent sends: unread bytes beyond the flow-control window fail the request (the
    agent was told to wait for acknowledgements), and a failed or finished exchange keeps nothing.
    """

    def __init__(self, request_id: str, ack: Callable[[int], None], window: int = protocol.WINDOW) -> None:
        self.id = request_id
        self.started: asyncio.Future[tuple[int, dict[str, str]]] = asyncio.get_running_loop().create_future()
        self.ack = ack
        self.window = window
        self.parts: deque[bytes | AgentLost | None] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.unread = 0
        self.unacked = 0
        self.ended = False
        self.last_chunk_at = time.monotonic()

    def _push(self, item: bytes | AgentLost | None) -> None:
        self.parts.append(item)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def on_start(self, status: int, headers: dict[str, str]) -> None:
        if not self.started.done():
            self.last_chunk_at = time.monotonic()  # silence counts from the status line, not from the request
            self.started.set_result((status, headers))

    def on_chunk(self, data: bytes) -> bool:
        """Queue body bytes; False when the agent broke flow control (the request has failed then)."""
        if self.ended:
            return True
        self.last_chunk_at = time.monotonic()
        if not self.started.done():
            self.fail("the agent sent body bytes before the status line")
            return False
        if not data:
            self.fail("the agent sent an empty chunk")
            return False
        self.unread += len(data)
        if self.unread > self.window + protocol.MAX_CHUNK:
            self.fail("the agent sent more than the flow-control window allows")
            return False
        last = self.parts[-1] if self.parts else None
        if isinstance(last, bytes) and len(last) + len(data) <= MERGE_BYTES:
            # Many tiny chunks would cost far more memory than their bytes: keep them as one part.
            self.parts[-1] = last + data
        else:
            self._push(data)
        return True

    def on_end(self, error: str | None) -> None:
        if self.ended:
            return
        if not self.started.done():
            self.ended = True
            self.started.set_exception(AgentLost(error or "the agent ended the request without an answer"))
            self.started.exception()  # retrieved: nobody may be waiting any more
            return
        self.ended = True
        self._push(AgentLost(error, started=True) if error else None)

    def fail(self, reason: str) -> None:
        """End the request now and drop what is buffered."""
        if self.ended:
            return
        self.parts.clear()
        self.unread = 0
        self.on_end(reason)

    async def next(self) -> bytes | None:
        """The next body part, or None at the end; raises AgentLost if the answer broke off."""
        while not self.parts:
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        part = self.parts.popleft()
        if isinstance(part, AgentLost):
            raise part
        if part is not None:
            self.unread -= len(part)
            self.unacked += len(part)
            if self.unacked >= self.window // 4:
                self.ack(self.unacked)
                self.unacked = 0
        return part

    async def body(self, limit: int) -> bytes:
        """The whole body (for answers that are not streams), at most `limit` bytes."""
        parts = []
        size = 0
        while (part := await self.next()) is not None:
            size += len(part)
            if size > limit:
                self.fail("the answer is too large")
                raise AnswerTooLarge(f"the answer is larger than this hub's limit of {limit} bytes")
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
    verified: bool = False  # an admin vouches for this machine (keys limited to verified agents use it)
    gpus: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    ready: bool = False
    closed_because: str = ""
    draining: bool = False
    connected_at: float = field(default_factory=time.monotonic)
    last_frame_at: float = field(default_factory=time.monotonic)
    exchanges: dict[str, Exchange] = field(default_factory=dict)
    sending: set[asyncio.Task[None]] = field(default_factory=set)
    # Which APIs serve each model (agent.protocol.APIS); a model without an entry serves the legacy three.
    apis: dict[str, frozenset[str]] = field(default_factory=dict)
    max_request_frame: int = protocol.MAX_FRAME  # what the agent accepts (newer agents: MAX_REQUEST_FRAME)
    bills_sent_back: int = 0  # on this connection (at most protocol.MAX_BILLS_PER_CONNECTION)

    def serves(self, model: str, api: str = CHAT) -> bool:
        return model in self.models and api in self.apis.get(model, LEGACY)

    def apis_of(self, model: str) -> frozenset[str]:
        return self.apis.get(model, LEGACY) if model in self.models else frozenset()

    def admits(self, user_id: int, scope: Scope = ANY) -> bool:
        """Whether a request of `user_id`, with a key limited to `scope`, may be routed here now."""
        return self.ready and self.open_to(user_id, scope)

    def open_to(self, user_id: int, scope: Scope = ANY) -> bool:
        """Like `admits`, but a tunnel still in its handshake counts: it is about to serve."""
        return (
            not self.paused
            and not self.draining
            and (self.shared or self.owner_id == user_id)
            and scope.admits(owner_id=self.owner_id, verified=self.verified, user_id=user_id)
        )

    @property
    def load(self) -> float:
        return self.in_flight / max(self.capacity, 1)

    @property
    def has_room(self) -> bool:
        return self.in_flight < self.capacity

    async def open(self, request_id: str, path: str, body: str, **extras: Any) -> Exchange:
        """Send a request (`extras`: the frame's optional fields, agent.protocol); its answer comes to the Exchange."""
        frame = protocol.text("request", id=request_id, path=path, body=body, **extras)  # ASCII: len is bytes
        if len(frame) > self.max_request_frame:
            raise PayloadTooLarge(
                f"The request is {len(frame)} bytes once encoded for the GPU's tunnel, over its limit of "
                f"{self.max_request_frame} bytes (text outside ASCII takes up to six bytes a character there)."
            )
        exchange = Exchange(request_id, lambda taken: self._ack(request_id, taken))
        self.exchanges[request_id] = exchange
        try:
            await self.send(frame)
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

    def _ack(self, request_id: str, taken: int) -> None:
        """The client took `taken` more bytes: the agent may send that much more (sent off the reading path)."""
        if request_id not in self.exchanges:
            return
        self.post(protocol.text("ack", id=request_id, bytes=taken))

    def post(self, frame: str) -> asyncio.Task[None]:
        """Send `frame` off the caller's path; the caller may await the task. A broken tunnel is ignored."""
        task = asyncio.get_running_loop().create_task(self._send_quietly(frame))
        self.sending.add(task)
        task.add_done_callback(self.sending.discard)
        return task

    async def _send_quietly(self, frame: str) -> None:
        with contextlib.suppress(Exception):  # the tunnel is gone: its reader fails every request
            await self.send(frame)

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

    def vouch(self, agent_id: int, *, verified: bool) -> None:
        """An admin marked a connected agent verified (or no longer): keys limited to verified agents follow."""
        if link := self.links.get(agent_id):
            link.verified = verified
            self.notify()

    async def disconnect(self, agent_id: int, reason: str) -> None:
        if link := self.links.pop(agent_id, None):
            link.fail_all(reason)
            await link.send(protocol.text("error", message=reason))
            await link.close(protocol.CLOSE_UNAUTHORIZED, reason)
            self.notify()

    def serving(self, model: str, user_id: int, scope: Scope = ANY, api: str = CHAT) -> list[Link]:
        """The ready agents that serve `model` through `api` to this member within the key's `scope`."""
        return [link for link in self.links.values() if link.serves(model, api) and link.admits(user_id, scope)]

    def expects(
        self,
        model: str,
        user_id: int,
        scope: Scope = ANY,
        exclude: frozenset[int] = frozenset(),
        api: str = CHAT,
    ) -> bool:
        """Whether any agent (ready, or still in its handshake) could serve this request; else waiting is futile."""
        return any(
            link.serves(model, api) and link.agent_id not in exclude and link.open_to(user_id, scope)
            for link in self.links.values()
        )

    def models_for(self, user_id: int, scope: Scope = ANY) -> dict[str, int]:
        """The models this member can reach right now with a key limited to `scope`, and how many agents serve each."""
        return {model: len(links) for model, links in self.reachable(user_id, scope).items()}

    def reachable(self, user_id: int, scope: Scope = ANY) -> dict[str, list[Link]]:
        """The agents this member can reach right now with a key limited to `scope`, by model."""
        found: dict[str, list[Link]] = {}
        for link in self.links.values():
            if link.admits(user_id, scope):
                for model in link.models:
                    found.setdefault(model, []).append(link)
        return dict(sorted(found.items()))

    def club_models(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for link in self.links.values():
            if link.ready and link.shared and not link.paused and not link.draining:
                for model in link.models:
                    counts[model] = counts.get(model, 0) + 1
        return dict(sorted(counts.items()))
