"""The end of a request cannot leak: a failure injected at each step still gives back the slot, the hold and the
concurrency ticket, and the next request works.

The app runs in this process with an agent connected in memory, answering like an agent would (the same frame
handlers the tunnel uses), so each end-of-request step can be made to fail on purpose.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from litestar import Litestar
from sqlmodel.ext.asyncio.session import AsyncSession

from agent import protocol
from hub.accounts import service as accounts
from hub.agents import service as agents
from hub.agents.live import Link
from hub.keys import service as keys
from hub.ledger.grants import grant
from hub.pricing import service as pricing
from hub.quotas import service as quotas
from hub.runtime import runtime_of

CREDIT = 1_000_000
ANSWER = {
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "four words of text"}}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 4},
}
STREAM = (
    b'data: {"choices":[{"index":0,"delta":{"content":"four words"}}]}\n\n'
    b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":-4}}\n\ndata: [DONE]\n\n'
)


class Boom(Exception):
    pass


def explode(*_: Any, **__: Any) -> None:
    raise Boom("injected")


def connect(app: Litestar, agent_id: int, owner_id: int) -> Link:
    """An agent in memory: each request it is sent is answered at once, through the exchange like the tunnel does."""
    link: Link

    async def send(frame: str | bytes) -> None:
        message = protocol.parse(str(frame))
        if message["type"] != "request":
            return
        exchange = link.exchanges[message["id"]]
        if json.loads(message["body"]).get("stream"):
            exchange.on_start(200, {"content-type": "text/event-stream"})
            exchange.on_chunk(STREAM)
        else:
            exchange.on_start(200, {"content-type": "application/json"})
            exchange.on_chunk(json.dumps(ANSWER).encode())
        link.finish(message["id"])
        exchange.on_end(None)

    async def close(*_: Any) -> None:
        return None

    link = Link(agent_id, owner_id, "gpu", True, False, 4, frozenset({"m"}), send, close)
    link.ready = True
    runtime_of(app).registry.add(link)
    return link


@pytest.fixture
async def setup(app: Litestar, db: AsyncSession) -> tuple[str, int, Link]:
    owner = await accounts.add_member(db, "owner@lab.example.org")
    alice = await accounts.add_member(db, "alice@lab.example.org")
    agent, _ = await agents.create_agent(db, owner, name="gpu")
    _, secret = await keys.create_key(db, alice, name="k")
    await pricing.set_price(db, None, "m", input_micro=CREDIT * 1_000_000, output_micro=CREDIT * 1_000_000)
    await grant(db, None, alice, 10_000 * CREDIT, reason="test")
    await quotas.set_member_limits(db, None, alice, concurrency=1)
    return secret, alice.pk, connect(app, agent.pk, owner.pk)


STEPS: dict[str, Callable[[Litestar], tuple[Any, str]]] = {
    "metrics": lambda app: (runtime_of(app).metrics, "observe"),
    "dispute": lambda app: (runtime_of(app).proxy.ends, "on_dispute"),
    "recorder": lambda app: (runtime_of(app).recorder, "add"),
    "limiter": lambda app: (runtime_of(app).admission.limiter, "finish"),
    "purse": lambda app: (runtime_of(app).purses, "release"),
}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("step", list(STEPS))
async def test_a_failure_at_any_end_step_gives_back_the_slot_and_the_hold(
    app: Litestar,
    client: httpx.AsyncClient,
    setup: tuple[str, int, Link],
    step: str,
    stream: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret, alice, link = setup
    target, name = STEPS[step](app)
    headers = {"Authorization": f"Bearer {secret}"}
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    body |= {"stream": True} if stream else {}
    if step == "dispute":
        body["max_tokens"] = 1  # four tokens reported for one allowed: a dispute, so that step runs too

    monkeypatch.setattr(target, name, explode)
    await client.post("/v1/chat/completions", headers=headers, json=body)
    monkeypatch.undo()
    await runtime_of(app).recorder.flush()  # what it cost is written: nothing stays reserved for it

    assert link.in_flight == 0
    assert runtime_of(app).purses.held_by(alice) == 0 or step == "purse"
    if step != "limiter":  # concurrency 1: the ticket came back, so the next request is let in
        again = await client.post("/v1/chat/completions", headers=headers, json=body)
        assert again.status_code == 200
