"""A restart drops nothing: on SIGTERM the hub finishes the streams in flight, charges each once, turns new requests
away with 503 and Retry-After, says "draining" to load balancers, and its agents reconnect to the next hub."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import httpx
from sqlalchemy import func
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from hub.ledger import service as ledger
from hub.ledger.grants import grant
from hub.pricing import service as pricing
from hub.usage.models import UsageRecord
from tests.proxy.conftest import proxy_hub
from tests.support.cluster import agent_process, agent_token, member, provision
from tests.support.fake_upstream import fake_upstream
from tests.support.hub import GPUCLUB, ROOT
from tests.support.processes import run

CREDIT = 1_000_000
ONE_CREDIT_PER_5_TOKENS = 200_000 * CREDIT
TOKENS = 10  # 2 credits per stream
STREAMS = 16
SLOW = {"chunk_delay": 0.18}  # 12 chunks: about two seconds per stream


def chat(*, stream: bool) -> dict[str, object]:
    body: dict[str, object] = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": TOKENS}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}, "fake": SLOW}
    return body


async def one_stream(client: httpx.AsyncClient, started: asyncio.Event) -> list[str]:
    """The events of one stream, as the client receives them."""
    events: list[str] = []
    async with client.stream("POST", "/v1/chat/completions", json=chat(stream=True)) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                events.append(line.removeprefix("data: "))
                started.set()
    return events


def text_of(events: list[str]) -> str:
    parts = []
    for event in events[:-1]:
        for choice in json.loads(event)["choices"]:
            parts.append(choice["delta"].get("content", ""))
    return "".join(parts)


async def test_streams_in_flight_at_sigterm_finish_whole_and_are_charged_once(
    tmp_path: Path, own_database: dict[str, str]
) -> None:
    drain = {"GPUCLUB_DRAIN_SECONDS": "20"} | own_database
    with proxy_hub(tmp_path / "hub", **drain) as hub, fake_upstream(["m"]) as upstream:
        provider = member(hub, "provider@lab.example.org")
        alice = member(hub, "alice@lab.example.org")

        async def prepare(db: AsyncSession) -> None:
            await pricing.set_price(db, None, "m", input_micro=0, output_micro=ONE_CREDIT_PER_5_TOKENS)
            await pricing.set_fee(db, None, 1000)  # 10 %
            await grant(db, None, await accounts.get_member(db, alice.email), 100 * CREDIT, reason="test")

        provision(hub, prepare)
        token = agent_token(hub, provider.email, "gpu")
        with agent_process(hub, token, f"{upstream.url}/v1", capacity=STREAMS) as agent:
            headers = {"Authorization": f"Bearer {alice.key}"}
            async with httpx.AsyncClient(base_url=hub.url, headers=headers, timeout=30) as client:
                started = [asyncio.Event() for _ in range(STREAMS)]
                streams = [asyncio.create_task(one_stream(client, event)) for event in started]
                await asyncio.gather(*(event.wait() for event in started))  # every stream has its first token
                queued = asyncio.create_task(client.post("/v1/chat/completions", json=chat(stream=False)))

                mark = hub.process.mark()
                hub.process.process.send_signal(signal.SIGTERM)
                await asyncio.to_thread(hub.process.wait_for, r"draining: finishing", 10, since=mark)

                late = await client.post("/v1/chat/completions", json=chat(stream=False))
                health = await client.get("/healthz")
                waited = await queued
                unfinished = sum(not task.done() for task in streams)
                results = await asyncio.gather(*streams)

            await asyncio.to_thread(hub.process.process.wait, 30)
            hub.process.drain()
            agent_mark = agent.mark()
            await asyncio.to_thread(agent.wait_for, r"the hub is restarting", 10)

            with run([GPUCLUB, "serve"], env=hub.env, cwd=ROOT) as again:
                await asyncio.to_thread(again.wait_for, r"Uvicorn running on")
                await asyncio.to_thread(agent.wait_for, r"connected to the hub", 30, since=agent_mark)
                async with httpx.AsyncClient(base_url=hub.url, headers=headers, timeout=30) as client:
                    after = await client.post("/v1/chat/completions", json=chat(stream=False))

        async def outcome(db: AsyncSession) -> tuple[int, int, list[str], int]:
            alice_now = await ledger.balance_of(db, (await accounts.get_member(db, alice.email)).pk)
            provider_now = await ledger.balance_of(db, (await accounts.get_member(db, provider.email)).pk)
            rows = int((await db.exec(select(func.count()).select_from(UsageRecord))).one())
            return alice_now.balance + alice_now.held, provider_now.balance, await ledger.check(db), rows

        alice_left, earned, problems, rows = provision(hub, outcome)

    assert late.status_code == 503 and late.headers["retry-after"]
    assert late.json()["error"]["code"] == "hub_restarting"
    assert waited.status_code == 503 and waited.headers["retry-after"]
    assert (health.status_code, health.json()["status"]) == (503, "draining")
    assert unfinished == STREAMS  # the refusals came while every stream was still running
    for events in results:
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["usage"]["completion_tokens"] == TOKENS
        assert text_of(events) == " ".join(f"tok{i}" for i in range(TOKENS))  # every token, in order
    assert "told 1 agent(s) the hub is restarting" in hub.process.text
    assert "Application shutdown complete" in hub.process.text  # the recorder has written everything
    assert after.status_code == 200  # the agent came back to the next hub
    assert rows == STREAMS + 2  # and the queued request the drain refused (logged: tests/usage)
    assert alice_left == 100 * CREDIT - (STREAMS + 1) * 2 * CREDIT
    assert earned == (STREAMS + 1) * 2 * CREDIT * 9 // 10
    assert problems == []


async def test_a_stream_longer_than_the_drain_ends_with_an_error_event_and_the_hub_still_stops(tmp_path: Path) -> None:
    with proxy_hub(tmp_path / "hub", GPUCLUB_DRAIN_SECONDS="1") as hub, fake_upstream(["m"]) as upstream:
        provider = member(hub, "provider@lab.example.org")
        alice = member(hub, "alice@lab.example.org")
        with agent_process(hub, agent_token(hub, provider.email, "gpu"), f"{upstream.url}/v1"):
            headers = {"Authorization": f"Bearer {alice.key}"}
            body = chat(stream=True) | {"max_tokens": 100, "fake": {"chunk_delay": 0.5}}  # about 50 s
            async with httpx.AsyncClient(base_url=hub.url, headers=headers, timeout=30) as client:
                started = asyncio.Event()
                events: list[str] = []

                async def long_stream() -> None:
                    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                        async for line in response.aiter_lines():
                            if line.startswith("data: "):
                                events.append(line.removeprefix("data: "))
                                started.set()

                streaming = asyncio.create_task(long_stream())
                await started.wait()
                hub.process.process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(streaming, timeout=15)
            await asyncio.to_thread(hub.process.process.wait, 15)
            hub.process.drain()

    assert "[DONE]" not in events and "error" in json.loads(events[-1])  # told, not silently cut
    assert len(events) < 100
    assert "still in flight after 1 s" in hub.process.text
