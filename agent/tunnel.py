"""One connection to the hub: hello/welcome, heartbeat, requests forwarded upstream, cancel, drain.

The agent only dials out. Each `request` becomes a task that streams the upstream's answer back as binary
frames; when the connection goes, every task goes with it (the hub has already given up on them).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from contextlib import suppress
from typing import TYPE_CHECKING, Any, TypeVar

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from agent import __version__, protocol
from agent.upstreams import Outgoing, UpstreamFailed, forward, outgoing

if TYPE_CHECKING:
    from agent.runner import Agent

log = logging.getLogger("gpuclub.agent")
T = TypeVar("T")

WELCOME_TIMEOUT = 10.0
DEFAULT_HEARTBEAT = 15.0
DRAIN_TIMEOUT = 120.0
WINDOW_WAIT = 600.0

TOKEN_REJECTED = "the hub rejected the agent token: create a new one on the My GPUs page"  # noqa: S105 - a message, not a secret
REPLACED = (
    "another connection with the same agent token took over (`gpuclub-agent doctor`, or a second machine: "
    "give each machine its own token on the My GPUs page)"
)


class Rejected(Exception):
    """The hub refused the agent in a way that retrying cannot fix."""


def close_reason(exc: ConnectionClosed) -> str:
    """Plain words for a closed connection; raises Rejected for a token the hub will never accept."""
    if exc.rcvd is None:
        return "the connection dropped"
    if exc.rcvd.code == protocol.CLOSE_UNAUTHORIZED:
        raise Rejected(TOKEN_REJECTED)
    if exc.rcvd.code == protocol.CLOSE_REPLACED:
        return REPLACED
    if exc.rcvd.code == protocol.CLOSE_RESTARTING:
        return "the hub is restarting"
    if exc.rcvd.code == protocol.CLOSE_TRY_AGAIN:
        return f"the hub cannot take the agent now ({exc.rcvd.reason or 'try again later'})"
    if exc.rcvd.code == protocol.CLOSE_UPGRADE:
        raise Rejected("the hub needs a newer gpuclub-agent: upgrade it, then start it again")
    reason = f": {exc.rcvd.reason}" if exc.rcvd.reason else ""
    return f"the hub closed the connection (code {exc.rcvd.code}{reason})"


async def first_of(work: Awaitable[T], stop: asyncio.Event) -> T | None:
    """The result of `work`, or None (and `work` cancelled) when `stop` is set first."""
    working = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({working, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not working.done():
            working.cancel()
            await asyncio.gather(working, return_exceptions=True)
    return working.result() if not working.cancelled() else None


def replaced(exc: ConnectionClosed) -> bool:
    return exc.rcvd is not None and exc.rcvd.code == protocol.CLOSE_REPLACED


valid_id = protocol.valid_id


class Window:
    """Flow control for one answer: at most `size` bytes sent that the hub has not acknowledged yet.

    When the member's client reads slowly, the hub stops acknowledging and this request waits here (the upstream
    is not read meanwhile), instead of piling the answer up in the hub's memory.
    """

    def __init__(self, size: int | None) -> None:
        self.size = size
        self.unacked = 0
        self.opened = asyncio.Event()
        self.opened.set()

    def ack(self, taken: int) -> None:
        self.unacked = max(0, self.unacked - taken)
        if self.size is None or self.unacked < self.size:
            self.opened.set()

    async def room(self) -> None:
        """Wait until the hub has taken enough; a hub that takes nothing for WINDOW_WAIT s ends the request."""
        if self.size is None or self.unacked < self.size:
            return  # the usual case, on every chunk: no timer to set up
        try:
            async with asyncio.timeout(WINDOW_WAIT):
                while self.size is not None and self.unacked >= self.size:
                    self.opened.clear()
                    await self.opened.wait()
        except TimeoutError:
            raise UpstreamFailed(f"the hub's client took nothing of the answer for {WINDOW_WAIT:g} s") from None


class _Sink:
    """Where one request's upstream answer goes: `start`, then binary chunks within the flow-control window."""

    def __init__(self, ws: ClientConnection, request_id: str, window: Window) -> None:
        self.ws = ws
        self.request_id = request_id
        self.window = window

    async def start(self, status: int, headers: dict[str, str]) -> None:
        await self.ws.send(protocol.text("start", id=self.request_id, status=status, headers=headers))

    async def chunk(self, data: bytes) -> None:
        for at in range(0, len(data), protocol.MAX_CHUNK):
            piece = data[at : at + protocol.MAX_CHUNK]
            await self.window.room()
            self.window.unacked += len(piece)
            await self.ws.send(protocol.chunk(self.request_id, piece))


