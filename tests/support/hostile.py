"""A hostile agent: speaks `agent/protocol.py` to a real hub, and answers requests however a test scripts it.

A provider controls its agent, so the hub must survive anything on the tunnel. `hostile_agent(hub, token, script)`
connects, says hello, and for every `request` frame runs `script(agent, request)`, which sends whatever frames it
likes through `agent.send` (text) and `agent.send_bytes` (binary), well-formed or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from agent import protocol
from tests.support.hub import LiveHub


@dataclass
class HostileAgent:
    ws: ClientConnection
    welcome: dict[str, Any]
    received: list[dict[str, Any]] = field(default_factory=list)
    closed: asyncio.Future[tuple[int, str]] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    async def send(self, kind: str, **fields: Any) -> None:
        await self.ws.send(protocol.text(kind, **fields))

    async def send_raw(self, frame: str | bytes) -> None:
        await self.ws.send(frame)

    async def send_bytes(self, request_id: str, data: bytes) -> None:
        await self.ws.send(protocol.chunk(request_id, data))

    async def answer(
        self, request_id: str, body: Any, *, status: int = 200, content_type: str = "application/json"
    ) -> None:
        """A whole, well-formed answer."""
        await self.send("start", id=request_id, status=status, headers={"content-type": content_type})
        await self.send_bytes(request_id, body if isinstance(body, bytes) else json.dumps(body).encode())
        await self.send("end", id=request_id, error=None)

    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, kind: str, request_id: str) -> dict[str, Any]:
        """The first frame of `kind` the hub sent about `request_id` (waiting for it, 60 s at most)."""
        async with asyncio.timeout(60):
            while True:
                for message in self.received:
                    if message["type"] == kind and message.get("id") == request_id:
                        return message
                self.changed.clear()
                await self.changed.wait()

    def acks(self, request_id: str) -> int:
        return sum(m["bytes"] for m in self.received if m["type"] == "ack" and m.get("id") == request_id)

    def cancelled(self, request_id: str) -> bool:
        return any(m["type"] == "cancel" and m.get("id") == request_id for m in self.received)


Script = Callable[[HostileAgent, dict[str, Any]], Coroutine[Any, Any, None]]


@contextlib.asynccontextmanager
async def hostile_agent(
    hub: LiveHub, token: str, script: Script, *, models: Any = ("m",), capacity: Any = 8, **hello: Any
) -> AsyncIterator[HostileAgent]:
    url = hub.url.replace("http://", "ws://") + protocol.PATH
    async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None) as ws:
        await ws.send(
            protocol.text(
                "hello",
                version="evil",
                name="evil",
                capacity=capacity,
                models=list(models),
                **({"window": True} | hello),
            )
        )
        welcome = protocol.parse(str(await ws.recv()))
        agent = HostileAgent(ws, welcome)
        tasks: set[asyncio.Task[None]] = set()

        async def serve() -> None:
            try:
                async for frame in ws:
                    message = protocol.parse(str(frame))
                    agent.received.append(message)
                    agent.changed.set()
                    if message["type"] == "ping":
                        await agent.send("pong", t=message.get("t"))
                    elif message["type"] == "request":
                        task = asyncio.create_task(script(agent, message))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
            except ConnectionClosed:
                pass
            finally:
                if not agent.closed.done():
                    agent.closed.set_result((ws.close_code or 1006, ws.close_reason or ""))

        reader = asyncio.create_task(serve())
        try:
            yield agent
        finally:
            reader.cancel()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(reader, *tasks, return_exceptions=True)
