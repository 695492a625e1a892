"""One `/v1` request from admission to its end, and the end itself, which happens exactly once.

The end frees the agent slot, updates the metrics, gives back the quota ticket and the credit hold, and queues the
cost and the usage row. Each step runs even when an earlier one raised, and a `Flight` that is dropped without
having ended (a stream the server never started) ends itself, so no slot or hold can leak.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from agent import protocol
from hub.agents.live import Link
from hub.db import utcnow
from hub.keys.cache import Caller
from hub.metrics import Metrics
from hub.proxy.admission import Admission, Pass
from hub.proxy.apis.base import Api, Outgoing, Parsed
from hub.proxy.bills import Bills
from hub.proxy.bounds import Billed
from hub.proxy.meter import Counts
from hub.proxy.scheduler import Scheduler

log = logging.getLogger("gpuclub")
BILL_WAIT = 2.0  # the longest the end of an answer waits for its bill to leave for the agent


@dataclass
class Call:
    """One client request, parsed once by its API's shape: everything the lifecycle needs to know about it."""

    caller: Caller
    api: Api
    parsed: Parsed
    outgoing: Outgoing
    body_bytes: int
    headers: dict[str, str] = field(default_factory=dict)  # passed on to the upstream (anthropic-version…)
    arrived: float = field(default_factory=time.monotonic)

    @classmethod
    def build(cls, caller: Caller, api: Api, parsed: Parsed, headers: dict[str, str] | None = None) -> Call:
        return cls(caller, api, parsed, api.outgoing(parsed), len(parsed.raw), headers or {})

    @property
    def model(self) -> str:
        return self.parsed.model

    @property
    def body(self) -> dict[str, Any]:
        return self.parsed.body

    @property
    def stream(self) -> bool:
        return self.parsed.stream

    @property
    def path(self) -> str:
        return f"/v1/{self.api.name}"


@dataclass
class Ends:
    """What ending a request touches (the proxy's parts)."""

    scheduler: Scheduler
    admission: Admission
    metrics: Metrics
    on_dispute: Callable[[int], None]
    spawn: Callable[[Coroutine[Any, Any, None]], None]
    bills: Bills | None = None  # signs the bill the serving agent keeps until the hub has written it


@dataclass(eq=False)
class Flight:
    """An admitted request: what it holds, and where it is."""

    call: Call
    ends: Ends
    admitted: Pass
    link: Link | None = None  # the agent serving this request (the last one tried)
    holding: bool = False  # whether this request still holds a slot on `link`
    request_id: str = ""  # the current attempt's id on the tunnel
    first: float | None = None
    ended: bool = False
    billing: asyncio.Task[None] | None = None  # the bill on its way to the agent

    async def bill_sent(self) -> None:
        """Wait (at most BILL_WAIT s) until the bill is with the agent: then the client may have the answer's end."""
        if self.billing is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self.billing), BILL_WAIT)

    def hold(self, link: Link, request_id: str) -> None:
        self.link, self.request_id, self.holding = link, request_id, True

    def let_go(self) -> None:
        """Give the slot back (before trying another agent, or once the agent is done with the request)."""
        if self.holding and self.link is not None:
            self.holding = False
            self.ends.scheduler.release(self.link)

    def end(self, status: int, billed: Billed | None = None, *, error: str = "") -> None:
        """Finish the request: every step below runs once, whatever raises in the others; nothing raises out.

        A step that fails is logged: the answer the client has (or is reading) is not taken away for it.
        """
        if self.ended:
            return
        self.ended = True
        try:
            self._end(status, billed, error)
        except Exception:
            log.exception("ending request %s failed", self.admitted.call_id)

    def _end(self, status: int, billed: Billed | None, error: str) -> None:
        link = self.link
        counts = billed.counts if billed else Counts()
        now = time.monotonic()
        ttft = self.first - self.call.arrived if self.first is not None else None
        try:
            if link is not None and self.request_id in link.exchanges:
                # An answer nobody will read any more (a stream the server dropped, a timeout): stop it at the
                # agent, which would otherwise wait for acknowledgements forever.
                self.ends.spawn(link.cancel(self.request_id))
        finally:
            self._release(status, billed, counts, ttft, now, error)

    def _release(
        self, status: int, billed: Billed | None, counts: Counts, ttft: float | None, now: float, error: str
    ) -> None:
        link = self.link
        try:
            self.let_go()
        finally:
            try:
                self.ends.metrics.observe(
                    model=self.call.model,
                    status=status,
                    prompt=counts.prompt_tokens,
                    completion=counts.completion_tokens,
                    ttft=ttft,
                    seconds=now - self.call.arrived,
                )
            except Exception:  # metrics are never worth a lost hold
                log.exception("updating metrics failed")
            finally:
                self._settle(link, status, billed, counts, ttft, now, error)

    def _settle(
        self,
        link: Link | None,
        status: int,
        billed: Billed | None,
        counts: Counts,
        ttft: float | None,
        now: float,
        error: str,
    ) -> None:
        admitted = self.admitted
        try:
            if billed is not None and billed.disputed and link is not None:
                self.ends.on_dispute(link.agent_id)
        except Exception:
            log.exception("recording a dispute failed")
        finally:
            reported = billed.reported if billed else None
            entry = None
            if link is not None:
                entry = {  # a row of the usage table
                    "request_id": admitted.call_id,  # shared with the hold and the ledger transaction
                    "user_id": self.call.caller.user_id,
                    "key_id": self.call.caller.key_id or None,  # None: no key (the Models page's try-it box)
                    "agent_id": link.agent_id,
                    "model": self.call.model[:200],
                    "endpoint": self.call.api.name[:40],
                    "stream": self.call.stream,
                    "status": status,
                    "prompt_tokens": counts.prompt_tokens,
                    "completion_tokens": counts.completion_tokens,
                    "audio_ms": counts.audio_ms or None,
                    "estimated": counts.estimated,
                    "reported_prompt_tokens": reported.prompt_tokens if reported else None,
                    "reported_completion_tokens": reported.completion_tokens if reported else None,
                    "disputed": bool(billed and billed.disputed),
                    "ttft_ms": round(ttft * 1000) if ttft is not None else None,
                    "duration_ms": round((now - self.call.arrived) * 1000),
                    "error": error[:300],
                    "created_at": utcnow(),
                }
            # What reached the client is charged: a whole answer, or the part of a stream that got through.
            delivered = link is not None and (status < 400 or (self.call.stream and self.first is not None))
            finished = self.ends.admission.finish(
                admitted,
                provider_id=link.owner_id if link else None,
                counts=counts,
                delivered=delivered,
                usage=entry,
                agent_id=link.agent_id if link else None,
            )
            if finished is not None and link is not None and self.ends.bills is not None:
                bill = self.ends.bills.sign(link.agent_id, finished)
                with contextlib.suppress(RuntimeError):  # no loop (the finalizer): the recorder has it anyway
                    self.billing = link.post(protocol.text("bill", id=admitted.call_id, bill=bill))

    def __del__(self) -> None:
        # The safety net: a stream response the server dropped before running it never reached its own end.
        if not self.ended:
            try:
                self.end(499, error="the request was dropped before it finished")
            except Exception:  # nothing may escape a finalizer
                log.exception("ending a dropped request failed")