class Session:
    """One open WebSocket to the hub; `run` returns why it ended."""

    def __init__(self, agent: Agent, ws: ClientConnection) -> None:
        self.agent = agent
        self.config = agent.config
        self.ws = ws
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.windows: dict[str, Window] = {}
        self.window: int | None = None  # what the hub asked for; None: a hub without flow control
        self.draining = False
        self.welcomed = False
        self.replaced = False

    def closed(self, exc: ConnectionClosed) -> str:
        # Replaced twice in a row means two machines share one token: the runner keeps backing off then.
        self.replaced = replaced(exc)
        return close_reason(exc)

    async def send(self, kind: str, **fields: Any) -> None:
        await self.ws.send(protocol.text(kind, **fields))

    async def run(self) -> str:
        await self.send(
            "hello",
            version=__version__,
            name=self.config.name,
            capacity=self.config.max_concurrency,
            models=self.agent.routes.models,
            gpus=self.agent.gpus,
            window=True,
            apis=self.agent.routes.apis,
        )
        try:
            async with asyncio.timeout(WELCOME_TIMEOUT):
                welcome = await first_of(self._welcome(), self.agent.stop)
        except TimeoutError:
            return f"the hub did not welcome the agent within {WELCOME_TIMEOUT:g} s"
        except ConnectionClosed as exc:
            return self.closed(exc)
        if welcome is None:
            return "the agent is shutting down"
        self.welcomed = True
        window = welcome.get("window")
        if isinstance(window, int) and not isinstance(window, bool) and window >= protocol.MAX_CHUNK:
            self.window = window
        if isinstance(notice := welcome.get("notice"), str) and notice:
            log.warning("the hub says: %s", notice)
        heartbeat = welcome.get("heartbeat")
        if not isinstance(heartbeat, int | float) or heartbeat <= 0:
            heartbeat = DEFAULT_HEARTBEAT
        log.info(
            "connected to the hub at %s as %r (agent %s): %d model(s), capacity %d",
            self.config.hub,
            welcome.get("name", self.config.name),
            welcome.get("agent_id", "?"),
            len(self.agent.routes.models),
            self.config.max_concurrency,
        )
        await self._send_bills()
        receiving = asyncio.create_task(self._receive(3 * float(heartbeat)))
        refreshing = asyncio.create_task(self._refresh())
        stopping = asyncio.create_task(self.agent.stop.wait())
        try:
            await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if receiving.done():
                return receiving.result()
            await self._drain(receiving)
            return "the agent is shutting down"
        finally:
            leftovers = [receiving, refreshing, stopping, *self.tasks.values()]
            for task in leftovers:
                task.cancel()
            await asyncio.gather(*leftovers, return_exceptions=True)

    async def _send_bills(self) -> None:
        """The hub's bills it has not confirmed yet: it writes each at most once and confirms them."""
        pending = self.agent.journal.pending()
        for start in range(0, len(pending), protocol.MAX_BILLS):
            batch = pending[start : start + protocol.MAX_BILLS]
            await self.send("bills", bills=[{"id": request_id, "bill": bill} for request_id, bill in batch])
        if pending:
            log.info("sent the hub %d bills it had not confirmed", len(pending))

    async def _welcome(self) -> dict[str, Any]:
        while True:
            frame = await self.ws.recv()
            if not isinstance(frame, str):
                continue
            try:
                message = protocol.parse(frame)
            except ValueError:
                continue
            if message["type"] == "welcome":
                return message
            if message["type"] == "ping":
                await self.send("pong", t=message.get("t"))
            elif message["type"] == "error":
                log.warning("the hub says: %s", message.get("message"))

    async def _receive(self, silence: float) -> str:
        """Handle frames until the connection ends; silence for `silence` seconds means it is dead."""
        while True:
            try:
                async with asyncio.timeout(silence):
                    frame = await self.ws.recv()
            except TimeoutError:
                return f"nothing heard from the hub for {silence:g} s"
            except ConnectionClosed as exc:
                return self.closed(exc)
            if not isinstance(frame, str):
                continue  # the hub sends no binary frames in this version of the protocol
            try:
                message = protocol.parse(frame)
            except ValueError:
                log.warning("ignored a frame from the hub that is not a control message")
                continue
            try:
                await self._handle(message)
            except ConnectionClosed as exc:
                return self.closed(exc)

    async def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "ping":
            await self.send("pong", t=message.get("t"))
        elif kind == "request":
            await self._accept(message)
        elif kind == "ack":
            window = self.windows.get(str(message.get("id")))
            taken = message.get("bytes")
            if window is not None and isinstance(taken, int) and taken > 0:
                window.ack(taken)
        elif kind == "cancel":
            task = self.tasks.pop(str(message.get("id")), None)
            self.windows.pop(str(message.get("id")), None)
            if task is not None:
                task.cancel()  # leaving `client.stream` closes the upstream connection at once
                await self.send("end", id=message["id"], error="cancelled")
        elif kind == "bill":
            request_id, bill = message.get("id"), message.get("bill")
            if valid_id(request_id) and isinstance(bill, str) and len(bill) <= protocol.MAX_BILL:
                self.agent.journal.keep(str(request_id), bill)
        elif kind == "written":
            ids = message.get("ids")
            if isinstance(ids, list):
                self.agent.journal.written([str(request_id) for request_id in ids])
        elif kind in ("error", "notice"):
            log.warning("the hub says: %s", message.get("message"))
        # Anything else (a newer hub's message) is ignored on purpose.

    async def _accept(self, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        if not valid_id(request_id):
            log.warning("ignored a request with a malformed id")
            return
        assert isinstance(request_id, str)
        if request_id in self.tasks:
            log.warning("ignored a second request with id %s", request_id)
            return
        try:
            request, upstream = self._route(message)
        except ValueError as exc:
            await self.send("end", id=request_id, error=str(exc))
            return
        self.tasks[request_id] = asyncio.create_task(self._serve(request_id, upstream, request))

    def _route(self, message: dict[str, Any]) -> tuple[Outgoing, str]:
        """The request and the upstream to send it to; raises ValueError saying why the agent cannot take it."""
        if self.draining:
            raise ValueError("draining")
        request = outgoing(message)
        upstream = self.agent.routes.upstream_for(request.model)
        if upstream is None:
            raise ValueError(f"the model {request.model!r} is not served by this agent")
        if len(self.tasks) >= self.config.max_concurrency:
            raise ValueError("busy")
        return request, upstream

    async def _serve(self, request_id: str, upstream: str, request: Outgoing) -> None:
        error: str | None = None
        window = self.windows[request_id] = Window(self.window)
        try:
            try:
                await forward(
                    self.agent.clients,
                    upstream,
                    request,
                    self.config.upstream_key,
                    _Sink(self.ws, request_id, window),
                )
            except UpstreamFailed as exc:
                error = str(exc)
                log.warning("request %s: %s", request_id[:8], error)
            except Exception:  # one request's bug must not take the connection down
                log.exception("request %s failed inside the agent", request_id[:8])
                error = "the agent failed while forwarding the request"
            await self.send("end", id=request_id, error=error)
        except ConnectionClosed:
            pass  # the session notices and ends; the hub has given up on this request
        finally:
            if self.tasks.get(request_id) is asyncio.current_task():
                del self.tasks[request_id]
                self.windows.pop(request_id, None)

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self.config.refresh)
            if await self.agent.refresh_models():
                routes = self.agent.routes
                with suppress(ConnectionClosed):
                    await self.send("models", models=routes.models, apis=routes.apis)
                    log.info("models or their APIs changed, told the hub: %s", ", ".join(routes.models) or "none")

    async def _drain(self, receiving: asyncio.Task[str]) -> None:
        """Take nothing new and finish what is in flight, while still answering pings and cancels."""
        self.draining = True
        log.info("draining: finishing %d request(s) in flight", len(self.tasks))
        with suppress(ConnectionClosed):
            await self.send("draining")
        forced = asyncio.create_task(self.agent.force.wait())
        deadline = asyncio.get_running_loop().time() + DRAIN_TIMEOUT
        try:
            while self.tasks and not receiving.done() and not forced.done():
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    log.warning("gave up on %d request(s) after %g s", len(self.tasks), DRAIN_TIMEOUT)
                    break
                waiting = {*self.tasks.values(), receiving, forced}
                await asyncio.wait(waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finally:
            forced.cancel()
        with suppress(ConnectionClosed):
            await self.ws.close(1000, "agent shutting down")
