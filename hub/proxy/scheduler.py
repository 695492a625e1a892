"""Choosing an agent for each request, and a queue that is fair between members when all are busy.

Among the agents that serve the model and admit the member, the least loaded (in flight / capacity) wins; the
member's own agent wins ties and goes first when a slot frees. When every agent is full, requests wait in one
queue per member and free slots are handed out round-robin across members, so one member's hundred queued
requests do not hold back another member's one. Queues are bounded in length and in waiting time.

Every pick honours the key's trust scope (whose GPUs may see its prompts). A queued request that no online agent
could serve any more (the agent left, paused, or stopped offering the model) fails at once instead of waiting.

A request for a model nobody serves is answered from the `Catalog` on that miss path only: a model the club knows
(offered by an agent that is paused or gone, or priced) but no GPU serves now is 503 "no GPU serving X is online
now"; a model the club never heard of stays 404.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from dataclasses import dataclass, field

from hub.agents.live import CHAT, Link, Registry
from hub.db import Database
from hub.errors import HubError, ModelNotFound, Restarting, TooManyRequests, Unavailable
from hub.keys.trust import ANY, Scope, Trust
from hub.proxy.apis.base import Api
from hub.proxy.catalog import Catalog

log = logging.getLogger("gpuclub")

OWN = Scope(Trust.OWN)


@dataclass
class Waiter:
    model: str
    user_id: int
    exclude: frozenset[int]
    own_only: bool
    scope: Scope
    api: str
    slot: asyncio.Future[Link] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


def restarting() -> Restarting:
    return Restarting("This hub is restarting; send the request again in a few seconds.", retry_after=5)


class Scheduler:
    def __init__(
        self, registry: Registry, *, queue_per_member: int, wait_seconds: float, database: Database | None = None
    ) -> None:
        self.registry = registry
        self.catalog = Catalog(registry, database)
        self.queue_per_member = queue_per_member
        self.wait_seconds = wait_seconds
        self.queues: dict[int, deque[Waiter]] = {}
        self.turns: deque[int] = deque()  # members with waiters, in round-robin order
        self.closed = False  # the hub is draining: nothing waits any more
        registry.changed.append(self.changed)

    def pick(
        self,
        model: str,
        user_id: int,
        exclude: frozenset[int] = frozenset(),
        *,
        own_only: bool = False,
        scope: Scope = ANY,
        api: str = CHAT,
    ) -> Link | None:
        best: Link | None = None
        for link in self.registry.serving(model, user_id, scope, api):
            if link.agent_id in exclude or not link.has_room or (own_only and link.owner_id != user_id):
                continue
            rank = (link.load, link.owner_id != user_id, link.in_flight)
            if best is None or rank < (best.load, best.owner_id != user_id, best.in_flight):
                best = link
        return best

    def serving(self, model: str, user_id: int, scope: Scope = ANY, api: str = CHAT) -> list[Link]:
        return self.registry.serving(model, user_id, scope, api)

    def unknown(self, model: str, user_id: int, scope: Scope = ANY, api: Api | None = None) -> ModelNotFound:
        """Why nobody serves this request: no such model within reach, or the model but not through this API."""
        limit = f" (this API key only reaches {scope.reach}; change that on the API keys page)" if scope.limited else ""
        links = self.registry.reachable(user_id, scope).get(model, [])
        if links and api is not None:
            served = sorted(set().union(*(link.apis_of(model) for link in links)))
            return ModelNotFound(
                f"No GPU you can use serves '{model}' through {api.title} (/v1/{api.name}) right now{limit}; "
                f"its servers offer it through: {', '.join('/v1/' + name for name in served)}."
            )
        return ModelNotFound(
            f"The model '{model}' does not exist or no GPU you can use serves it right now{limit}. "
            "GET /v1/models lists what is available."
        )

    async def missing(self, model: str, user_id: int, scope: Scope = ANY, api: Api | None = None) -> HubError:
        """Like `unknown`, but a model the club knows that no GPU serves online now is 503, not 404 (miss path only)."""
        online = any(link.admits(user_id) and model in link.models for link in self.registry.links.values())
        if not online and await self.catalog.knows(model, user_id, scope):
            return offline(model, self.catalog.status(model, user_id, scope))
        return self.unknown(model, user_id, scope, api)

    async def acquire(
        self,
        model: str,
        user_id: int,
        exclude: frozenset[int] = frozenset(),
        *,
        own_only: bool = False,
        scope: Scope = ANY,
        api: str = CHAT,
    ) -> Link:
        """A slot on an agent for this request (only the member's own agents if `own_only`, and only within the
        key's `scope`, serving `api`); `release` it after."""
        candidates = [
            link
            for link in self.registry.serving(model, user_id, scope, api)
            if link.agent_id not in exclude and (link.owner_id == user_id or not own_only)
        ]
        if not candidates:
            raise await self.missing(model, user_id, scope)
        if not self.queues.get(user_id) and (
            link := self.pick(model, user_id, exclude, own_only=own_only, scope=scope, api=api)
        ):
            link.in_flight += 1
            return link
        if self.closed:
            raise restarting()
        queue = self.queues.setdefault(user_id, deque())
        if len(queue) >= self.queue_per_member:
            raise TooManyRequests(
                f"You already have {len(queue)} requests waiting for a GPU; wait for some to finish.", retry_after=2
            )
        waiter = Waiter(model, user_id, exclude, own_only, scope, api)
        queue.append(waiter)
        if user_id not in self.turns:
            self.turns.append(user_id)
        try:
            return await asyncio.wait_for(asyncio.shield(waiter.slot), timeout=self.wait_seconds)
        except TimeoutError:
            if waiter.slot.done() and not waiter.slot.cancelled():
                return waiter.slot.result()  # a slot arrived just as the wait ran out: keep it
            self._forget(waiter)
            raise Unavailable(
                f"Every GPU serving '{model}' is busy; no slot freed within {math.ceil(self.wait_seconds)} s.",
                retry_after=5,
            ) from None
        except asyncio.CancelledError:
            # A slot handed over as the client left goes back; a failure set at that moment is simply dropped.
            if waiter.slot.done() and not waiter.slot.cancelled() and waiter.slot.exception() is None:
                self.release(waiter.slot.result())
            self._forget(waiter)
            raise

    def release(self, link: Link) -> None:
        link.in_flight = max(0, link.in_flight - 1)
        self.dispatch()

    def close(self) -> None:
        """The hub is draining: fail every waiting request at once, and every request that would wait from now on."""
        self.closed = True
        for queue in list(self.queues.values()):
            for waiter in list(queue):
                self._forget(waiter)
                if not waiter.slot.done():
                    waiter.slot.set_exception(restarting())

    def changed(self) -> None:
        """Agents came, went or changed: fail the requests nobody can serve any more, then hand out slots."""
        for queue in list(self.queues.values()):
            for waiter in list(queue):
                if waiter.slot.done():
                    continue
                scope = OWN if waiter.own_only else waiter.scope
                if not self.registry.expects(waiter.model, waiter.user_id, scope, waiter.exclude, waiter.api):
                    self._forget(waiter)
                    waiter.slot.set_exception(self._gone(waiter))
        self.dispatch()

    @staticmethod
    def _gone(waiter: Waiter) -> Unavailable:
        within = f" within this API key's limit ({waiter.scope.reach})" if waiter.scope.limited else ""
        return Unavailable(
            f"No GPU{within} serves '{waiter.model}' any more: the agent that did went offline, was paused, or "
            "stopped offering the model. Try again later, or pick another model from GET /v1/models.",
            retry_after=5,
        )

    def dispatch(self) -> None:
        """Hand free slots to waiting requests: owners on their own agents first, then round-robin."""
        self._owners_first()
        while self.turns:
            for _ in range(len(self.turns)):
                user_id = self.turns[0]
                self.turns.rotate(-1)
                if self._serve_one(user_id):
                    break
            else:
                return

    def _owners_first(self) -> None:
        for user_id in list(self.turns):
            while self._serve_one(user_id, own_only=True):
                pass

    def _serve_one(self, user_id: int, *, own_only: bool = False) -> bool:
        queue = self.queues.get(user_id)
        if not queue:
            return False
        for waiter in list(queue):
            link = self.pick(
                waiter.model,
                user_id,
                waiter.exclude,
                own_only=own_only or waiter.own_only,
                scope=waiter.scope,
                api=waiter.api,
            )
            if link is None:
                continue
            queue.remove(waiter)
            if not queue:
                self.queues.pop(user_id, None)
                self.turns.remove(user_id)
            link.in_flight += 1
            waiter.slot.set_result(link)
            return True
        return False

    def _forget(self, waiter: Waiter) -> None:
        queue = self.queues.get(waiter.user_id)
        if queue and waiter in queue:
            queue.remove(waiter)
            if not queue:
                self.queues.pop(waiter.user_id, None)
                self.turns.remove(waiter.user_id)

    def waiting(self) -> int:
        return sum(len(queue) for queue in self.queues.values())


def offline(model: str, status: str = "offline") -> Unavailable:
    paused = " (its GPUs are paused)" if status == "paused" else ""
    error = Unavailable(
        f"No GPU serving '{model}' is online now{paused}. Try again later, or pick another model from GET /v1/models.",
        retry_after=30,
    )
    error.code = "model_offline"
    return error
