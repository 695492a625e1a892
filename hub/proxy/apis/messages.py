"""Anthropic's Messages API (what Claude Code speaks) and its token counter.

`max_tokens` is required there and sizes the hold. The prompt is `input_tokens` plus the cache reads and writes
(`cache_read_input_tokens`, `cache_creation_input_tokens`), the completion `output_tokens`; a stream reports them
on `message_start` and again, cumulatively, on `message_delta`. Errors use Anthropic's envelope, which its SDK
and Claude Code read: `{"type": "error", "error": {"type": ..., "message": ...}}`.
"""

from __future__ import annotations

import json
from typing import Any

from hub.errors import BadRequest, HubError
from hub.proxy.apis.base import Api, Parsed, add_text, positive
from hub.proxy.bounds import PROMPT_BASE_ALLOWANCE, PROMPT_PER_MEDIA_PART, PROMPT_PER_MESSAGE, Limits
from hub.proxy.meter import Relayed, Report, prompt_chars, whole

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}
_MEDIA = ("image", "document")
_PROMPT_FIELDS = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def anthropic_error(error: HubError) -> dict[str, Any]:
    kind = ERROR_TYPES.get(error.status_code, "api_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}


def usage_report(usage: Any) -> Report | None:
    if not isinstance(usage, dict):
        return None
    prompt: int | None = None
    if any(name in usage for name in _PROMPT_FIELDS):
        parts = [whole(usage.get(name, 0)) if usage.get(name) is not None else 0 for name in _PROMPT_FIELDS]
        prompt = None if any(part is None for part in parts) else sum(part or 0 for part in parts)
    return Report(prompt, whole(usage.get("output_tokens")))


def relay_block(block: Any, into: Relayed) -> None:
    if not isinstance(block, dict):
        return
    if block.get("type") == "tool_use":
        into.tool_calls += 1
        tool_input = block.get("input")
        text = (
            json.dumps(tool_input, ensure_ascii=False, separators=(",", ":")) if tool_input not in (None, {}) else None
        )
        add_text(into, block.get("name"), text)
    add_text(into, block.get("text"), block.get("thinking"))


class Messages(Api):
    name = "messages"
    title = "Anthropic's Messages API"

    def parse(self, raw: bytes, content_type: str) -> Parsed:
        parsed = super().parse(raw, content_type)
        if positive(parsed.body, "max_tokens") is None:
            raise BadRequest("max_tokens: Field required (a whole number above 0).")
        return parsed

    def limits(self, parsed: Parsed, body_bytes: int, default_max_tokens: int) -> Limits:
        body = parsed.body
        messages = body.get("messages")
        count = len(messages) if isinstance(messages, list) else 1
        prompt = body_bytes + PROMPT_BASE_ALLOWANCE + PROMPT_PER_MESSAGE * count
        prompt += PROMPT_PER_MEDIA_PART * _media_parts(messages)
        completion = (positive(body, "max_tokens") or default_max_tokens) if self.generates else 0
        return Limits(prompt, completion, prompt_chars(body), 1, explicit=True)

    def answer(self, payload: Any, relayed: Relayed) -> Report | None:
        if not isinstance(payload, dict):
            return None
        content = payload.get("content")
        for block in content if isinstance(content, list) else []:
            relay_block(block, relayed)
        relayed.choices = max(relayed.choices, 1)
        return usage_report(payload.get("usage"))

    def ends(self, payload: Any) -> bool:
        return isinstance(payload, dict) and payload.get("type") == "message_stop"

    def event(self, payload: Any, relayed: Relayed) -> Report | None:
        kind = payload.get("type") if isinstance(payload, dict) else None
        if kind == "message_start":
            message = payload.get("message")
            return usage_report(message.get("usage") if isinstance(message, dict) else None)
        if kind == "content_block_start":
            relayed.choices = max(relayed.choices, 1)
            block = payload.get("content_block")
            if isinstance(block, dict) and block.get("type") == "tool_use":
                relayed.tool_calls += 1
                add_text(relayed, block.get("name"))
            else:
                relay_block(block, relayed)
        elif kind == "content_block_delta":
            delta = payload.get("delta")
            if isinstance(delta, dict):
                add_text(relayed, delta.get("text"), delta.get("partial_json"), delta.get("thinking"))
        elif kind == "message_delta":
            return usage_report(payload.get("usage"))
        return None

    def error_body(self, error: HubError) -> dict[str, Any]:
        return anthropic_error(error)

    def error_event(self, message: str) -> bytes:
        error = {"type": "error", "error": {"type": "api_error", "message": message}}
        return b"event: error\ndata: " + json.dumps(error).encode() + b"\n\n"


class CountTokens(Messages):
    """`{input_tokens: N}`: free at Anthropic and here (no hold, no charge), but rate limited and logged."""

    name = "messages/count_tokens"
    title = "Anthropic's token counting API"
    free = True
    generates = False
    max_answer_bytes = 64 * 1024  # `{"input_tokens": N}`: a free path must not carry generated answers

    def parse(self, raw: bytes, content_type: str) -> Parsed:
        parsed = Api.parse(self, raw, content_type)
        if parsed.stream:
            raise BadRequest("stream: count_tokens does not stream; leave 'stream' out.")
        return parsed

    def answer(self, payload: Any, relayed: Relayed) -> Report | None:
        return Report(0, 0)


def _media_parts(messages: Any) -> int:
    count = 0
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        for block in content if isinstance(content, list) else []:
            if isinstance(block, dict) and block.get("type") in _MEDIA:
                count += 1
    return count
