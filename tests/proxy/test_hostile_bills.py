"""A provider with the bills its agent keeps: sent back again they change nothing, forged ones are refused (and
confirmed, so an honest agent with a stale journal stops sending them), a malformed frame closes that tunnel."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.usage.models import UsageRecord
from tests.proxy.conftest import proxy_hub
from tests.support.cluster import Member, agent_token, member, provision
from tests.support.hostile import HostileAgent, hostile_agent
from tests.support.hub import LiveHub

HELLO = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}}], "usage": {}}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveHub]:
    with proxy_hub(tmp_path_factory.mktemp("hub")) as running:
        yield running


@pytest.fixture(scope="module")
def consumer(hub: LiveHub) -> Member:
    member(hub, "owner@lab.example.org")  # whose agent it is
    return member(hub, "alice@lab.example.org")


async def answering(agent: HostileAgent, request: dict[str, Any]) -> None:
    await agent.answer(request["id"], HELLO)


async def frame(agent: HostileAgent, kind: str, naming: str) -> dict[str, Any]:
    """The first frame of `kind` the hub sent that names `naming` (as its id, or among its ids)."""
    async with asyncio.timeout(30):
        while True:
            for message in agent.received:
                if message["type"] == kind and naming in (message.get("id"), *message.get("ids", ())):
                    return message
            agent.changed.clear()
            await agent.changed.wait()


async def first_bill(agent: HostileAgent) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while not (bills := [m for m in agent.received if m["type"] == "bill"]):
            agent.changed.clear()
            await agent.changed.wait()
    return bills[0]


def rows_of(hub: LiveHub, request_id: str) -> int:
    async def count(db: AsyncSession) -> int:
        query = select(func.count()).select_from(UsageRecord).where(col(UsageRecord.request_id) == request_id)
        return int((await db.exec(query)).one())

    return provision(hub, count)


async def test_a_bill_sent_back_changes_nothing_and_a_forged_one_is_refused(hub: LiveHub, consumer: Member) -> None:
    headers = {"Authorization": f"Bearer {consumer.key}"}
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    async with hostile_agent(hub, agent_token(hub, "owner@lab.example.org", "bills"), answering) as agent:
        async with httpx.AsyncClient(base_url=hub.url, headers=headers, timeout=30) as client:
            answered = await client.post("/v1/chat/completions", json=body)
        bill = await first_bill(agent)
        await frame(agent, "written", bill["id"])  # the hub wrote it and said so
        forged_id = "f" * 32
        mark = hub.process.mark()
        await agent.send(
            "bills",
            bills=[{"id": bill["id"], "bill": bill["bill"]}, {"id": forged_id, "bill": bill["bill"][:-4] + "AAAA"}],
        )
        refused = await frame(agent, "written", forged_id)
        await asyncio.to_thread(hub.process.wait_for, r"sent 2 bills not yet confirmed; 1 queued again", 10, since=mark)
        await frame(agent, "written", bill["id"])
        still_open = not agent.closed.done()

    assert answered.status_code == 200
    assert refused["ids"] == [forged_id]  # confirmed at once: it will never be written
    assert rows_of(hub, bill["id"]) == 1 and rows_of(hub, forged_id) == 0
    assert still_open
    hub.process.wait_for(r"refused 1 bills \(not signed by this hub\)")


@pytest.mark.parametrize("bills", ["not a list", [{"id": "short", "bill": "x"}], [{"bill": "x"}] * 101])
async def test_a_malformed_bills_frame_closes_that_tunnel(hub: LiveHub, consumer: Member, bills: object) -> None:
    async with hostile_agent(hub, agent_token(hub, "owner@lab.example.org", f"bad-{len(str(bills))}"), answering) as a:
        await a.send("bills", bills=bills)
        code, _ = await asyncio.wait_for(a.closed, 15)

    assert code == 1008
