"""Restarts that drop nothing: on SIGTERM the hub drains before uvicorn shuts down.

uvicorn's own shutdown closes every WebSocket at once (code 1012), which would cut the tunnels that the requests
still in flight are answered through. So `gpuclub serve` runs `Drain.run` first: new `/v1` requests get 503 with
Retry-After and `/healthz` says draining (the port stays open, so a load balancer sees that and moves on),
queued requests fail at once, requests and streams in flight finish for up to `seconds`, and only then is each
agent told, with its own close code, that the hub is restarting. The usage of what finished is written by the
app's shutdown, which uvicorn runs after.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from agent import protocol
from hub.agents.live import Registry
from hub.proxy.scheduler import Scheduler, restarting

log = logging.getLogger("gpuclub")
Asgi = Callable[[Any, Any, Any], Any]


class Drain:
    def __init__(self, seconds: float, scheduler: Scheduler, registry: Registry) -> None:
        self.seconds = seconds
        self.scheduler = scheduler
        self.registry = registry
        self.draining = False
        self.active = 0  # HTTP requests being answered, streams included
        self._idle = asyncio.Event()
        self._idle.set()

    def refuse(self) -> None:
        """Raises for a new `/v1` request while the hub drains."""
        if self.draining:
            raise restarting()

    def middleware(self, app: Asgi) -> Asgi:
        """Counts the HTTP requests being answered, until their last byte (a stream's too) is sent."""

        async def counted(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            self.active += 1
            self._idle.clear()
            try:
                await app(scope, receive, send)
            finally:
                self.active -= 1
                if self.active == 0:
                    self._idle.set()

        return counted

    async def run(self, stopped: Callable[[], bool]) -> None:
        """Drain, then close the tunnels; `stopped()` turns true when the operator insists (a second signal)."""
        self.draining = True
        self.scheduler.close()
        log.info("draining: finishing %d request(s) in flight for up to %g s", self.active, self.seconds)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        # Polled because a second SIGTERM only sets uvicorn's flag; the idle event ends the wait at once.
        while self.active and not stopped() and (left := deadline - loop.time()) > 0:
            try:
                async with asyncio.timeout(min(left, 0.1)):
                    await self._idle.wait()
            except TimeoutError:
                pass
        if self.active:
            log.warning("drain: %d request(s) still in flight after %g s; closing anyway", self.active, self.seconds)
        links = list(self.registry.links.values())
        for link in links:
            link.closed_because = "the hub is restarting"
            await link.close(protocol.CLOSE_RESTARTING, "the hub is restarting")
        log.info("drained; told %d agent(s) the hub is restarting", len(links))
