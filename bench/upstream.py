"""A fast fake OpenAI-compatible server for the benchmark: raw asyncio + httptools, one process.

    python -m bench.upstream --port P [--chunks 10 --chunk-gap 0.005 --slow-chunks 10 --slow-gap 1]

prints `UPSTREAM READY <port>`. It serves `/v1/chat/completions` and `/v1/responses` for two models. `bench`
answers at once (a plain answer is the same pre-built bytes every time; a stream sends `--chunks` token events
`--chunk-gap` seconds apart). `bench-slow` streams the first token at once, then one every `--slow-gap` seconds
(`--slow-chunks` in all): it keeps streams open for the memory test. A Responses stream is the events of one text
message (`response.created`, then one `response.output_text.delta` per token, up to `response.completed` with
the usage), built once at start-up, so it costs no more per request than a chat stream. It is deliberately not
`tests/support/fake_upstream.py` (uvicorn + ASGI): every microsecond it spends is taken from the two cores the hub
and LiteLLM are measured on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
from collections.abc import Iterable, Iterator, Sequence
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
    usage = _chat_usage(ANSWER_TOKENS)
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    body = {"id": "chatcmpl-bench", "object": "chat.completion", "created": CREATED, "model": model}
    return _response("200 OK", _json({**body, "choices": [choice], "usage": usage}))


def _chat_usage(completion_tokens: int) -> dict[str, int]:
    total = PROMPT_TOKENS + completion_tokens
    return {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": completion_tokens, "total_tokens": total}


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


def _responses_object(model: str, status: str, text: str | None, usage: dict[str, int] | None) -> dict[str, Any]:
    output = [] if text is None else [_message(text, "completed")]
    head = {"id": "resp_bench", "object": "response", "created_at": CREATED, "status": status, "model": model}
    return {**head, "error": None, "incomplete_details": None, "output": output, "usage": usage}


def _message(text: str | None, status: str) -> dict[str, Any]:
    content = [] if text is None else [_text_part(text)]
    return {"id": "msg_bench", "type": "message", "status": status, "role": "assistant", "content": content}


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": []}


def _responses_usage(output_tokens: int) -> dict[str, int]:
    total = PROMPT_TOKENS + output_tokens
    return {"input_tokens": PROMPT_TOKENS, "output_tokens": output_tokens, "total_tokens": total}


def _responses_answer(model: str) -> bytes:
    text = " ".join(f"tok{i}" for i in range(ANSWER_TOKENS))
    return _response("200 OK", _json(_responses_object(model, "completed", text, _responses_usage(ANSWER_TOKENS))))


def _responses_stream(model: str, count: int) -> list[bytes]:
    """A whole Responses stream in the pieces written a gap apart: the opening events with the first token, then
    one token each, the last one with the closing events and the end of the chunked body."""
    tokens = [f"tok{i}" if i == 0 else f" tok{i}" for i in range(count)]
    text = "".join(tokens)
    part = {"item_id": "msg_bench", "output_index": 0, "content_index": 0}
    done = _responses_object(model, "completed", text, _responses_usage(count))
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": _responses_object(model, "in_progress", None, None)}),
        ("response.output_item.added", {"output_index": 0, "item": _message(None, "in_progress")}),
        ("response.content_part.added", {**part, "part": _text_part("")}),
        *(("response.output_text.delta", {**part, "delta": token, "logprobs": []}) for token in tokens),
        ("response.output_text.done", {**part, "text": text, "logprobs": []}),
        ("response.content_part.done", {**part, "part": _text_part(text)}),
        ("response.output_item.done", {"output_index": 0, "item": _message(text, "completed")}),
        ("response.completed", {"response": done}),
    ]
    encoded = [
        _chunk(f"event: {kind}\ndata: ".encode() + _json({"type": kind, "sequence_number": n, **data}) + b"\n\n")
        for n, (kind, data) in enumerate(events)
    ]
    pieces = [b"".join(encoded[:4]), *encoded[4 : 3 + count]]
    pieces[-1] += b"".join(encoded[3 + count :]) + END
    return pieces


LISTING = _response("200 OK", _json({"object": "list", "data": [{"id": m, "object": "model"} for m in MODELS]}))
NOT_FOUND = _response("404 Not Found", _json({"error": {"message": "not found", "type": "invalid_request_error"}}))
BAD = _response("400 Bad Request", _json({"error": {"message": "bad request", "type": "invalid_request_error"}}))
STREAM_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
END = b"0\r\n\r\n"  # the last piece of a chunked body
DONE = _chunk(b"data: [DONE]\n\n") + END
CHAT, RESPONSES = b"/v1/chat/completions", b"/v1/responses"
GENERATE = (CHAT, RESPONSES)


@dataclass(frozen=True)
class Canned:
    """What is the same in every answer: the plain answers by path and model, the Responses streams by model."""

    answers: dict[tuple[bytes, str], bytes]
    responses_streams: dict[str, list[bytes]]


class Handler(asyncio.Protocol):
    """One client connection; requests are answered in order (no pipelining needed by any client here)."""

    def __init__(self, shape: Shape, canned: Canned) -> None:
        self.shape = shape
        self.canned = canned
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
        elif method == b"POST" and url in GENERATE:
            self._generate(url, raw)
        else:
            self.transport.write(NOT_FOUND)
        if not self.parser.should_keep_alive() and self.streaming is None:
            self.transport.close()

    def _generate(self, url: bytes, raw: bytes) -> None:
        assert self.transport is not None
        try:
            body = json.loads(raw)
            model = body["model"]
        except (ValueError, KeyError, TypeError):
            self.transport.write(BAD)  # also the agent's probe, `{}`: the path is served
            return
        if model not in MODELS:
            self.transport.write(NOT_FOUND)
        elif body.get("stream") is not True:
            self.transport.write(self.canned.answers[url, model])
        else:
            pieces: Iterable[bytes]
            if url == RESPONSES:  # the usage is always on `response.completed`
                pieces = self.canned.responses_streams[model]
            else:
                options = body.get("stream_options")
                pieces = self._chat_stream(model, isinstance(options, dict) and options.get("include_usage") is True)
            self.streaming = asyncio.ensure_future(self._stream(model, pieces, self.parser.should_keep_alive()))

    def _pace(self, model: str) -> tuple[int, float]:
        """How many tokens a stream of this model has, and the seconds between them."""
        if model == "bench-slow":
            return self.shape.slow_chunks, self.shape.slow_gap
        return self.shape.chunks, self.shape.chunk_gap

    def _chat_stream(self, model: str, usage: bool) -> Iterator[bytes]:
        """Built as it is sent, like a server would; the usage event and `[DONE]` go with the last token."""
        count = self._pace(model)[0]
        for i in range(count - 1):
            yield _event(model, i, f"tok{i}" if i == 0 else f" tok{i}")
        last = _event(model, count - 1, f" tok{count - 1}" if count > 1 else "tok0", last=True)
        if usage:
            last += _event(model, count, None, _chat_usage(count))
        yield last + DONE

    async def _stream(self, model: str, pieces: Iterable[bytes], keep_alive: bool) -> None:
        assert self.transport is not None
        gap = self._pace(model)[1]
        self.transport.write(STREAM_HEAD)
        for i, piece in enumerate(pieces):
            if i and gap:
                await asyncio.sleep(gap)
            self.transport.write(piece)
        self.streaming = None
        if not keep_alive:
            self.transport.close()


def canned(shape: Shape) -> Canned:
    answers = {(CHAT, model): _answer(model) for model in MODELS}
    answers |= {(RESPONSES, model): _responses_answer(model) for model in MODELS}
    streams = {"bench": shape.chunks, "bench-slow": shape.slow_chunks}
    return Canned(answers, {model: _responses_stream(model, count) for model, count in streams.items()})


async def serve(port: int, shape: Shape) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    answers = canned(shape)
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
