"""The agent's side of the tunnel, against a stand-in hub that speaks agent/protocol.py step by step.

The agent is the real `gpuclub-agent` process and the upstream a real fake-server process; only the hub end of
the WebSocket is played by the test, so each frame the agent sends can be checked in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from typing import Any

from agent import __version__, protocol
from tests.agent.conftest import MODELS, TOKEN, StandInHub, receive, response, running_agent, send_request
from tests.support.fake_upstream import RunningFake, fake_upstream


def chat(model: str = "llama-3-8b", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "say something nice"}], **extra}


async def test_the_agent_says_hello_and_answers_pings(hub: StandInHub, upstream: RunningFake) -> None:
    async with running_agent(hub, upstream, "--max-concurrency", "3"):
        ws = await hub.accept()
        hello = await receive(ws)
        await ws.send(protocol.text("welcome", agent_id="agent-1", name="rig-1", heartbeat=5))
        await ws.send(protocol.text("ping", t=1234.5))

        assert ws.request is not None and ws.request.path == protocol.PATH
        assert ws.request.headers["Authorization"] == f"Bearer {TOKEN}"
        apis = hello.pop("apis")  # what the fake upstream serves beyond LEGACY_APIS: see test_apis.py
        assert list(apis) == MODELS and all(a[:3] == list(protocol.LEGACY_APIS) for a in apis.values())
        assert hello == {
            "type": "hello",
            "version": __version__,
            "name": "rig-1",
            "capacity": 3,
            "models": MODELS,
            "gpus": [],
            "window": True,
        }
        assert await receive(ws) == {"type": "pong", "t": 1234.5}


async def test_a_stream_comes_back_chunk_by_chunk_as_the_upstream_sends_it(
    hub: StandInHub, upstream: RunningFake
) -> None:
    async with running_agent(hub, upstream):
        ws, _ = await hub.welcome()
        body = chat(stream=True, max_tokens=3, fake={"chunk_delay": 0.05})

        start, chunks, end = await response(ws, await send_request(ws, body))

        assert start is not None and start["status"] == 200
        assert start["headers"] == {"content-type": "text/event-stream; charset=utf-8"}
        assert len(chunks) == 4 and all(c.startswith(b"data: ") and c.endswith(b"\n\n") for c in chunks)
        assert b'"content":" tok2"' in chunks[2] and chunks[3] == b"data: [DONE]\n\n"
        assert end == {"type": "end", "id": start["id"], "error": None}
        assert (await upstream.stats())["last_body"] == body


async def test_the_agent_sends_no_more_than_the_window_until_the_hub_acknowledges(
    hub: StandInHub, upstream: RunningFake
) -> None:
    window = protocol.MAX_CHUNK
    async with running_agent(hub, upstream):
        ws = await hub.accept()
        await receive(ws)
        await ws.send(protocol.text("welcome", agent_id="agent-1", name="rig-1", heartbeat=5, window=window))
        request_id = await send_request(ws, chat(stream=True, fake={"stream_bytes": 2_000_000}))

        async def body_bytes(until: int) -> int:
            """Body bytes received until `until` of them came, or until the agent stops sending for 2 s."""
            received = 0
            with contextlib.suppress(TimeoutError):
                while received < until:
                    async with asyncio.timeout(2):
                        frame = await ws.recv()
                    if isinstance(frame, bytes):
                        received += len(frame) - protocol.ID_BYTES
            return received

        before_ack = await body_bytes(10 * window)
        await ws.send(protocol.text("ack", id=request_id, bytes=before_ack))
        after_ack = await body_bytes(1)
        await ws.send(protocol.text("cancel", id=request_id))

    assert window <= before_ack <= window + protocol.MAX_CHUNK
    assert after_ack > 0  # acknowledged: the answer flows again


async def test_an_upstream_error_status_is_passed_on_as_an_answer(hub: StandInHub, upstream: RunningFake) -> None:
    async with running_agent(hub, upstream):
        ws, _ = await hub.welcome()

        start, chunks, end = await response(ws, await send_request(ws, chat(fake={"status": 503})))

        assert start is not None and start["status"] == 503
        assert json.loads(b"".join(chunks))["error"]["message"] == "fake failure with status 503"
        assert end["error"] is None


async def test_an_upstream_dying_mid_stream_ends_with_an_error(hub: StandInHub, upstream: RunningFake) -> None:
    async with running_agent(hub, upstream):
        ws, _ = await hub.welcome()

        start, chunks, end = await response(ws, await send_request(ws, chat(stream=True, fake={"die_after_chunks": 2})))

        events = [line for line in b"".join(chunks).split(b"\n\n") if line]  # however the bytes were framed
        assert start is not None and len(events) == 2
        assert "broke off" in end["error"]


async def test_requests_the_agent_cannot_take_end_at_once_without_a_start(
    hub: StandInHub, upstream: RunningFake
) -> None:
    async with running_agent(hub, upstream, "--max-concurrency", "1"):
        ws, _ = await hub.welcome()
        hanging = await send_request(ws, chat(fake={"hang": True}))

        busy = await response(ws, await send_request(ws, chat()))
        unknown = await response(ws, await send_request(ws, chat("gpt-4o")))
        await ws.send(protocol.text("cancel", id=hanging))
        cancelled = await response(ws, hanging)

    assert busy == (None, [], {"type": "end", "id": busy[2]["id"], "error": "busy"})
    assert unknown[0] is None and "not served by this agent" in unknown[2]["error"]
    assert cancelled[0] is None and cancelled[2]["error"] == "cancelled"


async def test_cancel_closes_the_upstream_request(hub: StandInHub, upstream: RunningFake) -> None:
    before = await upstream.stats()
    async with running_agent(hub, upstream):
        ws, _ = await hub.welcome()
        request_id = await send_request(ws, chat(stream=True, max_tokens=500, fake={"chunk_delay": 0.05}))
        start = await receive(ws)
        await ws.send(protocol.text("cancel", id=request_id))
        _, chunks, end = await response(ws, request_id, start)

        assert end["error"] == "cancelled" and len(chunks) < 100
        stats = await upstream.stats(cancelled=before["cancelled"] + 1, in_flight=0)
        assert stats["cancelled"] == before["cancelled"] + 1 and stats["in_flight"] == 0


async def test_sigterm_finishes_what_is_in_flight_then_exits(hub: StandInHub, upstream: RunningFake) -> None:
    async with running_agent(hub, upstream) as agent:
        ws, _ = await hub.welcome()
        request_id = await send_request(ws, chat(stream=True, max_tokens=4, fake={"chunk_delay": 0.1}))
        first = await ws.recv()
        assert isinstance(first, str) and protocol.parse(first)["type"] == "start"

        agent.process.send_signal(signal.SIGTERM)

        frames: list[str | bytes] = []
        late = ""
        async with asyncio.timeout(15):
            async for frame in ws:  # until the agent closes the connection
                frames.append(frame)
                if frame == protocol.text("draining"):
                    late = await send_request(ws, chat())
        assert await asyncio.to_thread(agent.process.wait, 15) == 0

    controls = [protocol.parse(f) for f in frames if isinstance(f, str)]
    assert controls[0] == {"type": "draining"}
    assert {"type": "end", "id": late, "error": "draining"} in controls
    assert controls[-1] == {"type": "end", "id": request_id, "error": None}
    assert sum(1 for f in frames if isinstance(f, bytes)) >= 4
    assert ws.close_code == 1000


async def test_a_rejected_token_stops_the_agent_with_a_plain_message(hub: StandInHub, upstream: RunningFake) -> None:
    async with running_agent(hub, upstream) as agent:
        ws = await hub.accept()
        await receive(ws)
        await ws.close(protocol.CLOSE_UNAUTHORIZED, "bad token")

        assert await asyncio.to_thread(agent.process.wait, 15) == 1
    agent.drain()
    assert "the hub rejected the agent token: create a new one on the My GPUs page" in agent.text
    assert TOKEN not in agent.text


async def test_a_silent_hub_is_given_up_on_and_the_agent_reconnects(hub: StandInHub, upstream: RunningFake) -> None:
    async with running_agent(hub, upstream) as agent:
        first, _ = await hub.welcome(heartbeat=0.2)

        second = await hub.accept()

        assert (await receive(second))["type"] == "hello"
        await first.wait_closed()
    agent.drain()
    assert "nothing heard from the hub for 0.6 s" in agent.text


async def test_the_agent_tells_the_hub_when_the_models_change(hub: StandInHub) -> None:
    with fake_upstream(["llama-3-8b"]) as changing:
        async with running_agent(hub, changing, "--refresh", "1"):
            ws, hello = await hub.welcome()
            await changing.serve_models("llama-3-8b", "gemma-2-9b")

            changed = await receive(ws)

    assert hello["models"] == ["llama-3-8b"]
    assert (changed["type"], changed["models"]) == ("models", ["llama-3-8b", "gemma-2-9b"])
    assert list(changed["apis"]) == ["llama-3-8b", "gemma-2-9b"]
