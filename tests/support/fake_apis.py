"""The fake upstream's newer APIs: OpenAI's Responses, Anthropic's Messages (and count_tokens), rerank, and audio
transcription and translation. `tests.support.fake_upstream` serves them; its docstring has the common rules.

Answers are as deterministic as the chat ones: "tok0 tok1 …" with as many tokens as the request's limit
(`max_output_tokens` for Responses, `max_tokens` for Messages) or 8, cut short by the control `tokens`; input
tokens count whitespace-separated words (Messages: of `system` and `messages`; rerank: of the query and documents).
Controls, in the body's `"fake": {...}` (for an audio upload, a form field `fake` holding that JSON):

- usage: every usage object an answer or a stream reports is replaced by this one (`response.usage`,
  `message.usage`, a `message_delta`'s `usage`, a transcription's `usage`): a lying server on every shape;
- cache_read, cache_creation (Messages): report that many of the prompt's words as read from or written to the
  prompt cache (`input_tokens` is what is left, as Anthropic counts);
- seconds (audio): the length the server claims the audio has, wherever it says it. Without it, the length is
  what a WAV header gives, or else the file's bytes at 128 kbit/s (16,000 bytes a second).

Quirk `apis=responses,messages` serves the three older APIs and only the newer ones named (names as in
`agent.protocol.APIS`); the others are 404, as on a server that lacks them. Errors on /v1/messages* come in
Anthropic's envelope, everywhere else in OpenAI's.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

CREATED = 1_700_000_000
DEFAULT_TOKENS = 8
BYTES_PER_SECOND = 16_000  # an MP3 at 128 kbit/s: how long the fake takes a file that is not a WAV to be
LEGACY = ("chat/completions", "completions", "embeddings")
ANTHROPIC = ("/v1/messages", "/v1/messages/count_tokens")
TEXT = "text/plain; charset=utf-8"
# Anthropic's error type for each status (https://docs.anthropic.com/en/api/errors); any other is "api_error".
ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error"}
ANTHROPIC_TYPES |= {403: "permission_error", 404: "not_found_error", 413: "request_too_large"}
ANTHROPIC_TYPES |= {429: "rate_limit_error", 529: "overloaded_error"}


@dataclass
class Reply:
    """An answer before the fake's controls are applied: the same fields as `fake_upstream.Answer`."""

    status: int
    chunks: Iterator[bytes]
    stream: bool = False
    controls: dict[str, Any] = field(default_factory=dict)


Handler = Callable[[dict[str, Any], str], Reply]


def words(value: Any) -> int:
    """Whitespace-separated words in a prompt, messages, input items, content blocks or documents."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return len(value)  # a prompt given as token ids
        return sum(words(v) for v in value)
    if isinstance(value, dict):
        return words(value.get("content")) + words(value.get("text"))
    return 0


def token(i: int) -> str:
    return f"tok{i}" if i == 0 else f" tok{i}"


def _json(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _id(prefix: str, body: dict[str, Any]) -> str:
    """The same id for the same request, so an answer through the hub compares byte for byte with the fake's own."""
    return prefix + hashlib.sha256(_json(body)).hexdigest()[:16]


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    """One named SSE event, as the Responses and Messages APIs send them."""
    return b"event: " + kind.encode() + b"\ndata: " + _json({"type": kind, **payload}) + b"\n\n"


def _openai_error(status: int, message: str, param: str | None = None) -> Reply:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}}
    return Reply(status, iter([_json(body)]))


def _anthropic_error(status: int, message: str) -> bytes:
    kind = ANTHROPIC_TYPES.get(status, "api_error")
    return _json({"type": "error", "error": {"type": kind, "message": message}})


def _controls(body: dict[str, Any]) -> dict[str, Any]:
    fake = body.get("fake")
    return fake if isinstance(fake, dict) else {}


def _tokens(body: dict[str, Any], limit_name: str) -> int:
    limit = body.get(limit_name)
    tokens = limit if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0 else DEFAULT_TOKENS
    stop = _controls(body).get("tokens")
    return min(tokens, stop) if isinstance(stop, int) else tokens  # a model that stops early


def _text(tokens: int) -> str:
    return "".join(token(i) for i in range(tokens))


def served(quirks: Sequence[str]) -> frozenset[str] | None:
    """The newer APIs an `apis=...` quirk names (None: no such quirk, so all of them)."""
    for quirk in quirks:
        if quirk.startswith("apis="):
            return frozenset(name.strip() for name in quirk.removeprefix("apis=").split(",") if name.strip())
    return None


def serves(apis: frozenset[str] | None, path: str) -> bool:
    api = path.removeprefix("/v1/")
    return api in LEGACY or apis is None or api in apis


def is_probe(raw: bytes) -> bool:
    """The agent's probe at discovery: an empty JSON object, to learn whether a path exists at all."""
    return raw.strip() == b"{}"


