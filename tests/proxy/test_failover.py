"""When agents fail: retried before the first byte, a clean error after it, dead tunnels noticed in seconds."""

from __future__ import annotations

import asyncio
import signal
import time

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.proxy.conftest import database_of
from tests.support.cluster import agent_process, agent_token, member, recorded
from tests.support.fake_upstream import fake_upstream
from tests.support.hub import LiveHub, live_hub

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


async def test_an_agent_that_dies_before_answering_is_retried_on_another(hub: LiveHub) -> None:
    owner = member(hub, "owner@lab.example.org")
    alice = member(hub, "alice@lab.example.org")
    with fake_upstream(["m"], "stall") as wedged, fake_upstream(["m"]) as healthy:
        with agent_process(hub, agent_token(hub, owner.email, "first"), f"{wedged.url}/v1") as first:
            async with openai.AsyncOpenAI(base_url=f"{hub.url}/v1", api_key=alice.key, max_retries=0) as client:
                asking = asyncio.create_task(client.chat.completions.create(model="m", messages=MESSAGES))
                await wedged.stats(in_flight=1)
                with agent_process(hub, agent_token(hub, owner.email, "second"), f"{healthy.url}/v1"):
                    first.process.kill()
                    answer = await asyncio.wait_for(asking, timeout=20)

    assert answer.choices[0].message.content == " ".join(f"tok{i}" for i in range(8))


async def test_an_agent_that_dies_mid_stream_ends_the_stream_with_a_clear_error(hub: LiveHub) -> None:
    owner = member(hub, "owner@lab.example.org")
    alice = member(hub, "alice@lab.example.org")
    with fake_upstream(["m"]) as upstream:
        with agent_process(hub, agent_token(hub, owner.email, "gpu"), f"{upstream.url}/v1") as gpu:
            async with openai.AsyncOpenAI(base_url=f"{hub.url}/v1", api_key=alice.key, max_retries=0) as client:
                stream = await client.chat.completions.create(
                    model="m",
                    messages=MESSAGES,
                    stream=True,
                    max_tokens=200,
                    extra_body={"fake": {"chunk_delay": 0.05}},
                )
                received = [await anext(stream)]
                gpu.process.kill()
                with pytest.raises(openai.APIError) as raised:
                    async for chunk in stream:
                        received.append(chunk)

    assert "stopped mid-answer" in raised.value.message
    assert 1 <= len(received) < 200
    [row] = recorded(database_of(hub), 1)
    assert row["status"] == 502 and row["estimated"] == 1 and int(row["completion_tokens"]) >= 1  # type: ignore[call-overload]


def test_a_frozen_agent_is_noticed_within_seconds(hub: LiveHub) -> None:
    owner = member(hub, "owner@lab.example.org")
    alice = member(hub, "alice@lab.example.org")
    with fake_upstream(["m"]) as upstream:
        with agent_process(hub, agent_token(hub, owner.email, "gpu"), f"{upstream.url}/v1") as gpu:
            mark = hub.process.mark()
            gpu.process.send_signal(signal.SIGSTOP)  # still connected, but silent: only heartbeats can tell
            frozen = time.monotonic()
            try:
                hub.process.wait_for(r"disconnected: the agent stopped answering", timeout=10, since=mark)
                noticed = time.monotonic() - frozen
                with openai.OpenAI(base_url=f"{hub.url}/v1", api_key=alice.key, max_retries=0) as client:
                    assert client.models.list().data == []
            finally:
                gpu.process.send_signal(signal.SIGCONT)

    assert noticed < 3.0, f"took {noticed:.1f} s with a 0.5 s heartbeat"


def test_agents_come_back_by_themselves_after_the_hub_restarts(hub: LiveHub) -> None:
    owner = member(hub, "owner@lab.example.org")
    alice = member(hub, "alice@lab.example.org")
    env = hub.env
    with fake_upstream(["m"]) as upstream:
        with agent_process(hub, agent_token(hub, owner.email, "gpu"), f"{upstream.url}/v1") as gpu:
            mark = gpu.mark()
            hub.process.process.terminate()
            hub.process.process.wait(timeout=10)
            gpu.wait_for(r"disconnected from the hub", since=mark)
            with live_hub(env) as restarted:
                gpu.wait_for(r"connected to the hub", since=mark, timeout=40)
                with openai.OpenAI(base_url=f"{restarted.url}/v1", api_key=alice.key, max_retries=0) as client:
                    answer = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=2)

    assert answer.choices[0].message.content == "tok0 tok1"


async def test_a_client_that_goes_away_cancels_the_request_at_the_upstream(hub: LiveHub) -> None:
    owner = member(hub, "owner@lab.example.org")
    alice = member(hub, "alice@lab.example.org")
    with fake_upstream(["m"]) as upstream:
        with agent_process(hub, agent_token(hub, owner.email, "gpu"), f"{upstream.url}/v1"):
            async with openai.AsyncOpenAI(base_url=f"{hub.url}/v1", api_key=alice.key, max_retries=0) as client:
                stream = await client.chat.completions.create(
                    model="m",
                    messages=MESSAGES,
                    stream=True,
                    max_tokens=500,
                    extra_body={"fake": {"chunk_delay": 0.05}},
                )
                await anext(stream)
                await stream.close()
            stats = await upstream.stats(cancelled=1)

    assert stats["cancelled"] == 1 and stats["in_flight"] == 0 and stats["completed"] == 0
    [row] = recorded(database_of(hub), 1)
    assert row["status"] == 499 and row["error"] == "the client went away"


async def test_a_client_that_gives_up_on_a_plain_request_cancels_it_at_the_upstream(hub: LiveHub) -> None:
    owner = member(hub, "owner@lab.example.org")
    alice = member(hub, "alice@lab.example.org")
    with fake_upstream(["m"], "stall") as upstream:
        with agent_process(hub, agent_token(hub, owner.email, "gpu"), f"{upstream.url}/v1"):
            async with openai.AsyncOpenAI(base_url=f"{hub.url}/v1", api_key=alice.key, max_retries=0) as client:
                asking = asyncio.create_task(client.chat.completions.create(model="m", messages=MESSAGES))
                await upstream.stats(in_flight=1)
                asking.cancel()
            stats = await upstream.stats(cancelled=1)

    assert stats["cancelled"] == 1 and stats["in_flight"] == 0
    [row] = recorded(database_of(hub), 1)
    assert row["status"] == 499
