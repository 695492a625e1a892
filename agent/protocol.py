"""The tunnel protocol between an agent and the hub, over one WebSocket the agent opens.

This module is the single definition of the wire format; the hub imports it too (the agent never imports
the hub). Control messages are JSON text frames with a "type"; response bodies travel as binary frames:
32 ASCII bytes of request id followed by the raw bytes of one chunk, exactly as the upstream sent them.

    agent → hub   hello      {version, name, capacity, models: [str], gpus: [{name, memory_mb}]}
    hub → agent   welcome    {agent_id, name, heartbeat}        heartbeat: seconds between pings
    agent → hub   models     {models: [str]}                    re-advertised whenever the set changes
    hub → agent   request    {id, path, body}                   body: the JSON request text, unchanged
    agent → hub   start      {id, status, headers: {str: str}}  the upstream answered (status line + headers)
    agent → hub   <binary>   id + chunk                         body bytes, in order, as they arrive
    agent → hub   end        {id, error: str | null}            finished (error: the upstream failed mid-way)
    hub → agent   cancel     {id}                               the client went away: stop the upstream request
    hub → agent   ping       {t}                                the agent answers pong {t} at once
    agent → hub   pong       {t}
    agent → hub   draining   {}                                 shutting down: finish what is in flight,
                                                                take nothing new
    hub → agent   error      {message}                          before closing, e.g. a revoked token

The WebSocket URL is the hub URL + PATH; the agent token goes in the Authorization header as a Bearer token.
Close codes: 4401 (bad or revoked token: do not retry until the owner fixes it), 4409 (the same agent token is
already connected elsewhere: the older connection is closed with this code).
"""

from __future__ import annotations

import json
from typing import Any

PATH = "/agent/connect"
ID_BYTES = 32
CLOSE_UNAUTHORIZED = 4401
CLOSE_REPLACED = 4409
MAX_FRAME = 16 * 1024 * 1024


def text(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields}, separators=(",", ":"))


def parse(frame: str) -> dict[str, Any]:
    """A control message; raises ValueError for anything that is not a JSON object with a type."""
    message = json.loads(frame)
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ValueError("not a control message")
    return message


def chunk(request_id: str, data: bytes) -> bytes:
    return request_id.encode("ascii") + data


def split_chunk(frame: bytes) -> tuple[str, bytes]:
    if len(frame) < ID_BYTES:
        raise ValueError("short binary frame")
    return frame[:ID_BYTES].decode("ascii"), frame[ID_BYTES:]
