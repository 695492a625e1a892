"""The agent as its users run it: the `gpuclub-agent` command, against fake upstream processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol

import pytest
from aiohttp import web
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from agent import protocol
from tests.support.fake_upstream import RunningFake, fake_upstream
from tests.support.processes import Running, run

AGENT = str(Path(sys.executable).parent / "gpuclub-agent")
TOKEN = "agt_" + "s3cr3t" * 6
MODELS = ["llama-3-8b", "qwen2.5-7b"]


@pytest.fixture(scope="session")
def upstream() -> Iterator[RunningFake]:
    """A server like llama.cpp's, answering /v1/models with both `data` and `models`."""
    with fake_upstream(MODELS, "models-both") as fake:
        yield fake


@pytest.fixture(scope="session")
def models_only() -> Iterator[RunningFake]:
    with fake_upstream(["mistral-7b", "llama-3-8b"], "models-only") as fake:
        yield fake


@pytest.fixture(scope="session")
def keyed() -> Iterator[RunningFake]:
    """A server that wants `Authorization: Bearer up-key`."""
    with fake_upstream(["phi-3"], "require-key=up-key") as fake:
        yield fake


@dataclass
class StandInHub:
    """The hub's end of the tunnel, played step by step by a test: each connection waits in `arrivals`.

    It stands in for hub/ so the agent's frames can be checked one by one against agent/protocol.py.
    """

    url: str = ""
    arrivals: asyncio.Queue[ServerConnection] = field(default_factory=asyncio.Queue)

    async def handler(self, ws: ServerConnection) -> None:
        await self.arrivals.put(ws)
        await ws.wait_closed()

    @staticmethod
    def health(connection: ServerConnection, request: Request) -> Response | None:
        return connection.respond(HTTPStatus.OK, "ok\n") if request.path == "/healthz" else None

    async def accept(self) -> ServerConnection:
        async with asyncio.timeout(15):
            return await self.arrivals.get()

    async def welcome(self, *, heartbeat: float = 5) -> tuple[ServerConnection, dict[str, Any]]:
        ws = await self.accept()
        hello = await receive(ws)
        await ws.send(protocol.text("welcome", agent_id="agent-1", name=hello["name"], heartbeat=heartbeat))
        return ws, hello


@pytest.fixture
async def hub() -> AsyncIterator[StandInHub]:
    stand_in = StandInHub()
    async with serve(stand_in.handler, "127.0.0.1", 0, process_request=stand_in.health) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        stand_in.url = f"http://127.0.0.1:{port}"
        yield stand_in


async def receive(ws: ServerConnection) -> dict[str, Any]:
    async with asyncio.timeout(15):
        frame = await ws.recv()
    assert isinstance(frame, str), frame
    return protocol.parse(frame)


def agent_env(**extra: str) -> dict[str, str]:
    """The environment without anything GPUCLUB_* from the developer's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCLUB_")}
    env.update(extra)
    return env


def agent(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AGENT, *args], env=dict(env or agent_env()), capture_output=True, text=True, timeout=60, check=False
    )


class Upstream(Protocol):
    @property
    def url(self) -> str: ...


@asynccontextmanager
async def running_agent(hub: StandInHub, upstream: Upstream, *flags: str) -> AsyncIterator[Running]:
    command = [AGENT, "--hub", hub.url, "--upstream", upstream.url, "--name", "rig-1", *flags]
    with run(command, env=agent_env(GPUCLUB_AGENT_TOKEN=TOKEN)) as agent:
        try:
            yield agent
        finally:
            # Stop it while this event loop still runs the stand-in hub, so its goodbye is answered.
            if agent.process.poll() is None:
                agent.process.send_signal(signal.SIGTERM)
                await asyncio.to_thread(agent.process.wait, 15)
    agent.drain()
    assert "Traceback" not in agent.text, agent.text


async def send_request(ws: ServerConnection, body: dict[str, Any], path: str = "/v1/chat/completions") -> str:
    request_id = uuid.uuid4().hex
    await ws.send(protocol.text("request", id=request_id, path=path, body=json.dumps(body)))
    return request_id


async def response(
    ws: ServerConnection, request_id: str, start: dict[str, Any] | None = None
) -> tuple[dict[str, Any] | None, list[bytes], dict[str, Any]]:
    """(start, chunks, end) for one request, `start` unless already received; no other request's frames."""
    chunks: list[bytes] = []
    while True:
        async with asyncio.timeout(15):
            frame = await ws.recv()
        if isinstance(frame, bytes):
            chunk_id, data = protocol.split_chunk(frame)
            assert chunk_id == request_id and start is not None
            chunks.append(data)
            continue
        message = protocol.parse(frame)
        assert message.get("id") == request_id, message
        if message["type"] == "start":
            start = message
        elif message["type"] == "end":
            return start, chunks, message


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass
class StubUpstream:
    """A model server played by the test, in this event loop, for what the fake upstream process cannot show.

    It lists `models`, answers each path in `answers` with that status (and the JSON `reply`), hangs on the paths
    in `hang`, and 404s the rest; `gather` holds POSTs until that many have arrived (they came concurrently).
    Every request it got is in `seen`.
    """

    models: list[str]
    answers: dict[str, int] = field(default_factory=dict)
    hang: set[str] = field(default_factory=set)
    gather: int = 0
    reply: Any = None
    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def posted(self) -> list[Seen]:
        return [s for s in self.seen if s.method == "POST"]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.seen.append(Seen(request.method, request.path, headers, await request.read()))
        if request.method == "GET" and request.path == "/v1/models":
            return web.json_response({"object": "list", "data": [{"id": m} for m in self.models]})
        if self.gather and len(self.posted()) >= self.gather:
            self._arrived.set()
        if self.gather:
            await self._arrived.wait()
        if request.path in self.hang:
            await self.released.wait()
        status = self.answers.get(request.path, 404)
        return web.json_response(self.reply if status == 200 else {"error": {"message": "stub"}}, status=status)


@asynccontextmanager
async def stub_upstream(models: Sequence[str], port: int = 0, **options: Any) -> AsyncIterator[StubUpstream]:
    """`port`: that of an earlier stub, to play the same server coming back."""
    stub = StubUpstream(list(models), **options)
    app = web.Application(client_max_size=2 * protocol.MAX_REQUEST_FRAME)
    app.router.add_route("*", "/{tail:.*}", stub.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stub.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield stub
    finally:
        stub.released.set()  # let hanging answers end, so the server stops at once
        stub._arrived.set()
        await runner.cleanup()
