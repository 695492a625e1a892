"""Reading usage out of answers without holding them up.

Streams are split at event boundaries only (never buffered whole), so the hub can drop the usage chunk it asked
for on the client's behalf and count what went by. SSE framing is done here rather than with a client library
because the hub must forward the original bytes of every event, not re-encode parsed ones.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

_BOUNDARY = re.compile(rb"\r?\n\r?\n")


@dataclass
class Counts:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False


def estimate_tokens(chars: int) -> int:
    """About four characters a token for English text; good enough when the upstream says nothing."""
    return math.ceil(chars / 4) if chars > 0 else 0


def prompt_chars(body: dict[str, Any]) -> int:
    """Characters of text a request sends, for estimates."""
    total = 0

    def walk(value: Any) -> None:
        nonlocal total
        if isinstance(value, str):
            total += len(value)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for key in ("content", "text", "prompt", "input", "messages"):
                if key in value:
                    walk(value[key])

    walk({k: body.get(k) for k in ("messages", "prompt", "input") if k in body})
    return total


def _usage(payload: Any) -> Counts | None:
    usage = payload.get("usage") if isinstance(payload, dict) else None
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens", 0)
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Counts(prompt_tokens=prompt, completion_tokens=completion)


def _text_chars(payload: Any) -> int:
    chars = 0
    for choice in payload.get("choices") or [] if isinstance(payload, dict) else []:
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta") or choice.get("message") or {}
        for value in (delta.get("content"), delta.get("reasoning_content"), choice.get("text")):
            if isinstance(value, str):
                chars += len(value)
    return chars


def counts_of_answer(body: bytes, request: dict[str, Any]) -> Counts:
    """Usage of a whole (non-stream) answer: the upstream's own numbers, or an estimate."""
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if (counts := _usage(payload)) is not None:
        return counts
    return Counts(estimate_tokens(prompt_chars(request)), estimate_tokens(_text_chars(payload)), estimated=True)


@dataclass
class StreamMeter:
    """Feed it stream bytes as they come; it returns the bytes to forward, event by event."""

    strip_usage: bool
    request: dict[str, Any]
    usage: Counts | None = None
    chars: int = 0
    pending: bytes = field(default=b"", repr=False)

    def feed(self, data: bytes) -> bytes:
        self.pending += data
        out: list[bytes] = []
        while match := _BOUNDARY.search(self.pending):
            event, self.pending = self.pending[: match.end()], self.pending[match.end() :]
            if self._keep(event):
                out.append(event)
        return b"".join(out)

    def flush(self) -> bytes:
        """Whatever is left when the upstream closes (a last event without its blank line)."""
        rest, self.pending = self.pending, b""
        return rest if rest.strip() and self._keep(rest) else b""

    def _keep(self, event: bytes) -> bool:
        data = b"".join(line[5:].lstrip() for line in event.splitlines() if line.startswith(b"data:"))
        if not data or data == b"[DONE]":
            return True
        try:
            payload = json.loads(data)
        except ValueError:
            return True
        self.chars += _text_chars(payload)
        if (usage := _usage(payload)) is not None:
            self.usage = usage
            if self.strip_usage and isinstance(payload, dict) and not payload.get("choices"):
                return False
        return True

    def counts(self) -> Counts:
        if self.usage is not None:
            return self.usage
        return Counts(estimate_tokens(prompt_chars(self.request)), estimate_tokens(self.chars), estimated=True)
