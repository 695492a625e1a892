"""A fast fake OpenAI-compatible server for the benchmark: raw asyncio + httptools, one process.

    python -m bench.upstream --port P [--chunks 10 --chunk-gap 0.005 --slow-chunks 10 --slow-gap 1]

prints `UPSTREAM READY <port>`. It serves two models. `bench` answers at once (a plain answer is the same
pre-built bytes every time; a stream sends `--chunks` token events `--chunk-gap` seconds apart). `bench-slow`
streams the first token at once, then one every `--slow-gap` seconds (`--slow-chunks` in all): it keeps streams
open for the memory test. It is deliberately not `tests/support/fake_upstream.py` (uvicorn + ASGI): every
microsecond it spends is taken from the two cores the hub and LiteLLM are measured on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import httptools
import uvloop

MODELS = ("bench", "bench-slow")
CREATED = 1_700_000_000
PROMPT_TOKENS = 5
ANSWER_TOKENS = 8


@dataclass(frozen=True)
class Shape:
    chunks: int
    chunk_gap: float
    slow_chunks: int
    slow_gap: float


def _json(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _response(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    head = f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n\r\n"
    return head.encode() + body


def _answer(model: str) -> bytes:
    text = " ".join(f"tok{i}" for i in range(ANSWER_TOKENS))
    usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": ANSWER_TOKENS, "total_tokens": 13}
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    body = {"id": "chatcmpl-bench", "object": "chat.completion", "created": CREATED, "model": model}
    return _response("200 OK", _json({**body, "choices": [choice], "usage": usage}))


def _event(
    model: str, index: int, content: str | None, usage: dict[str, int] | None = None, last: bool = False
) -> bytes:
    head = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": CREATED, "model": model}
    if usage is not None:
        payload = {**head, "choices": [], "usage": usage}
    else:
        delta = {"role": "assistant", "content": content} if index == 0 else {"content": content}
        payload = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": "stop" if last else None}]}
    return _chunk(b"data: " + _json(payload) + b"\n\n")


def _chunk(data: bytes) -> bytes:
    """One piece of a chunked (transfer-encoding) body."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


LISTING = _response("200 OK", _json({"object": "list", "data": [{"id": m, "object": "model"} for m in MODELS]}))
NOT_FOUND = _response("404 Not Found", _json({"error": {"message": "not found", "type": "invalid_request_error"}}))
BAD = _response("400 Bad Request", _json({"error": {"message": "bad request", "type": "invalid_request_error"}}))
STREAM_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
DONE = _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"


class Handler(asyncio.Protocol):
    """One client connection; requests are answered in order (no pipelining needed by any client here)."""

    def __init__(self, shape: Shape, answers: dict[str, bytes]) -> None:
        self.shape = shape
        self.answers = answers
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.streaming: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def connection_lost(self, exc: Exception | None) -> None:
        if self.streaming is not None:
            self.streaming.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        url, raw, self.url, self.body = self.url, b"".join(self.body), b"", []
        method = self.parser.get_method()
        if method == b"GET" and url in (b"/v1/models", b"/health"):
            self.transport.write(LISTING)
        elif method == b"POST" and url == b"/v1/chat/completions":
            self._chat(raw)
        else:
            self.transport.write(NOT_FOUND)
        if not self.parser.should_keep_alive() and self.streaming is None:
            self.transport.close()

    def _chat(self, raw: bytes) -> None:
        assert self.transport is not None
        try:
            body = json.loads(raw)
            model = body["model"]
        except (ValueError, KeyError, TypeError):
            self.transport.write(BAD)
            return
        if model not in self.answers:
            self.transport.write(NOT_FOUND)
        elif body.get("stream") is True:
            options = body.get("stream_options")
            usage = isinstance(options, dict) and options.get("include_usage") is True
            self.streaming = asyncio.ensure_future(self._stream(model, usage, self.parser.should_keep_alive()))
        else:
            self.transport.write(self.answers[model])

    async def _stream(self, model: str, usage: bool, keep_alive: bool) -> None:
        assert self.transport is not None
        slow = model == "bench-slow"
        count, gap = (
            (self.shape.slow_chunks, self.shape.slow_gap) if slow else (self.shape.chunks, self.shape.chunk_gap)
        )
        self.transport.write(STREAM_HEAD)
        for i in range(count):
            if i and gap:
                await asyncio.sleep(gap)
            self.transport.write(_event(model, i, f"tok{i}" if i == 0 else f" tok{i}", last=i == count - 1))
        if usage:
            counts = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": count, "total_tokens": PROMPT_TOKENS + count}
            self.transport.write(_event(model, count, None, counts))
        self.transport.write(DONE)
        self.streaming = None
        if not keep_alive:
            self.transport.close()


async def serve(port: int, shape: Shape) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    answers = {model: _answer(model) for model in MODELS}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Handler(shape, answers), sock=sock, backlog=4096)
    print(f"UPSTREAM READY {sock.getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--chunks", type=int, default=10)
    parser.add_argument("--chunk-gap", type=float, default=0.005)
    parser.add_argument("--slow-chunks", type=int, default=10)
    parser.add_argument("--slow-gap", type=float, default=1.0)
    args = parser.parse_args(argv)
    shape = Shape(args.chunks, args.chunk_gap, args.slow_chunks, args.slow_gap)
    uvloop.run(serve(args.port, shape))


if __name__ == "__main__":
    main()
