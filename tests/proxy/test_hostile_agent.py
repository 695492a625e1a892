"""A scripted hostile agent on a real hub: malformed frames, too many models, floods. The hub stays up and bounded.

Each test checks what the consumer sees (a clear error, the next request working) and that the hub's memory stays
within bounds, whatever the agent sends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from agent import protocol
from tests.proxy.conftest import proxy_hub
from tests.support.cluster import Member, agent_token, member
from tests.support.hostile import HostileAgent, hostile_agent
from tests.support.hub import LiveHub

MB = 1024 * 1024
HELLO = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}}], "usage": None}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, live_database: str) -> Iterator[LiveHub]:
    with proxy_hub(tmp_path_factory.mktemp("hub"), GPUCLUB_DATABASE_URL=live_database) as running:
        yield running


@pytest.fixture(scope="module")
def consumer(hub: LiveHub) -> Member:
    return member(hub, "consumer@lab.example.org")


def token(hub: LiveHub, name: str) -> str:
    owner = member(hub, f"{name}@lab.example.org")
    return agent_token(hub, owner.email, name)


def memory(hub: LiveHub) -> dict[str, int]:
    """The hub process's resident memory now and at its peak, in bytes (from /proc)."""
    status = Path(f"/proc/{hub.process.process.pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {name: int(fields[name].split()[0]) * 1024 for name in ("VmRSS", "VmHWM")}


async def chat(hub: LiveHub, who: Member, **extra: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}
        return await client.post(
            f"{hub.url}/v1/chat/completions", headers={"Authorization": f"Bearer {who.key}"}, json=body
        )


async def well_behaved(agent: HostileAgent, request: dict[str, Any]) -> None:
    await agent.answer(request["id"], HELLO)


@pytest.mark.parametrize(
    "start",
    [
        {"status": "abc", "headers": {}},
        {"status": True, "headers": {}},
        {"status": 99999, "headers": {}},
        {"status": 200, "headers": [["content-type", "application/json"]]},
        {"status": 200, "headers": {"content-type": 5}},
        {"status": 200, "headers": {"bad header": "x"}},
        {"status": 200, "headers": {"x": "y\r\nSet-Cookie: a=b"}},
    ],
    ids=["text-status", "bool-status", "huge-status", "headers-list", "header-number", "header-name", "header-crlf"],
)
async def test_a_malformed_start_fails_that_request_and_the_tunnel_goes_on(
    hub: LiveHub, consumer: Member, start: dict[str, Any]
) -> None:
    broken = {"on": True}

    async def script(agent: HostileAgent, request: dict[str, Any]) -> None:
        if broken["on"]:
            broken["on"] = False
            await agent.send("start", id=request["id"], **start)
            return
        await well_behaved(agent, request)

    async with hostile_agent(hub, token(hub, f"bad-start-{len(json.dumps(start))}"), script) as agent:
        failed = await chat(hub, consumer)
        answered = await chat(hub, consumer)
        still_open = not agent.closed.done()

    assert still_open
    assert failed.status_code == 502
    assert "failed before answering: the agent sent" in failed.json()["error"]["message"]
    assert answered.status_code == 200 and answered.json()["choices"][0]["message"]["content"] == "hello"


async def test_a_binary_frame_with_a_non_ascii_id_closes_that_tunnel_and_nothing_else(
    hub: LiveHub, consumer: Member
) -> None:
    async def script(agent: HostileAgent, request: dict[str, Any]) -> None:
        await agent.send("start", id=request["id"], status=200, headers={"content-type": "application/json"})
        await agent.send_raw("é".encode() * 16 + b"{}")

    async with hostile_agent(hub, token(hub, "non-ascii"), script) as agent:
        failed = await chat(hub, consumer)
        code, reason = await asyncio.wait_for(agent.closed, 15)

    assert failed.status_code == 502
    assert (code, reason) == (1008, "protocol error")
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{hub.url}/healthz")).status_code == 200
    hub.process.wait_for(r"broke the protocol: a binary frame without a valid request id")


@pytest.mark.parametrize(
    "frame",
    ["not json at all", "[1, 2, 3]", '{"no": "type"}', "[" * 100_000],
    ids=["text", "list", "untyped", "deep"],
)
async def test_a_garbage_control_frame_closes_the_tunnel_with_a_logged_reason(hub: LiveHub, frame: str) -> None:
    async def script(agent: HostileAgent, request: dict[str, Any]) -> None:
        return

    name = f"garbage-{len(frame)}-{frame[:3].encode().hex()}"  # one owner per frame, with a valid address
    async with hostile_agent(hub, token(hub, name), script) as agent:
        await agent.send_raw(frame)
        code, _ = await asyncio.wait_for(agent.closed, 15)

    assert code == 1008
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{hub.url}/healthz")).status_code == 200


async def test_an_end_with_a_strange_error_fails_the_request_plainly(hub: LiveHub, consumer: Member) -> None:
    async def script(agent: HostileAgent, request: dict[str, Any]) -> None:
        await agent.send("start", id=request["id"], status=200, headers={"content-type": "text/event-stream"})
        await agent.send_bytes(request["id"], b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n')
        await agent.send("end", id=request["id"], error={"nested": ["objects"]})

    async with hostile_agent(hub, token(hub, "strange-end"), script):
        response = await chat(hub, consumer, stream=True)

    assert response.status_code == 200
    assert '"content":"hi"' in response.text
    assert "stopped mid-answer: the agent reported an error" in response.text


async def test_ninety_thousand_model_names_are_refused_beyond_the_limit(hub: LiveHub, consumer: Member) -> None:
    names = [f"model-{n:05d}" for n in range(90_000)]

    async with hostile_agent(hub, token(hub, "hoarder"), well_behaved, models=names) as agent:
        async with httpx.AsyncClient(timeout=30) as client:
            listing = await client.get(f"{hub.url}/v1/models", headers={"Authorization": f"Bearer {consumer.key}"})

    assert agent.welcome["notice"] == "the hub ignored 89000 model(s) past the limit of 1000 per agent"
    served = [m["id"] for m in listing.json()["data"]]
    assert len(served) == 1000 and served[0] == "model-00000"
    assert len(listing.content) < 250_000  # about 230 bytes a model: its name, APIs, price and status


async def test_a_flood_past_the_window_fails_that_stream_and_memory_stays_bounded(
    hub: LiveHub, consumer: Member
) -> None:
    piece = b"data: " + b"x" * (protocol.MAX_CHUNK - 8) + b"\n\n"
    sent = {"bytes": 0}

    async def flood(agent: HostileAgent, request: dict[str, Any]) -> None:
        await agent.send("start", id=request["id"], status=200, headers={"content-type": "text/event-stream"})
        while sent["bytes"] < 300 * MB and not agent.cancelled(request["id"]):
            await agent.send_bytes(request["id"], piece)  # never waits for an ack
            sent["bytes"] += len(piece)
            await asyncio.sleep(0)  # let this process read the hub's frames too

    before = memory(hub)
    async with hostile_agent(hub, token(hub, "flood"), flood) as agent:
        async with httpx.AsyncClient(timeout=60) as client:
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
            headers = {"Authorization": f"Bearer {consumer.key}"}
            async with client.stream("POST", f"{hub.url}/v1/chat/completions", headers=headers, json=body) as response:
                # The client reads nothing until the hub has given up on the request.
                request = await _first_request(agent)
                await agent.wait_for("cancel", request["id"])
                text = (await response.aread()).decode()

    assert "more than the flow-control window allows" in text
    assert memory(hub)["VmHWM"] - before["VmRSS"] < 50 * MB


async def test_a_huge_plain_answer_is_cut_at_the_limit_and_memory_stays_bounded(hub: LiveHub, consumer: Member) -> None:
    async def huge(agent: HostileAgent, request: dict[str, Any]) -> None:
        """300 MB, keeping to the flow-control window (the flood test is the one that does not)."""
        await agent.send("start", id=request["id"], status=200, headers={"content-type": "application/json"})
        chunk = b"x" * protocol.MAX_CHUNK
        for sent in range(0, 300 * MB, len(chunk)):
            while sent - agent.acks(request["id"]) >= protocol.WINDOW and not agent.cancelled(request["id"]):
                agent.changed.clear()
                await agent.changed.wait()
            if agent.cancelled(request["id"]):
                return
            await agent.send_bytes(request["id"], chunk)

    before = memory(hub)
    async with hostile_agent(hub, token(hub, "huge"), huge):
        response = await chat(hub, consumer)

    assert response.status_code == 502
    assert response.json()["error"]["message"] == "The GPU's answer is larger than this hub's limit of 16777216 bytes."
    assert memory(hub)["VmHWM"] - before["VmRSS"] < 50 * MB


async def _first_request(agent: HostileAgent) -> dict[str, Any]:
    async with asyncio.timeout(15):
        while True:
            for message in agent.received:
                if message["type"] == "request":
                    return message
            agent.changed.clear()
            await agent.changed.wait()


async def test_an_agent_from_before_flow_control_is_told_to_upgrade(hub: LiveHub) -> None:
    url = hub.url.replace("http://", "ws://") + protocol.PATH
    headers = {"Authorization": f"Bearer {token(hub, 'old-agent')}"}
    async with connect(url, additional_headers=headers) as ws:
        await ws.send(protocol.text("hello", version="0.1.0", name="old", capacity=4, models=["m"], gpus=[]))
        said = protocol.parse(str(await ws.recv()))
        with pytest.raises(ConnectionClosed):
            await ws.recv()

    assert (
        said["message"]
        == "This hub needs a newer gpuclub-agent (one with flow control): upgrade it, then start it again."
    )
    assert ws.close_code == protocol.CLOSE_UPGRADE


async def test_empty_chunks_cannot_keep_a_stream_alive(hub: LiveHub, consumer: Member) -> None:
    async def script(agent: HostileAgent, request: dict[str, Any]) -> None:
        await agent.send("start", id=request["id"], status=200, headers={"content-type": "text/event-stream"})
        while not agent.cancelled(request["id"]):
            await agent.send_bytes(request["id"], b"")
            await asyncio.sleep(0)

    async with hostile_agent(hub, token(hub, "empty-chunks"), script):
        response = await chat(hub, consumer, stream=True)

    assert "stopped mid-answer: the agent sent an empty chunk" in response.text
