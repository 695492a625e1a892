"""Sending one `/v1` request to a member's GPU and bringing the answer back, streamed as it arrives.

Retries once on another agent if the first fails before the client has seen a byte; after that, a stream ends
with an error event. The client going away cancels the request at the upstream. Usage is written afterwards.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from litestar import Response
from litestar.response import Stream

from hub.agents.live import AgentLost, Exchange, Link
from hub.background import Background
from hub.db import utcnow
from hub.errors import HubError, UpstreamFailed
from hub.keys.cache import Caller
from hub.metrics import Metrics
from hub.proxy.admission import Admission, Pass
from hub.proxy.meter import Counts, StreamMeter, counts_of_answer
from hub.proxy.scheduler import Scheduler

PASS_HEADERS = ("content-type",)
T = TypeVar("T")


@dataclass
class Call:
    """One client request, parsed once."""

    caller: Caller
    path: str
    body: dict[str, Any]
    raw: str
    model: str
    stream: bool
    wants_usage: bool
    arrived: float = field(default_factory=time.monotonic)
    admitted: Pass | None = None

    @classmethod
    def build(cls, caller: Caller, path: str, body: dict[str, Any], raw: str) -> Call:
        stream = body.get("stream") is True
        options = body.get("stream_options")
        wants_usage = isinstance(options, dict) and options.get("include_usage") is True
        if stream and not wants_usage:
            # Ask for usage on the client's behalf; the extra chunk is taken out again on the way back.
            body = {**body, "stream_options": {**(options if isinstance(options, dict) else {}), "include_usage": True}}
            raw = json.dumps(body)
        return cls(caller, path, body, raw, str(body["model"]), stream, wants_usage)


@dataclass
class Proxy:
    scheduler: Scheduler
    admission: Admission
    background: Background
    metrics: Metrics
    upstream_timeout: float

    async def handle(self, call: Call, gone: Coroutine[Any, Any, None]) -> Response[Any]:
        """Answer `call`; `gone` finishes when the client disconnects, which cancels the work at the upstream."""
        watcher = asyncio.ensure_future(gone)
        try:
            serving = self.scheduler.serving(call.model, call.caller.user_id)
            if not serving:
                raise self.scheduler.unknown(call.model)  # before any hold: bad input never touches credits
            call.admitted = admitted = await self.admission.admit(
                call_id=uuid.uuid4().hex,
                user_id=call.caller.user_id,
                key_id=call.caller.key_id,
                model=call.model,
                body=call.body,
                path=call.path,
                owns_agent_for_model=any(link.owner_id == call.caller.user_id for link in serving),
            )
            try:
                response = await self._answer(call, watcher)
            except BaseException:
                self.admission.finish(admitted, provider_id=None, counts=Counts(), delivered=False, usage=None)
                raise
            response.headers.update(admitted.ticket.headers)
            return response
        finally:
            watcher.cancel()

    async def _answer(self, call: Call, gone: asyncio.Future[None]) -> Response[Any]:
        link, exchange, status, headers = await _unless(gone, self._first_answer(call))
        answered = time.monotonic()
        media_type = headers.get("content-type", "application/json")
        if call.stream and status == 200 and media_type.startswith("text/event-stream"):
            return Stream(
                self._relay(call, link, exchange),
                status_code=200,
                media_type=media_type,
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        try:
            body = await _unless(gone, asyncio.wait_for(exchange.body(), timeout=self.upstream_timeout))
        except ClientGone:
            self.background.spawn(link.cancel(exchange.id))
            self._done(call, link, exchange.id, 499, Counts(), error="the client went away")
            raise
        except (AgentLost, TimeoutError) as exc:
            self._done(call, link, exchange.id, 502, Counts(), error=str(exc) or "timed out")
            raise UpstreamFailed(f"The GPU's server stopped answering: {exc or 'timed out'}.") from None
        finally:
            link.finish(exchange.id)
        if status >= 500:
            self._done(call, link, exchange.id, 502, Counts(), error=f"upstream status {status}")
            raise UpstreamFailed(f"The GPU's server failed (HTTP {status}). Try again, or ask its owner.")
        counts = counts_of_answer(body, call.body) if status < 400 else Counts()
        self._done(call, link, exchange.id, status, counts, first=answered)
        return Response(body, status_code=status, media_type=media_type)

    async def _first_answer(self, call: Call) -> tuple[Link, Exchange, int, dict[str, str]]:
        """Route, send, and wait for the status line; one retry elsewhere before the client sees anything."""
        tried: frozenset[int] = frozenset()
        while True:
            own_only = call.admitted is not None and call.admitted.own_only
            link = await self.scheduler.acquire(call.model, call.caller.user_id, tried, own_only=own_only)
            request_id = uuid.uuid4().hex
            try:
                exchange = await link.open(request_id, call.path, call.raw)
                status, headers = await asyncio.wait_for(asyncio.shield(exchange.started), self.upstream_timeout)
            except (AgentLost, TimeoutError) as exc:
                message = str(exc) or "no answer in time"
                self.background.spawn(link.cancel(request_id))
                tried |= {link.agent_id}
                if len(tried) < 2 and self._another(call, tried):
                    self.scheduler.release(link)
                    continue
                self._done(call, link, request_id, 502, Counts(), error=message)
                raise UpstreamFailed(f"The GPU serving '{call.model}' failed before answering: {message}.") from None
            except asyncio.CancelledError:
                self.background.spawn(link.cancel(request_id))
                self._done(call, link, request_id, 499, Counts(), error="the client went away")
                raise
            if status >= 500 and len(tried) < 1 and self._another(call, tried | {link.agent_id}):
                self.background.spawn(link.cancel(request_id))
                self.scheduler.release(link)
                tried |= {link.agent_id}
                continue
            return link, exchange, status, {k.lower(): v for k, v in headers.items() if k.lower() in PASS_HEADERS}

    def _another(self, call: Call, tried: frozenset[int]) -> bool:
        serving = self.scheduler.registry.serving(call.model, call.caller.user_id)
        return any(link.agent_id not in tried for link in serving)

    async def _relay(self, call: Call, link: Link, exchange: Exchange) -> AsyncIterator[bytes]:
        meter = StreamMeter(strip_usage=not call.wants_usage, request=call.body)
        first: float | None = None
        finished = False
        error = ""
        try:
            while True:
                part = await exchange.chunks.get()
                if part is None:
                    finished = True
                    break
                if isinstance(part, AgentLost):
                    error = str(part) or "the GPU stopped"
                    finished = True
                    yield _error_event(f"The GPU serving '{call.model}' stopped mid-answer: {error}.")
                    break
                first = first or time.monotonic()
                if out := meter.feed(part):
                    yield out
            if tail := meter.flush():
                yield tail
        finally:
            if not finished:
                error = "the client went away"
                self.background.spawn(link.cancel(exchange.id))
            link.finish(exchange.id)
            status = 200 if not error else 499 if not finished else 502
            self._done(call, link, exchange.id, status, meter.counts(), error=error, first=first)

    def _done(
        self,
        call: Call,
        link: Link,
        request_id: str,
        status: int,
        counts: Counts,
        *,
        error: str = "",
        first: float | None = None,
    ) -> None:
        """Free the slot and the hold; the recorder writes the cost and the usage row with the next batch."""
        self.scheduler.release(link)
        now = time.monotonic()
        ttft = first - call.arrived if first is not None else None
        self.metrics.observe(
            model=call.model,
            status=status,
            prompt=counts.prompt_tokens,
            completion=counts.completion_tokens,
            ttft=ttft,
            seconds=now - call.arrived,
        )
        entry = {  # a row of the usage table
            # The call's id (shared with its hold and its ledger transaction), not the attempt's.
            "request_id": call.admitted.call_id if call.admitted else request_id,
            "user_id": call.caller.user_id,
            "key_id": call.caller.key_id,
            "agent_id": link.agent_id,
            "model": call.model[:200],
            "endpoint": call.path.removeprefix("/v1/")[:40],
            "stream": call.stream,
            "status": status,
            "prompt_tokens": counts.prompt_tokens,
            "completion_tokens": counts.completion_tokens,
            "estimated": counts.estimated,
            "ttft_ms": round(ttft * 1000) if ttft is not None else None,
            "duration_ms": round((now - call.arrived) * 1000),
            "error": error[:300],
            "created_at": utcnow(),
        }
        # What reached the client is charged: a whole answer, or the part of a stream that got through.
        delivered = status < 400 or (call.stream and first is not None)
        if call.admitted is not None:
            self.admission.finish(
                call.admitted, provider_id=link.owner_id, counts=counts, delivered=delivered, usage=entry
            )


class ClientGone(HubError):
    """The client disconnected; nobody is left to read an answer."""

    status_code = 499


async def _unless(gone: asyncio.Future[None], work: Coroutine[Any, Any, T]) -> T:
    """Run `work` unless the client goes away first; then cancel it and raise ClientGone."""
    task = asyncio.ensure_future(work)
    racing: set[asyncio.Future[Any]] = {task, gone}
    await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    raise ClientGone("the client went away")


def _error_event(message: str) -> bytes:
    error = {"error": {"message": message, "type": "server_error", "param": None, "code": "upstream_error"}}
    return b"data: " + json.dumps(error).encode() + b"\n\n"
