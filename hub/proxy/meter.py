"""Reading usage out of answers without holding them up, and counting what the hub itself relayed.

Streams are split at event boundaries only (never buffered whole), so the hub can drop the usage chunk it asked
for on the client's behalf and count what went by. SSE framing is done here rather than with a client library
because the hub must forward the original bytes of every event, not re-encode parsed ones.

Nothing here believes the provider: a reported number is taken only when it is a whole, non-negative number
(`Report`), and what the hub saw go by (`Relayed`) is what `hub.proxy.bounds` holds the report against.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from hub.errors import UpstreamFailed

_BOUNDARY = re.compile(rb"\r?\n\r?\n")
# One SSE event larger than this is no chat chunk; a stream that never ends an event would otherwise grow the hub.
# (The Responses API's last event repeats the whole answer: its shape allows more, `Api.max_event_bytes`.)
MAX_EVENT_BYTES = 1024 * 1024
_DEPTH = 8  # how deep the hub looks for text in a request (real requests nest three or four levels)


# Where the APIs put text: chat and completions, Responses (`instructions`), Messages (`system`), rerank.
_PROMPT_FIELDS = ("messages", "prompt", "input", "instructions", "system", "query", "documents")


@dataclass
class Counts:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False
    audio_ms: int = 0  # transcriptions: milliseconds of audio, billed per audio minute


@dataclass(frozen=True)
class Report:
    """What the provider said it used; a number that is not a whole, non-negative number is None (missing)."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    audio_ms: int | None = None

    def over(self, earlier: Report | None) -> Report:
        """This report over an earlier one of the same answer: a stream may report its usage in parts."""
        if earlier is None:
            return self
        return Report(
            earlier.prompt_tokens if self.prompt_tokens is None else self.prompt_tokens,
            earlier.completion_tokens if self.completion_tokens is None else self.completion_tokens,
            earlier.audio_ms if self.audio_ms is None else self.audio_ms,
        )


# The hub keeps the generated text only to count it with a tokenizer, and only this much of it.
KEEP_TEXT_CHARS = 4 * 1024 * 1024


@dataclass
class Relayed:
    """What the hub itself passed on: UTF-8 bytes of generated text, and how many choices and tool calls.

    `texts` collects the text itself when the hub will count it (None otherwise, or once it grew too long).
    """

    text_bytes: int = 0
    choices: int = 0
    tool_calls: int = 0
    text_chars: int = 0
    texts: list[str] | None = None

    @classmethod
    def keeping(cls, keep: bool) -> Relayed:
        return cls(texts=[] if keep else None)

    def add(self, text: str) -> None:
        self.text_bytes += len(text.encode("utf-8", "surrogatepass"))
        self.text_chars += len(text)
        if self.texts is None:
            return
        self.texts.append(text)
        if self.text_chars > KEEP_TEXT_CHARS:
            self.texts = None
        elif len(self.texts) > 256:
            # Counted as one text, not fragment by fragment (a text split into characters counts as more
            # tokens than the text); joined as it grows, so a stream of one-character pieces stays small.
            self.texts[:] = ["".join(self.texts)]


def estimate_tokens(chars: int) -> int:
    """About four characters a token for English text; good enough when the upstream says nothing."""
    return math.ceil(chars / 4) if chars > 0 else 0


def prompt_chars(body: dict[str, Any]) -> int:
    """Characters of text a request sends, for estimates."""
    total = 0

    def walk(value: Any, depth: int) -> None:
        nonlocal total
        if depth > _DEPTH:
            return
        if isinstance(value, str):
            total += len(value)
        elif isinstance(value, list):
            for item in value:
                walk(item, depth + 1)
        elif isinstance(value, dict):
            for key in ("content", "text", "prompt", "input", "messages"):
                if key in value:
                    walk(value[key], depth + 1)

    walk({k: body.get(k) for k in _PROMPT_FIELDS if k in body}, 0)
    return total


