"""The agent's life: find the models, connect, reconnect with backoff and jitter, drain on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from contextlib import suppress

import httpx
from tenacity import AsyncRetrying, RetryCallState, wait_exponential_jitter
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from agent import __version__, gpu, protocol
from agent.config import Config
from agent.journal import Journal, default_path
from agent.tunnel import TOKEN_REJECTED, Rejected, Session, first_of
from agent.upstreams import Clients, Probes, Routes, discover, make_client

log = logging.getLogger("gpuclub.agent")

OPEN_TIMEOUT = 10.0


class Backoff:
    """tenacity's exponential backoff with jitter (0.5 s doubling to 30 s), reset after a good connection."""

    def __init__(self) -> None:
        self._wait = wait_exponential_jitter(multiplier=0.5, max=30, jitter=1)
        self._state = RetryCallState(AsyncRetrying(), None, (), {})

    def next(self) -> float:
        delay = self._wait(self._state)
        self._state.attempt_number += 1
        return delay

    def reset(self) -> None:
        self._state.attempt_number = 1


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {OPEN_TIMEOUT:g} s"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


class Agent:
    def __init__(
        self, config: Config, client: httpx.AsyncClient, clients: Clients, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.client = client  # for model discovery
        self.clients = clients  # for forwarding requests
        self.stop = asyncio.Event()
        self.force = asyncio.Event()
        self.routes = Routes()
        self.gpus: list[gpu.Gpu] = []
        self.probes = Probes(now)  # which APIs each upstream answered, so a refresh need not ask again
        self.journal = Journal(config.journal or default_path(config.hub, config.token))  # the hub's bills
        self._reported: dict[str, tuple[str | None, tuple[str, ...]]] = {}

    async def refresh_models(self) -> bool:
        """Ask the upstreams again; True when the models or their APIs changed. Logs only what changed."""
        config = self.config
        listings = await discover(self.client, config.upstreams, config.upstream_key, config.apis, self.probes)
        for listing in listings:
            if self._reported.get(listing.upstream) == (listing.problem, listing.apis):
                continue
            self._reported[listing.upstream] = (listing.problem, listing.apis)
            if listing.problem:
                log.warning("upstream %s %s", listing.upstream, listing.problem)
            else:
                apis = ", ".join(listing.apis)
                log.info("upstream %s serves: %s (APIs: %s)", listing.upstream, ", ".join(listing.models), apis)
        routes = Routes.build(listings)
        changed = routes.apis != self.routes.apis  # its keys are the models
        self.routes = routes
        return changed

    def _on_signal(self, name: str) -> None:
        if self.stop.is_set():
            log.info("received %s again: stopping now", name)
            self.force.set()
        else:
            log.info("received %s: finishing in-flight requests, then exiting (send it again to stop now)", name)
            self.stop.set()

    async def run(self) -> int:
        """Serve until stopped (exit 0) or until the hub refuses the agent for good (exit 1)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig.name)
        if self.config.token_travels_in_clear:
            log.warning("the hub address uses http://, so the agent token travels unencrypted: use https://")
        try:
            self.journal.open()
        except OSError as exc:
            log.error("cannot keep the hub's bills at %s (%s): pass --journal PATH", self.journal.path, exc.strerror)
            return 1
        self.gpus = await asyncio.to_thread(gpu.detect)
        log.info(
            "gpuclub-agent %s as %r, GPUs: %s",
            __version__,
            self.config.name,
            ", ".join(g["name"] for g in self.gpus) or "none detected",
        )
        backoff = Backoff()
        try:
            while not self.stop.is_set():
                await first_of(self.refresh_models(), self.stop)
                reason, welcomed = await self._connect()
                if self.stop.is_set():
                    break
                if welcomed:
                    backoff.reset()
                delay = backoff.next()
                log.warning("%s; trying again in %.1f s", reason, delay)
                with suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self.stop.wait()
        except Rejected as exc:
            log.error("%s", exc)
            return 1
        finally:
            self.journal.close()
        log.info("stopped")
        return 0

    async def _connect(self) -> tuple[str, bool]:
        """One connection from dial to close: (why it ended, whether it counts as a good connection)."""
        headers = {"Authorization": f"Bearer {self.config.token}"}
        dialing = connect(
            self.config.tunnel_url,
            additional_headers=headers,
            user_agent_header=f"gpuclub-agent/{__version__}",
            max_size=protocol.MAX_REQUEST_FRAME,
            open_timeout=OPEN_TIMEOUT,
            ping_interval=None,  # the protocol has its own ping/pong, driven by the hub
            close_timeout=5,
        )
        try:
            opened = await first_of(dialing, self.stop)
            if opened is None:
                return "the agent is shutting down", False
            async with opened as ws:
                session = Session(self, ws)
                try:
                    reason = await session.run()
                except ConnectionClosed as exc:
                    reason = session.closed(exc)
                return f"disconnected from the hub: {reason}", session.welcomed and not session.replaced
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise Rejected(TOKEN_REJECTED) from None
            return f"the hub at {self.config.hub} answered HTTP {status} instead of opening the tunnel", False
        except (OSError, TimeoutError, WebSocketException) as exc:
            return f"cannot reach the hub at {self.config.hub}: {_describe(exc)}", False


async def serve(config: Config) -> int:
    async with make_client() as client, Clients() as clients:
        return await Agent(config, client, clients).run()
