"""A fake OpenAI-compatible model server, run as a real process: the outgoing seam of the agent.

    python -m tests.support.fake_upstream --port P --models m1,m2 [--quirk Q ...]

prints `FAKE READY <port>` once listening (`--port 0` picks a free port). Answers are deterministic: the reply is
"tok0 tok1 …" with as many tokens as `max_tokens` (default 8); prompt_tokens counts whitespace-separated words.

Quirks: models-both, models-only (shape of /v1/models), no-done, no-usage, any-model, require-key=KEY,
stall (accepts every request and never answers, like a wedged GPU server), apis=responses,messages (the newer APIs
it serves; see tests/support/fake_apis.py, which also serves Responses, Messages, rerank and audio).
Per request, a body field `"fake": {...}` steers it: first_byte_delay, chunk_delay (seconds), status (answer with
that HTTP status and an OpenAI error), die_after_chunks (drop the connection after N chunks), hang (never answer),
tokens (stop after that many tokens). A lying server: usage (report this object instead of the true usage),
content_type (answer with that content type), body_bytes (a plain answer of that many bytes, in 64 KiB pieces),
stream_bytes (a stream of chat events carrying that many bytes of text, on any path), silent_after (send the
headers and this many chunks, then nothing, ever).
A body of just `{}` is the agent's probe for an API: answered at once (400, or 404 where the API is not served),
even when stalled, and counted as `probes`, not `requests`.
GET /fake/stats → {requests, in_flight, cancelled, completed, model_listings, probes, last_body, last_headers}
(last_headers: the anthropic-* headers of the last request); with a query such as
`?cancelled=2&in_flight=0` it answers once those counters reach at least (in_flight: exactly) those values,
or after 10 s with whatever they are, so tests need no polling. PUT /fake/models ["a", "b"] changes the list.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import uvicorn

from tests.support import fake_apis
from tests.support.fake_apis import DEFAULT_TOKENS, lie, token, words
from tests.support.processes import Running, run

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CREATED = 1_700_000_000
JSON = (b"content-type", b"application/json")
SSE = (b"content-type", b"text/event-stream; charset=utf-8")
COUNTERS = ("requests", "in_flight", "cancelled", "completed", "model_listings", "probes")
UNFINISHED = "ASGI callable returned without completing response."


@dataclass
class Stats:
    requests: int = 0
    in_flight: int = 0
    cancelled: int = 0
    completed: int = 0
    model_listings: int = 0
    probes: int = 0
    last_body: Any = None
    last_headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Answer:
    status: int
    chunks: Iterator[bytes]
    stream: bool = False
    controls: dict[str, Any] = field(default_factory=dict)


def _error(status: int, message: str, kind: str, code: str | None) -> Answer:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return Answer(status, iter([json.dumps(body).encode()]))


def _json(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


class FakeUpstream:
    def __init__(self, models: Sequence[str], quirks: Sequence[str], on_ready: Callable[[], None]) -> None:
        self.models = list(models)
        self.quirks = {q for q in quirks if "=" not in q}
        self.key = next((q.split("=", 1)[1] for q in quirks if q.startswith("require-key=")), None)
        self.apis = fake_apis.served(quirks)
        self.on_ready = on_ready
        self.stats = Stats()
        self._changed = asyncio.Event()

    def _count(self, counter: str, step: int = 1) -> None:
        setattr(self.stats, counter, getattr(self.stats, counter) + step)
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_for(self, query: dict[str, list[str]]) -> None:
        wanted = {name: int(values[-1]) for name, values in query.items() if name in COUNTERS}

        def reached() -> bool:
            return all(
                getattr(self.stats, name) == value if name == "in_flight" else getattr(self.stats, name) >= value
                for name, value in wanted.items()
            )

        with suppress(TimeoutError):
            async with asyncio.timeout(10):
                while not reached():
                    await self._changed.wait()

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()  # lifespan.startup: the socket is already listening
            self.on_ready()
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await self._serve(scope, body, receive, send)

    async def _serve(self, scope: Message, raw: bytes, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        if path == "/fake/stats":
            await self._wait_for(parse_qs(scope["query_string"].decode()))
            await _play(Answer(200, iter([_json(asdict(self.stats))])), send)
            return
        if path == "/fake/models" and method == "PUT":
            self.models = [str(m) for m in json.loads(raw)]
            await _play(Answer(200, iter([_json(self.models)])), send)
            return
        headers = dict(scope["headers"])
        if self.key and headers.get(b"authorization") != f"Bearer {self.key}".encode():
            await _play(_error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"), send)
            return
        if method == "GET" and path == "/v1/models":
            self._count("model_listings")
            await _play(Answer(200, iter([_json(self._listing())])), send)
            return
        handler = {
            "/v1/chat/completions": self._chat,
            "/v1/completions": self._completion,
            "/v1/embeddings": self._embeddings,
        }.get(path) or self._api(path)
        if handler is None or not fake_apis.serves(self.apis, path):
            await _play(_error(404, f"Unknown path {path}", "invalid_request_error", None), send)
            return
        if method != "POST":
            await _play(_error(405, "Use POST", "invalid_request_error", None), send)
            return
        if fake_apis.is_probe(raw):
            self._count("probes")
            refusal = _error(400, "you must provide a model parameter", "invalid_request_error", None)
            await _play(Answer(400, fake_apis.shaped(path, 400, refusal.chunks)), send)
            return
        self.stats.last_headers = fake_apis.noted_headers(headers)
        self._count("requests")
        self._count("in_flight")
        try:
            answer = self._answer(raw, handler, headers.get(b"content-type", b"").decode())
            answer.chunks = fake_apis.shaped(path, answer.status, answer.chunks)
            outcome = await _play_watching(answer, receive, send)
            if outcome in ("completed", "cancelled"):
                self._count(outcome)
        finally:
            self._count("in_flight", -1)

    def _api(self, path: str) -> Callable[[dict[str, Any], str], Answer] | None:
        """A handler of fake_apis as this class calls its own."""
        reply = fake_apis.HANDLERS.get(path.removeprefix("/v1/"))
        if reply is None:
            return None
        return lambda body, model: Answer(**vars(reply(body, model)))

    def _answer(self, raw: bytes, handler: Callable[[dict[str, Any], str], Answer], content_type: str) -> Answer:
        try:
            body = fake_apis.read_form(raw, content_type) if fake_apis.is_form(content_type) else json.loads(raw)
        except ValueError:
            return _error(400, "The body is not valid JSON.", "invalid_request_error", None)
        self.stats.last_body = body
        if not isinstance(body, dict):
            return _error(400, "The body must be a JSON object.", "invalid_request_error", None)
        fake = body.get("fake")
        controls: dict[str, Any] = {"hang": True} if "stall" in self.quirks else {}
        controls.update(fake if isinstance(fake, dict) else {})
        model = body.get("model")
        if not isinstance(model, str):
            answer = _error(400, "you must provide a model parameter", "invalid_request_error", None)
        elif "status" in controls:
            status = int(controls["status"])
            answer = _error(status, f"fake failure with status {status}", "server_error", None)
        elif model not in self.models and "any-model" not in self.quirks:
            message = f"The model `{model}` does not exist or you do not have access to it."
            answer = _error(404, message, "invalid_request_error", "model_not_found")
        elif "body_bytes" in controls:
            answer = Answer(200, _padding(int(controls["body_bytes"])))
        elif "stream_bytes" in controls:
            answer = Answer(200, _text_events(model, int(controls["stream_bytes"])), stream=True)
        else:
            answer = handler(body, model)
            if "usage" in controls:
                answer = Answer(answer.status, lie(answer.chunks, controls["usage"]), answer.stream, answer.controls)
        answer.controls = answer.controls | controls
        return answer

    def _listing(self) -> dict[str, Any]:
        data = [{"id": m, "object": "model", "created": CREATED, "owned_by": "fake"} for m in self.models]
        models = [{"name": m, "model": m, "modified_at": "2025-01-01T00:00:00Z", "size": 1} for m in self.models]
        if "models-only" in self.quirks:
            return {"models": models}
        if "models-both" in self.quirks:
            return {"object": "list", "data": data, "models": models, "server": "fake"}
        return {"object": "list", "data": data}

    def _shape(self, body: dict[str, Any]) -> tuple[int, str, bool]:
        """(completion tokens, finish_reason, whether usage goes at the end of a stream)."""
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        tokens = int(limit) if isinstance(limit, int) and limit >= 0 else DEFAULT_TOKENS
        fake = body.get("fake")
        if isinstance(fake, dict) and isinstance(fake.get("tokens"), int):
            tokens = min(tokens, fake["tokens"])  # a model that stops early
        options = body.get("stream_options")
        wants_usage = isinstance(options, dict) and options.get("include_usage") is True
        return tokens, "length" if limit is not None else "stop", wants_usage and "no-usage" not in self.quirks

    def _generate(self, body: dict[str, Any], model: str, prompt_tokens: int, chat: bool) -> Answer:
        tokens, finish, stream_usage = self._shape(body)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": tokens, "total_tokens": prompt_tokens + tokens}
        kind = "chat.completion" if chat else "text_completion"
        head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-fake{self.stats.requests:06d}", "created": CREATED}
        head["model"] = model
        if not body.get("stream"):
            text = "".join(token(i) for i in range(tokens))
            choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": finish}
            choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
            return Answer(200, iter([_json({**head, "object": kind, "choices": [choice], "usage": usage})]))
        return Answer(200, self._events(head, kind, tokens, finish, usage if stream_usage else None, chat), True)

    def _events(
        self, head: dict[str, Any], kind: str, tokens: int, finish: str, usage: Any, chat: bool
    ) -> Iterator[bytes]:
        kind = f"{kind}.chunk" if chat else kind
        extra = {"usage": None} if usage else {}
        count = max(tokens, 1)
        for i in range(count):
            text = token(i) if tokens else ""
            choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": finish if i == count - 1 else None}
            if chat:
                choice["delta"] = {"role": "assistant", "content": text} if i == 0 else {"content": text}
            else:
                choice["text"] = text
            yield b"data: " + _json({**head, "object": kind, "choices": [choice], **extra}) + b"\n\n"
        if usage:
            yield b"data: " + _json({**head, "object": kind, "choices": [], "usage": usage}) + b"\n\n"
        if "no-done" not in self.quirks:
            yield b"data: [DONE]\n\n"

    def _chat(self, body: dict[str, Any], model: str) -> Answer:
        if not isinstance(body.get("messages"), list):
            return _error(400, "'messages' is a required property", "invalid_request_error", None)
        return self._generate(body, model, words(body["messages"]), chat=True)

    def _completion(self, body: dict[str, Any], model: str) -> Answer:
        return self._generate(body, model, words(body.get("prompt", "")), chat=False)

    def _embeddings(self, body: dict[str, Any], model: str) -> Answer:
        inputs = body.get("input")
        items = inputs if isinstance(inputs, list) and not all(isinstance(i, int) for i in inputs) else [inputs]
        size = min(int(body.get("dimensions", 8)), 64)
        data = [
            {"object": "embedding", "index": n, "embedding": _vector(json.dumps(item), size)}
            for n, item in enumerate(items)
        ]
        usage = {"prompt_tokens": words(inputs), "total_tokens": words(inputs)}
        return Answer(200, iter([_json({"object": "list", "data": data, "model": model, "usage": usage})]))


def _padding(size: int) -> Iterator[bytes]:
    piece = b'{"pad":"' + b"x" * 65_528
    for sent in range(0, size, len(piece)):
        yield piece[: size - sent]


def _text_events(model: str, size: int) -> Iterator[bytes]:
    """SSE chunks carrying about `size` bytes of text, 16 KiB an event, then [DONE]."""
    text = "y" * 16_384
    head = {"id": "chatcmpl-big", "object": "chat.completion.chunk", "created": CREATED, "model": model}
    for _ in range(0, size, len(text)):
        choice = {"index": 0, "delta": {"content": text}, "finish_reason": None}
        yield b"data: " + _json({**head, "choices": [choice]}) + b"\n\n"
    yield b"data: [DONE]\n\n"


def _vector(text: str, size: int) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest() * 2
    return [round(b / 127.5 - 1, 4) for b in digest[:size]]


async def _play(answer: Answer, send: Send) -> bool:
    """Send the answer; False when told to drop the connection part-way (die_after_chunks)."""
    controls = answer.controls
    if controls.get("hang"):
        await asyncio.Event().wait()
    if delay := float(controls.get("first_byte_delay", 0)):
        await asyncio.sleep(delay)
    if answer.stream:
        headers, chunks = [SSE], answer.chunks
    elif "body_bytes" in controls:
        headers, chunks = [JSON], answer.chunks
    else:
        body = b"".join(answer.chunks)
        headers, chunks = [JSON, (b"content-length", str(len(body)).encode())], iter([body])
    if "content_type" in controls:
        headers = [(b"content-type", str(controls["content_type"]).encode()), *headers[1:]]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    die_after = controls.get("die_after_chunks")
    pause = float(controls.get("chunk_delay", 0))
    silent_after = controls.get("silent_after")
    for sent, data in enumerate(chunks):
        if die_after is not None and sent >= int(die_after):
            return False  # returning unfinished makes uvicorn drop the connection mid-body
        if silent_after is not None and sent >= int(silent_after):
            await asyncio.Event().wait()
        if pause and sent:
            await asyncio.sleep(pause)
        await send({"type": "http.response.body", "body": data, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    return True


async def _play_watching(answer: Answer, receive: Receive, send: Send) -> str:
    """Play the answer unless the client goes away first: "completed", "died" or "cancelled"."""
    playing = asyncio.ensure_future(_play(answer, send))
    # The body is already read, so the next message is `http.disconnect`: the client left, or the answer ended.
    watching = asyncio.ensure_future(receive())
    await asyncio.wait({playing, watching}, return_when=asyncio.FIRST_COMPLETED)
    if playing.done():
        watching.cancel()
        return "completed" if playing.result() else "died"
    playing.cancel()
    return "cancelled"


class _QuietAbort(logging.Filter):
    """An answer dropped on purpose (die_after_chunks) is not worth an error line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != UNFINISHED


