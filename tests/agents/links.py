"""Agents as the hub sees them while connected, without a real tunnel: what the dispute tests need."""

from __future__ import annotations

from hub.agents.live import Link
from hub.agents.models import Agent
from hub.runtime import Tunnels

REASON = "Paused by the hub: 5 usage reports above the hub's bounds within 60 minutes."


async def _nothing(*_: object) -> None:
    return None


def connected(registry: Tunnels, agent: Agent) -> Link:
    """A ready tunnel for `agent` in `registry`, as if its agent had just dialled in (it sends nowhere)."""
    link = Link(
        agent_id=agent.pk,
        owner_id=agent.user_id,
        name=agent.name,
        shared=agent.shared,
        paused=agent.paused,
        capacity=4,
        models=frozenset({"llama-3-8b"}),
        send=_nothing,
        close=_nothing,
    )
    link.ready = True
    registry.add(link)
    return link
