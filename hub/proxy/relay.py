"""One `/v1` request's lifecycle, in one direction: admit → route → relay → settle.

- admit: quotas and the credit hold (`hub.proxy.admission`), sized by the request's API shape (`hub.proxy.apis`);
- route: an agent that serves the model through that API, within the key's trust scope (`hub.proxy.scheduler`);
- relay: the request to the member's GPU and the answer back, streamed as it arrives (here). Retries once on
  another agent if the first fails before the client has seen a byte; after that, a stream ends with the API's
  error event. The client going away cancels the request at the upstream. Only the content types the APIs use
  reach the client;
- settle: what the answer used, held against the hub's bounds (`bounds.bill`), ends the `Flight` exactly once
  (`hub.proxy.flight`).

The request's state is one `Flight`; the answer is a `Reply`, which only the views turn into a Litestar response.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hub.agents.live import AgentLost, AnswerTooLarge, Exchange, Link
from hub.background import Background
from hub.db import utcnow
from hub.errors import HubError, UpstreamFailed
from hub.metrics import Metrics
from hub.proxy.admission import Admission, not_allowed
from hub.proxy.bills import Bills
from hub.proxy.bounds import Counted, bill
from hub.proxy.flight import Call, Ends, Flight
from hub.proxy.meter import Relayed, Report, StreamMeter, read_answer
from hub.proxy.scheduler import Scheduler
from hub.tokenizers.counting import TokenCounter, Tokenizers, completion_tokens_async, prompt_tokens_async

# What the APIs answer with; anything else (an HTML page, say) would be served from the hub's own origin.
MEDIA_TYPES = {
    "application/json": "application/json",
    "text/event-stream": "text/event-stream",
    "text/plain": "text/plain; charset=utf-8",
    "text/vtt": "text/vtt; charset=utf-8",  # transcriptions as subtitles (whisper.cpp, vLLM)
    "application/x-subrip": "application/x-subrip; charset=utf-8",
}
T = TypeVar("T")

__all__ = ["Call", "Proxy", "Reply"]


@dataclass
class Reply:
    """An answer for the client: a whole body, or a stream of bytes to pass on as they come."""

    status: int
    media_type: str
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _no_disputes(agent_id: int) -> None:
    return None


@dataclass
class Proxy:
    scheduler: Scheduler
    admission: Admission
    background: Background
    metrics: Metrics
    upstream_timeout: float
    max_answer_bytes: int = 16 * 1024 * 1024
    on_dispute: Callable[[int], None] = field(default=_no_disputes)
    tokenizers: Tokenizers | None = None
    bills: Bills | None = None

    def __post_init__(self) -> None:
        self.ends = Ends(
            self.scheduler, self.admission, self.metrics, self.on_dispute, self.background.spawn, self.bills
        )

    async def handle(self, call: Call, gone: Coroutine[Any, Any, None]) -> Reply:
        """Answer `call`; `gone` finishes when the client disconnects, which cancels the work at the upstream."""
        watcher = asyncio.ensure_future(gone)
        flight: Flight | None = None
        try:
            api, caller = call.api, call.caller
            if not caller.may_use(call.model):  # before the miss path: a model offline must not say it exists
                raise not_allowed(call.model, caller.models)
            serving = self.scheduler.serving(call.model, caller.user_id, caller.scope, api.name)
            if not serving:  # before any hold: bad input never touches credits
                raise await self.scheduler.missing(call.model, caller.user_id, caller.scope, api)
            admitted = await self.admission.admit(
                call_id=uuid.uuid4().hex,
                user_id=caller.user_id,
                key_id=caller.key_id,
                model=call.model,
                size=lambda default: api.limits(call.parsed, call.body_bytes, default),
                owns_agent_for_model=any(link.owner_id == caller.user_id for link in serving),
                free=api.free,
            )
            flight = Flight(call, self.ends, admitted)  # from here on, its end gives back what admission took
            try:
                response = await self._answer(flight, watcher)
            except BaseException as exc:  # the scheduler refused, or something broke: no-op if it already ended
                flight.end(exc.status_code if isinstance(exc, HubError) else 502, error=str(exc)[:300])
                raise
            response.headers.update(admitted.ticket.headers)
            return response
        except HubError as exc:
            if flight is None or flight.link is None:  # refused before any GPU saw it: logged all the same
                self.admission.recorder.refused(refusal(call, exc, flight.admitted.call_id if flight else ""))
            raise
        finally:
            watcher.cancel()

    async def _answer(self, flight: Flight, gone: asyncio.Future[None]) -> Reply:
        call = flight.call
        link, exchange, status, media_type = await _unless(gone, self._first_answer(flight))
        answered = time.monotonic()
        if media_type is None:
            self.background.spawn(link.cancel(exchange.id))
            flight.end(502, error="the upstream answered with a content type the hub does not pass on")
            raise UpstreamFailed(
                "The GPU's server answered with a content type that the hub does not pass on "
                "(only JSON, event streams, plain text and subtitles)."
            )
        if call.stream and status == 200 and media_type == "text/event-stream":
            return Reply(
                200,
                media_type,
                stream=self._relay(flight, link, exchange),
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        limit = min(self.max_answer_bytes, call.api.max_answer_bytes or self.max_answer_bytes)
        try:
            body = await _unless(gone, asyncio.wait_for(exchange.body(limit), timeout=self.upstream_timeout))
        except ClientGone:
            self.background.spawn(link.cancel(exchange.id))
            flight.end(499, error="the client went away")
            raise
        except AnswerTooLarge as exc:
            self.background.spawn(link.cancel(exchange.id))
            flight.end(502, error=str(exc))
            raise UpstreamFailed(f"The GPU's answer is larger than this hub's limit of {limit} bytes.") from None
        except (AgentLost, TimeoutError) as exc:
            flight.end(502, error=str(exc) or "timed out")
            raise UpstreamFailed(f"The GPU's server stopped answering: {exc or 'timed out'}.") from None
        finally:
            link.finish(exchange.id)
        if status >= 500:
            flight.end(502, error=f"upstream status {status}")
            raise UpstreamFailed(f"The GPU's server failed (HTTP {status}). Try again, or ask its owner.")
        flight.first = answered
        if status >= 400:
            flight.end(status)
            await flight.bill_sent()
        else:
            answer = read_answer(call.api, body, media_type, keep_text=self._counter(flight) is not None)
            await self._finish_whole(flight, status, answer.report, answer.relayed)
        return Reply(status, media_type, body)

    def _counter(self, flight: Flight) -> TokenCounter | None:
        if self.tokenizers is None or not flight.call.api.countable:
            return None
        return self.tokenizers.counter(flight.call.model)

    def _finish(self, flight: Flight, status: int, report: Report | None, relayed: Relayed, error: str = "") -> None:
        """Bill what the answer used and end the request; with a tokenizer, the hub counts first (off this path)."""
        counter = self._counter(flight)
        if counter is None:
            flight.end(status, bill(flight.admitted.limits, report, relayed), error=error)
            return
        flight.let_go()  # the agent is free now; only the bill waits for the count
        self.background.spawn(self._finish_counted(flight, counter, status, report, relayed, error))

    async def _finish_whole(self, flight: Flight, status: int, report: Report | None, relayed: Relayed) -> None:
        """Bill a whole answer before the client has all of it: the agent keeps the bill (`hub.proxy.bills`)."""
        counter = self._counter(flight)
        if counter is None:
            flight.end(status, bill(flight.admitted.limits, report, relayed))
        else:
            flight.let_go()
            await self._finish_counted(flight, counter, status, report, relayed, "")
        await flight.bill_sent()

    async def _finish_counted(
        self, flight: Flight, counter: TokenCounter, status: int, report: Report | None, relayed: Relayed, error: str
    ) -> None:
        limits = flight.admitted.limits
        counted = None
        try:
            prompt = await prompt_tokens_async(counter, flight.call.body)
            completion = None
            if relayed.texts is not None:
                texts = ["".join(relayed.texts)]  # one text: fragment by fragment would count more tokens
                completion = await completion_tokens_async(counter, texts, choices=min(relayed.choices, limits.choices))
            # What the hub cannot count (an image, a text too long to keep) is held by the other bounds only.
            counted = Counted(prompt, completion)
        finally:
            flight.end(status, bill(limits, report, relayed, counted=counted), error=error)

    async def _first_answer(self, flight: Flight) -> tuple[Link, Exchange, int, str | None]:
        """Route, send, and wait for the status line; one retry elsewhere before the client sees anything."""
        call = flight.call
        tried: frozenset[int] = frozenset()
        while True:
            own_only = flight.admitted.own_only
            link = await self.scheduler.acquire(
                call.model, call.caller.user_id, tried, own_only=own_only, scope=call.caller.scope, api=call.api.name
            )
            request_id = uuid.uuid4().hex
            flight.hold(link, request_id)
            try:
                exchange = await link.open(request_id, call.path, call.outgoing.text, **_extras(call))
                status, headers = await asyncio.wait_for(asyncio.shield(exchange.started), self.upstream_timeout)
            except (AgentLost, TimeoutError) as exc:
                message = str(exc) or "no answer in time"
                self.background.spawn(link.cancel(request_id))
                tried |= {link.agent_id}
                if len(tried) < 2 and self._another(call, tried):
                    flight.let_go()
                    continue
                flight.end(502, error=message)
                raise UpstreamFailed(f"The GPU serving '{call.model}' failed before answering: {message}.") from None
            except asyncio.CancelledError:
                self.background.spawn(link.cancel(request_id))
                flight.end(499, error="the client went away")
                raise
            if status >= 500 and len(tried) < 1 and self._another(call, tried | {link.agent_id}):
                self.background.spawn(link.cancel(request_id))
                flight.let_go()
                tried |= {link.agent_id}
                continue
            content_type = headers.get("content-type", "application/json")
            return link, exchange, status, MEDIA_TYPES.get(content_type.split(";")[0].strip().lower())

    def _another(self, call: Call, tried: frozenset[int]) -> bool:
        serving = self.scheduler.registry.serving(call.model, call.caller.user_id, call.caller.scope, call.api.name)
        return any(link.agent_id not in tried for link in serving)

    async def _relay(self, flight: Flight, link: Link, exchange: Exchange) -> AsyncIterator[bytes]:
        call = flight.call
        meter = StreamMeter(
            call.api,
            max_event=call.api.max_event_bytes,
            strip_usage=not call.outgoing.wants_usage,
            relayed=Relayed.keeping(self._counter(flight) is not None),
        )
        finished = settled = False
        error = ""
        try:
            while True:
                try:
                    part = await exchange.next()
                    if part is None:
                        finished = True
                        break
                    flight.first = flight.first or time.monotonic()
                    out = meter.feed(part)
                except (AgentLost, HubError) as exc:
                    finished = True
                    error = str(exc) or "the GPU stopped"
                    yield call.api.error_event(f"The GPU serving '{call.model}' stopped mid-answer: {error}.")
                    break
                if out:
                    yield out
                if meter.ended:
                    finished = True
                    break  # the answer is whole: settle now, whatever the agent sends after it
            if not error:
                # The end of the stream (`[DONE]`…) waits until the bill is with the agent: a crash of the hub
                # from here on loses no charge for an answer the client has whole.
                tail = meter.flush()
                link.finish(exchange.id)
                settled = True
                await self._finish_whole(flight, 200, meter.report, meter.relayed)
                if tail:
                    yield tail
        finally:
            if not settled:
                if not finished:
                    error = "the client went away"
                    self.background.spawn(link.cancel(exchange.id))
                elif error:
                    self.background.spawn(link.cancel(exchange.id))
                link.finish(exchange.id)
                status = 200 if not error else 499 if not finished else 502
                self._finish(flight, status, meter.report, meter.relayed, error)


class ClientGone(HubError):
    """The client disconnected; nobody is left to read an answer."""

    status_code = 499
    code = "client_gone"


def refusal(call: Call, error: HubError, request_id: str) -> dict[str, Any]:
    """The usage row of a request the hub refused: who, which key and API, the model as asked, and why."""
    return {
        "request_id": request_id or uuid.uuid4().hex,
        "user_id": call.caller.user_id,
        "key_id": call.caller.key_id or None,  # None: no key (the Models page's try-it box)
        "model": "".join(c for c in str(call.model)[:200] if c.isprintable()),
        "endpoint": call.api.name[:40],
        "stream": call.stream,
        "status": error.status_code,
        "duration_ms": round((time.monotonic() - call.arrived) * 1000),
        "error": error.message[:300],
        "code": (error.code or error.openai_type)[:40],
        "created_at": utcnow(),
    }


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


def _extras(call: Call) -> dict[str, Any]:
    """What the request frame carries beyond the body, for the APIs that need it (agent.protocol)."""
    extras: dict[str, Any] = {"model": call.model}
    if call.parsed.content_type != "application/json":
        extras["content_type"] = call.parsed.content_type
    if call.outgoing.encoding:
        extras["encoding"] = call.outgoing.encoding
    if call.headers:
        extras["headers"] = call.headers
    return extras
