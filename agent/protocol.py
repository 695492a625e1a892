"""The tunnel protocol between an agent and the hub, over one WebSocket the agent opens.

This module is the single definition of the wire format; the hub imports it too (the agent never imports
the hub). Control messages are JSON text frames with a "type"; response bodies travel as binary frames:
32 ASCII bytes of request id followed by the raw bytes of one chunk, exactly as the upstream sent them.

    agent → hub   hello      {version, name, capacity, models: [str], gpus: [{name, memory_mb}],
                              window: true, apis: {model: [api]}}  window: the agent keeps to the flow control;
                                                                apis: which APIs (see APIS) serve each model
    hub → agent   welcome    {agent_id, name, heartbeat,        heartbeat: seconds between pings; window: see
                              window, notice}                   below; notice: what the hub refused, or null
    agent → hub   models     {models: [str], apis: {model: [api]}}  re-advertised whenever either changes
    hub → agent   notice     {message}                          the hub refused part of what the agent said
    hub → agent   request    {id, path, body,                   body: the request text, unchanged; with
                              content_type?, encoding?,         encoding "base64", the base64 of the raw body
                              headers?, model?}                 (a multipart form, sent with `content_type`);
                                                                headers: only names in FORWARDED_REQUEST_HEADERS;
                                                                model: the model the hub routed to (else the
                                                                agent reads the JSON body's `model`)
    agent → hub   start      {id, status, headers: {str: str}}  the upstream answered (status line + headers)
    agent → hub   <binary>   id + chunk                         body bytes, in order, as they arrive
    hub → agent   ack        {id, bytes}                        the client took `bytes` more of this body
    agent → hub   end        {id, error: str | null}            finished (error: the upstream failed mid-way)
    hub → agent   cancel     {id}                               the client went away: stop the upstream request
    hub → agent   ping       {t}                                the agent answers pong {t} at once
    agent → hub   pong       {t}
    agent → hub   draining   {}                                 shutting down: finish what is in flight,
                                                                take nothing new
    hub → agent   error      {message}                          before closing, e.g. a revoked token
    hub → agent   bill       {id, bill}                         what a finished request cost and used, signed
                                                                by the hub (opaque to the agent), sent before
                                                                the end of the answer goes to the client
    hub → agent   written    {ids: [id]}                        these bills are written: forget them
    agent → hub   bills      {bills: [{id, bill}]}              after welcome: the bills not yet confirmed, at
                                                                most MAX_BILLS a frame (hub: written, as above)

Flow control: per request, the agent keeps at most `window` bytes of body sent and not yet acknowledged, in
chunks of at most MAX_CHUNK bytes. The hub enforces it: a request whose unread bytes pass `window + MAX_CHUNK` fails.
A request frame is at most MAX_REQUEST_FRAME bytes (the base64 of a 16 MiB upload, and the JSON around it); the
hub refuses (413) a request whose frame would be larger, or larger than MAX_FRAME for an agent without `apis`.
The hub accepts at most MAX_MODELS model names of at most MAX_MODEL_NAME characters per agent; the rest is refused
with a notice. A malformed frame fails its request, or closes the tunnel when it belongs to none.

Bills: the agent keeps each `bill` in a local journal until a `written` names its id, and sends the unconfirmed
ones again after every welcome, so a crash of the hub loses no charge (the hub writes each id at most once).

APIs: each name is a path under /v1/. A model without an `apis` entry (an older agent) serves LEGACY_APIS.

The WebSocket URL is the hub URL + PATH; the agent token goes in the Authorization header as a Bearer token.
Close codes: 4401 (bad or revoked token: do not retry until the owner fixes it), 4409 (the same agent token is
already connected elsewhere: the older connection is closed with this code), 4426 (the agent is too old for this
hub: it does not keep to the flow control; upgrade it), 4503 (the hub is restarting: reconnect with backoff), 1008
(the agent broke the protocol), 1013 (try again later: the hub cannot check the token now, e.g. its database
is unreachable; reconnect with backoff).
"""

from __future__ import annotations

import json
from typing import Any

PATH = "/agent/connect"
ID_BYTES = 32
CLOSE_UNAUTHORIZED = 4401
CLOSE_REPLACED = 4409
CLOSE_UPGRADE = 4426
CLOSE_RESTARTING = 4503
CLOSE_TRY_AGAIN = 1013  # the hub cannot take the agent now (its database is away): reconnect with backoff
MAX_FRAME = 16 * 1024 * 1024
MAX_REQUEST_FRAME = 24 * 1024 * 1024
MAX_CHUNK = 64 * 1024
MAX_BILLS = 100
MAX_BILL = 16 * 1024  # characters of one bill; the hub's largest (long non-ASCII names and errors) are under 6 KB
MAX_BILLS_PER_CONNECTION = 100_000  # what an agent may send back on one connection (its journal keeps as many)
WINDOW = 256 * 1024
MAX_MODELS = 1000
MAX_MODEL_NAME = 200
APIS = (
    "chat/completions",
    "completions",
    "embeddings",
    "responses",
    "messages",
    "messages/count_tokens",
    "rerank",
    "audio/transcriptions",
    "audio/translations",
)
LEGACY_APIS = ("chat/completions", "completions", "embeddings")
FORWARDED_REQUEST_HEADERS = ("anthropic-version", "anthropic-beta")


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
    """The request id and the data of a binary frame; raises ValueError for a frame without a valid id."""
    if len(frame) < ID_BYTES:
        raise ValueError("short binary frame")
    request_id = frame[:ID_BYTES].decode("ascii")  # UnicodeDecodeError is a ValueError
    if not valid_id(request_id):
        raise ValueError("malformed request id")
    return request_id, frame[ID_BYTES:]


def valid_id(value: object) -> bool:
    return isinstance(value, str) and len(value) == ID_BYTES and value.isascii() and value.isalnum()
