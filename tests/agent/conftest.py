"""The agent as its users run it: the `gpuclub-agent` command, against fake upstream processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from agent import protocol
from tests.support.fake_upstream import RunningFake, fake_upstream

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
