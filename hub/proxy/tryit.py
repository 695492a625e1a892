"""The Models page's "try it" box: one chat completion for a signed-in member, through the proxy's own path.

The request is built as if the member had sent it with an API key that reaches any GPU, then admitted, routed,
relayed and settled by `Proxy.handle` like every `/v1` request: the same quotas, the same hold, the same charge
and usage row (with no key: `key_id` is NULL there). Only the answer's text comes back, piece by piece; prompts and
answers are not kept.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Coroutine, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from hub.errors import BadRequest
from hub.keys.cache import Caller
from hub.keys.trust import ANY
from hub.parsing import clean_text, parse_count
from hub.proxy.apis import BY_NAME
from hub.proxy.flight import Call
from hub.proxy.relay import Proxy, Reply

MAX_PROMPT_CHARS = 4000
MAX_TOKENS = 1024
DEFAULT_MAX_TOKENS = 256
MAX_ANSWER_CHARS = 64 * 1024  # what the page shows of an answer (max_tokens bounds it long before)


@dataclass(frozen=True)
class Question:
    model: str
    prompt: str
    max_tokens: int = DEFAULT_MAX_TOKENS


@dataclass(frozen=True)
class Piece:
    """Some text of the answer, or the reason it stopped early."""

    text: str = ""
    error: str = ""


def question(form: Mapping[str, Any]) -> Question:
    """The form's fields, checked: a model, a prompt of at most MAX_PROMPT_CHARS, 1 to MAX_TOKENS tokens."""
    model = clean_text(str(form.get("model") or ""), what="model", max_length=200, required=True)
    prompt = str(form.get("prompt") or "").replace("\r\n", "\n").strip()
    if not prompt:
        raise BadRequest("Type a prompt to send.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise BadRequest(
            f"The prompt is {len(prompt)} characters long; the try-it box takes at most {MAX_PROMPT_CHARS}."
        )
    raw_tokens = str(form.get("max_tokens") or DEFAULT_MAX_TOKENS)
    max_tokens = parse_count(raw_tokens, what="answer length (max tokens)", low=1, high=MAX_TOKENS)
    return Question(model, prompt, max_tokens)


async def ask(
    proxy: Proxy, user_id: int, asked: Question, gone: Coroutine[Any, Any, None]
) -> AsyncGenerator[Piece, None]:
    """Send `asked` for this member; raises the proxy's HubError (402, 429, 503…) before any text, then yields the
    answer as it streams in. Closing the iterator early cancels the request at the GPU, as a client hanging up does."""
    api = BY_NAME["chat/completions"]
    body = {
        "model": asked.model,
        "messages": [{"role": "user", "content": asked.prompt}],
        "max_tokens": asked.max_tokens,
        "stream": True,
    }
    parsed = api.parse(json.dumps(body).encode(), "application/json")
    caller = Caller(user_id=user_id, key_id=0, expires_at=None, scope=ANY)  # 0: no key (NULL on the usage row)
    reply = await proxy.handle(Call.build(caller, api, parsed), gone)
    return _pieces(reply)


async def _pieces(reply: Reply) -> AsyncGenerator[Piece, None]:
    if reply.stream is None:  # the GPU's server answered with a whole body: an error, or it does not stream
        answer = _json(reply.body)
        if reply.status >= 400:
            yield Piece(error=_message(answer) or f"The GPU's server refused the request (HTTP {reply.status}).")
        elif text := _text(answer, "message"):
            yield Piece(text=text)
        return
    buffer = b""
    stream = reply.stream
    try:
        async for chunk in stream:
            buffer += chunk
            *events, buffer = buffer.replace(b"\r\n", b"\n").split(b"\n\n")
            for event in events:
                for line in event.split(b"\n"):
                    if not line.startswith(b"data:") or (data := line[5:].strip()) == b"[DONE]":
                        continue
                    payload = _json(data)
                    if message := _message(payload):
                        yield Piece(error=message)
                    elif text := _text(payload, "delta"):
                        yield Piece(text=text)
    finally:
        close = getattr(stream, "aclose", None)  # the relay's generator: closing it settles the request
        if close is not None:
            await close()


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _message(payload: Any) -> str:
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or "The GPU's server reported an error.")[:500]
    return ""


def _text(payload: Any, field: str) -> str:
    choices = payload.get("choices") if isinstance(payload, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return ""
    part = choices[0].get(field)
    content = part.get("content") if isinstance(part, dict) else None
    return content if isinstance(content, str) else ""


async def whole(pieces: AsyncGenerator[Piece, None]) -> tuple[str, str]:
    """(the answer's text, the error that ended it early or ""), for the page without JavaScript."""
    text: list[str] = []
    size = 0
    async with aclosing(pieces) as reading:
        async for piece in reading:
            if piece.error:
                return "".join(text), piece.error
            size += len(piece.text)
            if size > MAX_ANSWER_CHARS:
                return "".join(text), "The answer was cut short: it is longer than this box shows."
            text.append(piece.text)
    return "".join(text), ""


__all__ = ["MAX_PROMPT_CHARS", "MAX_TOKENS", "Piece", "Question", "ask", "question", "whole"]