def whole(value: Any) -> int | None:
    """A token count as reported, if it is one: an int (not a bool), not negative. Anything else is missing."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def parse_json(data: bytes) -> Any:
    """JSON from a provider, or None: malformed or absurdly nested input is simply not JSON to the hub."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


class Reader(Protocol):
    """The part of an API shape that reads answers (`hub.proxy.apis.base.Api`)."""

    def answer(self, payload: Any, relayed: Relayed) -> Report | None: ...

    def event(self, payload: Any, relayed: Relayed) -> Report | None: ...

    def injected(self, payload: Any) -> bool: ...

    def plain(self, text: str, relayed: Relayed) -> Report | None: ...

    def ends(self, payload: Any) -> bool: ...


@dataclass
class Answer:
    """What a whole (non-stream) answer reported and what it carried."""

    report: Report | None
    relayed: Relayed


def read_answer(api: Reader, body: bytes, media_type: str, *, keep_text: bool = False) -> Answer:
    relayed = Relayed.keeping(keep_text)
    if media_type.startswith("text/plain"):  # a transcription as plain text: the text is the answer
        return Answer(api.plain(body.decode("utf-8", "replace"), relayed), relayed)
    return Answer(api.answer(parse_json(body), relayed), relayed)


@dataclass
class StreamMeter:
    """Feed it stream bytes as they come; it returns the bytes to forward, event by event."""

    api: Reader
    strip_usage: bool
    max_event: int = MAX_EVENT_BYTES
    report: Report | None = None
    relayed: Relayed = field(default_factory=Relayed)
    pending: bytearray = field(default_factory=bytearray, repr=False)
    scanned: int = 0  # how much of `pending` is known to hold no event boundary
    ended: bool = False  # the stream's last event came (`[DONE]`, `message_stop`…): it is held back, the rest dropped
    held: bytearray = field(default_factory=bytearray, repr=False)

    def feed(self, data: bytes) -> bytes:
        self.pending += data
        out: list[bytes] = []
        start = 0
        # Look only at what is new (and the three bytes before it, where a boundary may begin): a long event
        # that arrives in many small pieces must not be scanned again with each piece.
        while match := _BOUNDARY.search(self.pending, max(start, self.scanned - 3)):
            event = bytes(self.pending[start : match.end()])
            start = self.scanned = match.end()
            if self.ended:
                continue  # nothing after the answer's last event is passed on, nor kept (a provider could flood)
            if self._keep(event):
                if self.ended:
                    self.held += event  # the last event: the client gets it once the bill is safe (`release`)
                else:
                    out.append(event)
        if start:
            del self.pending[:start]
        self.scanned = len(self.pending)
        if len(self.pending) > self.max_event:
            raise UpstreamFailed(f"The GPU's server sent a stream event larger than {self.max_event} bytes.")
        return b"".join(out)

    def flush(self) -> bytes:
        """Whatever is left when the upstream closes (a last event without its blank line), held back too."""
        rest = bytes(self.pending)
        self.pending.clear()
        self.scanned = 0
        over = self.ended  # then `rest` came after the last event
        return self.release() + (rest if not over and rest.strip() and self._keep(rest) else b"")

    def release(self) -> bytes:
        """The held-back end of the stream, for the client."""
        held = bytes(self.held)
        self.held.clear()
        return held

    def _keep(self, event: bytes) -> bool:
        data = b"".join(line[5:].lstrip() for line in event.splitlines() if line.startswith(b"data:"))
        if not data:
            return True
        if data == b"[DONE]":
            self.ended = True
            return True
        payload = parse_json(data)
        if payload is None:
            return True
        self.ended = self.ended or self.api.ends(payload)
        if (report := self.api.event(payload, self.relayed)) is not None:
            self.report = report.over(self.report)
            if self.strip_usage and self.api.injected(payload):
                return False
        return True