def shaped(path: str, status: int, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """An error on Anthropic's paths in Anthropic's envelope (the fake's common errors are written OpenAI's way)."""
    if path not in ANTHROPIC or status < 400:
        return chunks
    data = b"".join(chunks)
    try:
        payload = json.loads(data)
    except ValueError:
        return iter([data])
    if not isinstance(payload, dict) or payload.get("type") == "error" or not isinstance(payload.get("error"), dict):
        return iter([data])
    return iter([_anthropic_error(status, str(payload["error"].get("message")))])


def lie(chunks: Iterator[bytes], usage: Any) -> Iterator[bytes]:
    """The same answer, with `usage` in place of every usage object it reports: in a plain JSON body, or in the
    `data:` line of each SSE event (also nested one level down, as in `response.usage` or `message.usage`)."""
    for chunk in chunks:
        if chunk.lstrip().startswith(b"{"):
            yield _lie_in(chunk, usage) or chunk
            continue
        lines = chunk.split(b"\n")
        for n, line in enumerate(lines):
            if line.startswith(b"data: {"):
                lines[n] = b"data: " + (_lie_in(line[6:], usage) or line[6:])
        yield b"\n".join(lines)


def _lie_in(data: bytes, usage: Any) -> bytes | None:
    try:
        payload = json.loads(data)
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    for holder in [payload, *(v for v in payload.values() if isinstance(v, dict))]:
        if holder.get("usage"):
            holder["usage"] = usage
    return _json(payload)


def noted_headers(headers: dict[bytes, bytes]) -> dict[str, str]:
    """The request headers worth showing a test: Anthropic's, which the hub forwards to the GPU."""
    return {k.decode(): v.decode() for k, v in headers.items() if k.startswith(b"anthropic-")}


def responses(body: dict[str, Any], model: str) -> Reply:
    tokens = _tokens(body, "max_output_tokens")
    text = _text(tokens)
    prompt = words(body.get("instructions")) + words(body.get("input"))
    usage = {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + tokens,
    }
    item_id = _id("msg_", body)
    part = {"type": "output_text", "text": text, "annotations": []}
    item = {"id": item_id, "type": "message", "status": "completed", "role": "assistant", "content": [part]}
    response = {
        "id": _id("resp_", body),
        "object": "response",
        "created_at": CREATED,
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": model,
        "output": [item],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage,
    }
    if body.get("stream") is not True:
        return Reply(200, iter([_json(response)]))
    return Reply(200, _response_events(response, item, tokens), stream=True)


def _response_events(response: dict[str, Any], item: dict[str, Any], tokens: int) -> Iterator[bytes]:
    sequence = iter(range(1_000_000_000))
    at = {"item_id": item["id"], "output_index": 0, "content_index": 0}
    part = item["content"][0]

    def event(kind: str, **payload: Any) -> bytes:
        return _event(kind, {"sequence_number": next(sequence), **payload})

    started = {**response, "status": "in_progress", "output": [], "usage": None}
    yield event("response.created", response=started)
    yield event("response.in_progress", response=started)
    yield event("response.output_item.added", output_index=0, item={**item, "status": "in_progress", "content": []})
    yield event("response.content_part.added", **at, part={**part, "text": ""})
    for i in range(tokens):
        yield event("response.output_text.delta", **at, delta=token(i), logprobs=[])
    yield event("response.output_text.done", **at, text=part["text"], logprobs=[])
    yield event("response.content_part.done", **at, part=part)
    yield event("response.output_item.done", output_index=0, item=item)
    yield event("response.completed", response=response)


def _prompt_usage(body: dict[str, Any]) -> dict[str, int]:
    """input_tokens, and the cache's share when the controls ask for one (Anthropic bills the three apart)."""
    prompt = words(body.get("system")) + words(body.get("messages"))
    controls = _controls(body)
    cached = {
        f"{short}_input_tokens": int(controls[short])
        for short in ("cache_creation", "cache_read")
        if isinstance(controls.get(short), int)
    }
    return {"input_tokens": max(prompt - sum(cached.values()), 0), **cached}


def messages(body: dict[str, Any], model: str) -> Reply:
    if not isinstance(body.get("messages"), list):
        return Reply(400, iter([_anthropic_error(400, "messages: Field required")]))
    if not isinstance(body.get("max_tokens"), int):
        return Reply(400, iter([_anthropic_error(400, "max_tokens: Field required")]))
    tokens = _tokens(body, "max_tokens")
    text = _text(tokens)
    prompt = _prompt_usage(body)
    head = {"id": _id("msg_", body), "type": "message", "role": "assistant", "model": model}
    if body.get("stream") is not True:
        answer = {
            **head,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {**prompt, "output_tokens": tokens},
        }
        return Reply(200, iter([_json(answer)]))
    return Reply(200, _message_events(head, prompt, tokens), stream=True)


def _message_events(head: dict[str, Any], prompt: dict[str, int], tokens: int) -> Iterator[bytes]:
    started = {**head, "content": [], "stop_reason": None, "stop_sequence": None}
    yield _event("message_start", {"message": {**started, "usage": {**prompt, "output_tokens": 1}}})
    yield _event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
    yield _event("ping", {})
    for i in range(tokens):
        yield _event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": token(i)}})
    yield _event("content_block_stop", {"index": 0})
    done = {"stop_reason": "end_turn", "stop_sequence": None}
    yield _event("message_delta", {"delta": done, "usage": {"output_tokens": tokens}})
    yield _event("message_stop", {})


def count_tokens(body: dict[str, Any], model: str) -> Reply:
    if not isinstance(body.get("messages"), list):
        return Reply(400, iter([_anthropic_error(400, "messages: Field required")]))
    return Reply(200, iter([_json({"input_tokens": sum(_prompt_usage(body).values())})]))


def rerank(body: dict[str, Any], model: str) -> Reply:
    query, documents = body.get("query"), body.get("documents")
    if not isinstance(query, str) or not isinstance(documents, list):
        return _openai_error(400, "'query' and 'documents' are required", "query")
    wanted = set(query.lower().split())

    def score(document: Any) -> float:
        text = document.get("text") if isinstance(document, dict) else document
        found = set(str(text).lower().split())
        # The share of the query's words the document has, with a tie-breaker that is the same every run.
        tie = hashlib.sha256(str(text).encode()).digest()[0] / 25_600
        return round(len(wanted & found) / max(len(wanted), 1) + tie, 6)

    results: list[dict[str, Any]] = [{"index": n, "relevance_score": score(d)} for n, d in enumerate(documents)]
    if body.get("return_documents"):
        for result in results:
            document = documents[result["index"]]
            result["document"] = document if isinstance(document, dict) else {"text": document}
    results.sort(key=lambda result: -result["relevance_score"])
    top_n = body.get("top_n")
    if isinstance(top_n, int) and top_n >= 0:
        results = results[:top_n]
    prompt = words(query) + words(documents)
    answer = {
        "id": _id("rerank-", body),
        "model": model,
        "object": "list",
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
        "results": results,
    }
    return Reply(200, iter([_json(answer)]))


def is_form(content_type: str) -> bool:
    return content_type.lower().startswith("multipart/form-data")


def read_form(raw: bytes, content_type: str) -> dict[str, Any]:
    """A multipart form as the fake keeps it: text fields as they are (`fake` parsed as JSON), and the file as a
    summary a test can compare (name, type, size, SHA-256) plus the length the fake takes the audio to be."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=policy.HTTP).parsebytes(head + raw)
    form: dict[str, Any] = {}
    parts = message.iter_parts() if isinstance(message, EmailMessage) and message.is_multipart() else []
    for part in parts:
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True)
        if not isinstance(name, str) or not isinstance(data, bytes):
            continue
        if part.get_filename() is not None:
            form[name] = {
                "filename": part.get_filename(),
                "content_type": part.get_content_type(),
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "seconds": wav_seconds(data) or len(data) / BYTES_PER_SECOND,
            }
        else:
            form[name] = data.decode(errors="replace")
    if isinstance(form.get("fake"), str):
        try:
            form["fake"] = json.loads(form["fake"])
        except ValueError:
            del form["fake"]
    return form


def wav_seconds(data: bytes) -> float | None:
    """The length a RIFF/WAVE header gives (data bytes over bytes a second), or None for anything else."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    at, rate = 12, 0
    while at + 8 <= len(data):
        kind, size = data[at : at + 4], int.from_bytes(data[at + 4 : at + 8], "little")
        if kind == b"fmt " and size >= 16:
            rate = int.from_bytes(data[at + 16 : at + 20], "little")
        elif kind == b"data" and rate:
            return min(size, len(data) - at - 8) / rate
        at += 8 + size + size % 2
    return None


def _audio(task: str) -> Handler:
    def handle(body: dict[str, Any], model: str) -> Reply:
        upload = body.get("file")
        if not isinstance(upload, dict):
            return _openai_error(400, "'file' is required: send the audio as a multipart form", "file")
        claimed = _controls(body).get("seconds")
        seconds = float(claimed) if isinstance(claimed, int | float) else float(upload["seconds"])
        text = _text(_tokens(body, "max_tokens"))
        kind = body.get("response_format", "json")
        if kind == "text":
            return Reply(200, iter([text.encode()]), controls={"content_type": TEXT})
        # Whole seconds in `usage`, as whisper servers (and OpenAI's whisper-1) report them.
        answer: dict[str, Any] = {"text": text, "usage": {"type": "duration", "seconds": math.ceil(seconds)}}
        if kind == "verbose_json":
            segment = {"id": 0, "seek": 0, "start": 0.0, "end": seconds, "text": text}
            answer = {"task": task, "language": "english", "duration": seconds, **answer, "segments": [segment]}
        elif kind != "json":
            return _openai_error(400, f"response_format {kind!r} is not supported here", "response_format")
        return Reply(200, iter([_json(answer)]))

    return handle


HANDLERS: dict[str, Handler] = {
    "responses": responses,
    "messages": messages,
    "messages/count_tokens": count_tokens,
    "rerank": rerank,
    "audio/transcriptions": _audio("transcribe"),
    "audio/translations": _audio("translate"),
}