@dataclass
class RunningFake:
    """A fake upstream process: its base URL (no /v1) and its output."""

    url: str
    process: Running

    async def stats(self, **until: int) -> dict[str, Any]:
        """The counters, once they reach `until` (e.g. cancelled=1, in_flight=0) or after 10 s."""
        async with httpx.AsyncClient(timeout=15) as client:
            response = await client.get(f"{self.url}/fake/stats", params=until)
            result: dict[str, Any] = response.json()
            return result

    async def serve_models(self, *models: str) -> None:
        async with httpx.AsyncClient() as client:
            (await client.put(f"{self.url}/fake/models", json=list(models))).raise_for_status()


@contextmanager
def fake_upstream(models: Sequence[str], *quirks: str) -> Iterator[RunningFake]:
    """Start `python -m tests.support.fake_upstream` on a free port; stopped on exit."""
    command = [sys.executable, "-m", "tests.support.fake_upstream", "--port", "0", "--models", ",".join(models)]
    command += [f"--quirk={quirk}" for quirk in quirks]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCLUB_")}
    with run(command, env=env, cwd=Path(__file__).resolve().parents[2]) as process:
        port = process.wait_for(r"FAKE READY (\d+)").group(1)
        yield RunningFake(f"http://127.0.0.1:{port}", process)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.fake_upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--models", default="", help="comma-separated model names")
    parser.add_argument("--quirk", action="append", default=[])
    args = parser.parse_args(argv)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)
    port = sock.getsockname()[1]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    app = FakeUpstream(models, args.quirk, on_ready=lambda: print(f"FAKE READY {port}", flush=True))
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=1,
    )
    logging.getLogger("uvicorn.error").addFilter(_QuietAbort())
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
