"""What the club knows of models beyond those served right now, for the miss path and the Models page.

A model no ready agent serves is 503 "no GPU serving X is online now" when the club knows it (an agent offered it
and is paused or gone, or it has a price) and 404 otherwise. What agents offered is kept in memory as tunnels come
and go, and in the agents table (the names each agent last offered), read once after a restart so an agent that is
still away keeps its models known; prices are read at most every 10 s.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import Status, User
from hub.agents.live import Link, Registry
from hub.agents.models import Agent
from hub.db import Database, utcnow
from hub.keys.trust import ANY, Scope
from hub.pricing import service as pricing
from hub.pricing.models import DEFAULT
from hub.pricing.service import Rate

log = logging.getLogger("gpuclub")

# What the catalog keeps of agents that are gone: a hostile member could connect many agents once each, with long
# lists of models, and leave. Past these bounds the oldest gone agent (or the rest of its list) is forgotten.
GONE_MODELS = 200  # model names kept per gone agent
GONE_PER_OWNER = 50  # gone agents kept per owner
GONE_SECONDS = 7 * 86_400.0  # a gone agent is forgotten a week after it left


@dataclass(frozen=True)
class Offer:
    """What an agent offered when this hub last saw it; it may be paused, draining or gone since."""

    owner_id: int
    shared: bool
    paused: bool
    models: frozenset[str]
    verified: bool = False
    gone_at: float | None = None  # time.monotonic() when it left

    def open_to(self, user_id: int, scope: Scope = ANY) -> bool:
        return (self.shared or self.owner_id == user_id) and scope.admits(
            owner_id=self.owner_id, verified=self.verified, user_id=user_id
        )


PRICES_SECONDS = 10.0


class Catalog:
    """The models the club knows beyond those served right now: what every agent offered while this hub ran (kept
    after it pauses or goes), and every priced model. Read only when no GPU serves a request, and by the pages.

    Agents' offers are remembered in memory, and after a restart read once from the agents table (what each agent
    last offered), so an agent still away keeps its models known; priced models are known from the database (read
    at most every 10 s, or after a price change).
    A revoked agent is forgotten at once, and gone agents within the bounds above (GONE_*).
    """

    def __init__(
        self, registry: Registry, database: Database | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.registry = registry
        self.database = database
        self.clock = clock
        self.offers: dict[int, Offer] = {}
        self.rates: dict[str, Rate] = {}
        self.rates_until = -math.inf
        self.loading: asyncio.Future[dict[str, Rate]] | None = None
        self.restored = False  # whether the agents table was read (once, with the first prices)
        registry.changed.append(self.remember)

    def remember(self) -> None:
        """A tunnel came, went or changed: keep what each connected agent offers (a gone one keeps its last)."""
        live = self.registry.links
        for link in live.values():
            offer = self.offers.get(link.agent_id)
            if (
                offer is None
                or offer.models is not link.models
                or (offer.shared, offer.paused, offer.owner_id, offer.verified, offer.gone_at)
                != (link.shared, link.paused, link.owner_id, link.verified, None)
            ):
                self.offers[link.agent_id] = Offer(
                    link.owner_id, link.shared, link.paused, link.models, verified=link.verified
                )
        now = self.clock()
        left: set[int] = set()  # owners with an agent that just left
        for agent_id, offer in list(self.offers.items()):
            if agent_id in live:
                continue
            if offer.gone_at is None:
                models = offer.models if len(offer.models) <= GONE_MODELS else sorted(offer.models)[:GONE_MODELS]
                self.offers[agent_id] = replace(offer, models=frozenset(models), gone_at=now)
                left.add(offer.owner_id)
            elif now - offer.gone_at > GONE_SECONDS:
                del self.offers[agent_id]
        for owner_id in left:
            gone = sorted(
                (offer.gone_at or 0.0, agent_id)
                for agent_id, offer in self.offers.items()
                if offer.owner_id == owner_id and offer.gone_at is not None
            )
            for _, agent_id in gone[: max(0, len(gone) - GONE_PER_OWNER)]:
                del self.offers[agent_id]

    def revoked(self, agent_id: int) -> None:
        """The agent's token was revoked: its models are no longer the club's (404, not 503, once nobody serves)."""
        self.offers.pop(agent_id, None)

    def configure(self, agent_id: int, *, shared: bool, paused: bool) -> None:
        """The owner changed a gone agent (a connected one follows through the registry): made private, it is no
        longer known to others."""
        offer = self.offers.get(agent_id)
        if offer is not None and offer.gone_at is not None:
            self.offers[agent_id] = replace(offer, shared=shared, paused=paused)

    def forget_prices(self) -> None:
        self.rates_until = -math.inf

    async def prices(self) -> dict[str, Rate]:
        """Every price by model (the default under "*"), read at most every few seconds; the last read while the
        database does not answer."""
        if self.rates_until > time.monotonic() or self.database is None:
            return self.rates
        if self.loading is None:
            self.loading = asyncio.ensure_future(self._load())
        return await asyncio.shield(self.loading)

    async def _load(self) -> dict[str, Rate]:
        assert self.database is not None
        try:
            async with self.database.session() as db:
                if not self.restored:
                    await self._restore(db)
                rows = await pricing.list_prices(db)
            self.rates = {
                row.model: Rate(
                    row.input_per_million, row.output_per_million, row.default_max_tokens, row.audio_per_minute
                )
                for row in rows
            }
        except Exception as exc:  # noqa: BLE001 - a miss is answered from what was read last
            log.warning("could not read prices for the model catalog: %s", type(exc).__name__)
        finally:
            self.rates_until = time.monotonic() + PRICES_SECONDS
            self.loading = None
        return self.rates

    async def _restore(self, db: AsyncSession) -> None:
        """What agents that are away last offered, from the agents table, within the bounds for gone agents."""
        since = utcnow() - timedelta(seconds=GONE_SECONDS)
        query = (
            select(Agent)
            .join(User, col(User.id) == col(Agent.user_id))
            .where(
                col(Agent.revoked_at).is_(None),
                col(Agent.last_seen_at) >= since,
                Agent.models != "",
                User.status == Status.ACTIVE,
            )
            .order_by(col(Agent.last_seen_at).desc())
            .limit(GONE_PER_OWNER * 200)
        )
        now, wall = self.clock(), utcnow()
        kept: dict[int, int] = {}
        for agent in (await db.exec(query)).all():
            owner_id = agent.user_id
            if agent.pk in self.offers or kept.get(owner_id, 0) >= GONE_PER_OWNER:
                continue  # connected since the restart (the registry knows better), or past the owner's bound
            kept[owner_id] = kept.get(owner_id, 0) + 1
            names = frozenset(sorted(agent.models.split("\n"))[:GONE_MODELS])
            seen = agent.last_seen_at
            ago = (wall - seen.replace(tzinfo=wall.tzinfo)).total_seconds() if seen else 0.0
            self.offers[agent.pk] = Offer(
                owner_id, agent.shared, agent.paused, names, verified=agent.verified, gone_at=now - ago
            )
        self.restored = True

    @staticmethod
    def rate(rates: dict[str, Rate], model: str) -> Rate:
        """A model's price among `rates`: its own, else the club's default, else free."""
        return rates.get(model) or rates.get(DEFAULT) or Rate(0, 0)

    def offered(self, user_id: int) -> dict[str, str]:
        """Models any agent open to this member offers or offered, with "online", "paused" or "offline"."""
        found: dict[str, str] = {}
        rank = {"offline": 0, "paused": 1, "online": 2}
        live = self.registry.links
        for agent_id, offer in self.offers.items():
            if not offer.open_to(user_id):
                continue
            link = live.get(agent_id)
            status = "offline" if link is None else _status(link, user_id)
            for model in offer.models:
                if model not in found or rank[status] > rank[found[model]]:
                    found[model] = status
        return found

    async def knows(self, model: str, user_id: int, scope: Scope = ANY) -> bool:
        """Whether an agent within the key's `scope` offers or offered `model`, or it is priced."""
        rates = await self.prices()  # also reads, once after a restart, what agents that are away offered
        if any(offer.open_to(user_id, scope) and model in offer.models for offer in self.offers.values()):
            return True
        return model != DEFAULT and model in rates

    def status(self, model: str, user_id: int, scope: Scope = ANY) -> str:
        """ "online", "paused" or "offline" for one model, as `offered` says it."""
        statuses = {
            "offline" if (link := self.registry.links.get(agent_id)) is None else _status(link, user_id)
            for agent_id, offer in self.offers.items()
            if offer.open_to(user_id, scope) and model in offer.models
        }
        return next((status for status in ("online", "paused") if status in statuses), "offline")


def _status(link: Link, user_id: int) -> str:
    if link.admits(user_id):
        return "online"
    if link.paused:
        return "paused"
    return "offline"  # draining before a restart, or still in its handshake
