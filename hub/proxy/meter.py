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
from typing import Any

from hub.errors import UpstreamFailed

_BOUNDARY = re.compile(rb"\r?\n\r?\n")
# One SSE event larger than this is no chat chunk; a stream that never ends an event would otherwise grow the hub.
MAX_EVENT_BYTES = 1024 * 1024
_DEPTH = 8  # how deep the hub looks for text in a request (real requests nest three or four levels)


@dataclass
class Counts:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False


@dataclass(frozen=True)
class Report:
    """What the provider said it used; a number that is not a whole, non-negative number is None (missing)."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None


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

    walk({k: body.get(k) for k in ("messages", "prompt", "input") if k in body}, 0)
    return total


def whole(value: Any) -> int | None:
    """A token count as reported, if it is one: an int (not a bool), not negative. Anything else is missing."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def report_of(payload: Any) -> Report | None:
    """The `usage` object of an answer or a stream chunk, or None when there is none."""
    usage = payload.get("usage") if isinstance(payload, dict) else None
    if not isinstance(usage, dict):
        return None
    return Report(whole(usage.get("prompt_tokens")), whole(usage.get("completion_tokens")))


def _utf8(value: Any) -> tuple[int, int]:
    if not isinstance(value, str):
        return 0, 0
    return len(value.encode("utf-8", "surrogatepass")), len(value)


def relay_of(payload: Any, into: Relayed) -> None:
    """Add the generated text of an answer or a chunk: content, reasoning, tool-call names and arguments."""
    choices = payload.get("choices") if isinstance(payload, dict) else None
    if not isinstance(choices, list):
        return
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        index = choice.get("index")
        if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < 1024:
            into.choices = max(into.choices, index + 1)
        else:
            into.choices = max(into.choices, 1)
        parts = [choice.get("text")]
        delta = choice.get("delta") or choice.get("message")
        if isinstance(delta, dict):
            parts += [delta.get("content"), delta.get("reasoning_content"), delta.get("reasoning")]
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else []:
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    parts += [function.get("name"), function.get("arguments")]
                    if function.get("name"):
                        into.tool_calls += 1
        for part in parts:
            size, chars = _utf8(part)
            into.text_bytes += size
            into.text_chars += chars
            if into.texts is not None and chars and isinstance(part, str):
                into.texts.append(part)
        if into.texts is not None and into.text_chars > KEEP_TEXT_CHARS:
            into.texts = None
        elif into.texts is not None and len(into.texts) > 256:
            # Counted as one text, not fragment by fragment (a text split into characters counts as more
            # tokens than the text); joined as it grows, so a stream of one-character pieces stays small.
            into.texts[:] = ["".join(into.texts)]


def parse_json(data: bytes) -> Any:
    """JSON from a provider, or None: malformed or absurdly nested input is simply not JSON to the hub."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


@dataclass
class Answer:
    """What a whole (non-stream) answer reported and what it carried."""

    report: Report | None
    relayed: Relayed


def read_answer(body: bytes, *, keep_text: bool = False) -> Answer:
    payload = parse_json(body)
    relayed = Relayed.keeping(keep_text)
    relay_of(payload, relayed)
    return Answer(report_of(payload), relayed)


@dataclass
class StreamMeter:
    """Feed it stream bytes as they come; it returns the bytes to forward, event by event."""

    strip_usage: bool
    report: Report | None = None
    relayed: Relayed = field(default_factory=Relayed)
    pending: bytearray = field(default_factory=bytearray, repr=False)
    scanned: int = 0  # how much of `pending` is known to hold no event boundary

    def feed(self, data: bytes) -> bytes:
        self.pending += data
        out: list[bytes] = []
        start = 0
        # Look only at what is new (and the three bytes before it, where a boundary may begin): a long event
        # that arrives in many small pieces must not be scanned again with each piece.
        while match := _BOUNDARY.search(self.pending, max(start, self.scanned - 3)):
            event = bytes(self.pending[start : match.end()])
            start = self.scanned = match.end()
            if self._keep(event):
                out.append(event)
        if start:
            del self.pending[:start]
        self.scanned = len(self.pending)
        if len(self.pending) > MAX_EVENT_BYTES:
            raise UpstreamFailed(f"The GPU's server sent a stream event larger than {MAX_EVENT_BYTES} bytes.")
        return b"".join(out)

    def flush(self) -> bytes:
        """Whatever is left when the upstream closes (a last event without its blank line)."""
        rest = bytes(self.pending)
        self.pending.clear()
        self.scanned = 0
        return rest if rest.strip() and self._keep(rest) else b""

    def _keep(self, event: bytes) -> bool:
        data = b"".join(line[5:].lstrip() for line in event.splitlines() if line.startswith(b"data:"))
        if not data or data == b"[DONE]":
            return True
        payload = parse_json(data)
        if payload is None:
            return True
        relay_of(payload, self.relayed)
        if (report := report_of(payload)) is not None:
            self.report = report
            if self.strip_usage and isinstance(payload, dict) and not payload.get("choices"):
                return False
        return True
