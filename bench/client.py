"""A minimal keep-alive HTTP/1.1 client (asyncio protocol + httptools), fast enough not to be the bottleneck.

httpx spends more CPU per request than the hub does, so with it the load generator would measure itself. This
client does one request at a time per connection, parses with the same C parser uvicorn uses, and for streams
(chat completions or the Responses API) time-stamps every server-sent event that carries a token as it arrives.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import httptools

# A streamed token: a chat chunk with a non-empty `content` string, or a Responses `response.output_text.delta`
# event (the hub passes the upstream's bytes, LiteLLM re-encodes them, so spaces may differ).
_TOKEN = re.compile(rb'"content":\s*"[^"]|"type":\s*"response\.output_text\.delta"')
# The end of a whole stream: chat's `[DONE]`, the Responses API's `response.completed`.
_DONE = re.compile(rb'\[DONE\]|"type":\s*"response\.completed"')
# An error event: chat's `{"error": {...}}`, the Responses API's `error` and `response.failed` events (a
# Responses object carries `"error": null` when all is well).
_ERROR = re.compile(rb'"error":\s*[{"]|"type":\s*"(?:error|response\.failed)"')


@dataclass
class Answer:
    status: int = 0
    body: bytearray = field(default_factory=bytearray)
    tokens: list[float] = field(default_factory=list)  # perf_counter() when each token event arrived
    error_event: bool = False
    done: bool = False  # `data: [DONE]` or `response.completed` seen
    last_event: bytes = b""  # the last server-sent event, as an example when a stream goes wrong


def request_bytes(host: str, port: int, path: str, body: bytes, key: str | None) -> bytes:
    auth = f"authorization: Bearer {key}\r\n" if key else ""
    head = (
        f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\n{auth}content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Connection(asyncio.Protocol):
    """One TCP connection to a server; `send` one request at a time."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.answer = Answer()
        self.pending = b""
        self.stream = False
        self.on_token: Callable[[], None] | None = None
        self.finished: asyncio.Future[Answer] | None = None
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        _, protocol = await asyncio.get_running_loop().create_connection(cls, host, port)
        return protocol

    async def send(self, request: bytes, *, stream: bool = False, on_token: Callable[[], None] | None = None) -> Answer:
        """Send a request and wait for the whole answer; raises ConnectionError if the server hangs up."""
        if self.closed or self.transport is None:
            raise ConnectionError("the connection is closed")
        self.answer, self.pending, self.stream, self.on_token = Answer(), b"", stream, on_token
        self.finished = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.finished

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"bad HTTP from the server: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError("the server closed the connection"))

    # httptools callbacks

    def on_status(self, status: bytes) -> None:
        self.answer.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if not self.stream or self.answer.status != 200:  # an error comes as one JSON body, stream or not
            self.answer.body += body
            return
        now = time.perf_counter()
        self.pending += body
        while (end := self.pending.find(b"\n\n")) >= 0:
            event, self.pending = self.pending[:end], self.pending[end + 2 :]
            self._event(event, now)

    def on_message_complete(self) -> None:
        if self.pending.strip():
            self._event(self.pending, time.perf_counter())
        if not self.parser.should_keep_alive():
            self.close()
        if self.finished is not None and not self.finished.done():
            self.finished.set_result(self.answer)

    def _event(self, event: bytes, now: float) -> None:
        self.answer.last_event = event
        if _TOKEN.search(event):
            self.answer.tokens.append(now)
            if self.on_token is not None and len(self.answer.tokens) == 1:
                self.on_token()
        elif _DONE.search(event):
            self.answer.done = True
        elif _ERROR.search(event):
            self.answer.error_event = True

    def _fail(self, exc: Exception) -> None:
        if self.finished is not None and not self.finished.done():
            self.finished.set_exception(exc)
