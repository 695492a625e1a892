"""What every API shape tells the proxy, and the defaults most of them share.

An API is one path under /v1 with its own shape: where the model is named, how big a hold it needs, where the
usage sits in an answer and in a stream, and how an error looks to its clients. The proxy's lifecycle (admit →
route → relay → settle) is the same for all of them and asks these questions through an `Api`; adding an API is
one module with one subclass and one line in `hub.proxy.apis.ROUTES`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

from hub.errors import BadRequest, HubError, InvalidJSON
from hub.proxy.bounds import Limits
from hub.proxy.meter import MAX_EVENT_BYTES, Relayed, Report


@dataclass(slots=True)
class Parsed:
    """A request body as the client sent it, read once: the JSON (or a form's text fields) and the raw bytes."""

    body: dict[str, Any]
    raw: bytes
    model: str
    stream: bool
    content_type: str = "application/json"
    audio_ms_bound: int | None = None  # uploads: the longest the audio can be, from what the hub read of it
    audio_ms_known: int | None = None  # uploads: its exact length, when the hub could read it (a WAV header)


@dataclass(slots=True)
class Outgoing:
    """What the hub sends on: the body text (or base64 of raw bytes), and whether the client asked for usage."""

    text: str
    wants_usage: bool = True
    encoding: str | None = None


class Api:
    """The chat-completions-like defaults; each API module overrides what differs."""

    name: ClassVar[str]  # the path under /v1/, also the name agents advertise (agent.protocol.APIS)
    title: ClassVar[str]  # how messages name it: "the Responses API"
    free: ClassVar[bool] = False  # costs nothing: no hold, no charge (Anthropic's count_tokens)
    generates: ClassVar[bool] = True  # has output tokens (embeddings and rerank do not)
    countable: ClassVar[bool] = False  # the hub's tokenizer understands its request body
    max_answer_bytes: ClassVar[int | None] = None  # a smaller limit than the hub's for a whole answer
    max_event_bytes: ClassVar[int] = MAX_EVENT_BYTES  # the largest stream event the hub reads

    def parse(self, raw: bytes, content_type: str) -> Parsed:
        body = json_object(raw)
        if not isinstance(body.get("model"), str) or not body["model"]:
            error = BadRequest("You must provide a model parameter.")
            error.code = "missing_model"
            raise error
        return Parsed(body, raw, body["model"], body.get("stream") is True)

    def outgoing(self, parsed: Parsed) -> Outgoing:
        return Outgoing(parsed.raw.decode())

    def limits(self, parsed: Parsed, body_bytes: int, default_max_tokens: int) -> Limits:
        return Limits.of(parsed.body, body_bytes, default_max_tokens=default_max_tokens, embeddings=not self.generates)

    def answer(self, payload: Any, relayed: Relayed) -> Report | None:
        """Read a whole answer: add what it generated to `relayed`, return the usage it reported."""
        raise NotImplementedError

    def event(self, payload: Any, relayed: Relayed) -> Report | None:
        """Read one stream event's JSON the same way; usage is merged over the stream, field by field."""
        return self.answer(payload, relayed)

    def plain(self, text: str, relayed: Relayed) -> Report | None:
        """Read an answer in plain text (a transcription's `response_format: text`); no usage in it."""
        add_text(relayed, text)
        return None

    def ends(self, payload: Any) -> bool:
        """Whether this stream event is the answer's last (OpenAI's streams end with `data: [DONE]` instead)."""
        return False

    def injected(self, payload: Any) -> bool:
        """Whether this event only carries the usage the hub asked for on the client's behalf (dropped)."""
        return False

    def error_body(self, error: HubError) -> dict[str, Any]:
        return {"error": {"message": error.message, "type": error.openai_type, "param": None, "code": error.code}}

    def error_event(self, message: str) -> bytes:
        """The last event of a stream the GPU broke off."""
        error = {"error": {"message": message, "type": "server_error", "param": None, "code": "upstream_error"}}
        return b"data: " + json.dumps(error).encode() + b"\n\n"


def json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw.decode())  # UTF-8 only: json.loads would also take UTF-16, which is not forwarded
    except (ValueError, UnicodeDecodeError):
        raise InvalidJSON("We could not parse the JSON body of your request.") from None
    except RecursionError:
        raise InvalidJSON("The JSON body of your request is nested too deeply.") from None
    if not isinstance(body, dict):
        raise InvalidJSON("The request body must be a JSON object.")
    return body


def positive(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def add_text(relayed: Relayed, *parts: Any) -> None:
    """Count generated text the hub relayed (and keep it, when a tokenizer will count it)."""
    for part in parts:
        if isinstance(part, str) and part:
            relayed.add(part)
