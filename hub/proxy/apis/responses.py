"""OpenAI's Responses API (what Codex CLI speaks): `max_output_tokens` sizes the hold; usage is
`usage.input_tokens` / `output_tokens`, in a stream on the `response.completed` event (always there: the hub never
has to ask for it)."""

from __future__ import annotations

import json
from typing import Any

from hub.errors import BadRequest
from hub.proxy.apis.base import Api, Parsed, add_text, positive
from hub.proxy.bounds import PROMPT_BASE_ALLOWANCE, PROMPT_PER_MEDIA_PART, PROMPT_PER_MESSAGE, Limits
from hub.proxy.meter import Relayed, Report, prompt_chars, whole

_MEDIA = ("input_image", "input_file", "input_audio")
_TEXT_DELTAS = (
    "response.output_text.delta",
    "response.refusal.delta",
    "response.function_call_arguments.delta",
    "response.reasoning_text.delta",
    "response.reasoning_summary_text.delta",
    "response.custom_tool_call_input.delta",
)
_ENDS = ("response.completed", "response.incomplete", "response.failed")
# What a server would add from its own storage, which the hub never saw: no bound could hold its tokens.
STORED = ("previous_response_id", "conversation", "prompt")


def usage_report(response: Any) -> Report | None:
    usage = response.get("usage") if isinstance(response, dict) else None
    if not isinstance(usage, dict):
        return None
    return Report(whole(usage.get("input_tokens")), whole(usage.get("output_tokens")))


def relay_output(response: Any, into: Relayed) -> None:
    """The text of a whole response: messages, refusals, function calls (name and arguments), reasoning."""
    output = response.get("output") if isinstance(response, dict) else None
    for item in output if isinstance(output, list) else []:
        if not isinstance(item, dict):
            continue
        if item.get("type") in ("function_call", "custom_tool_call"):
            into.tool_calls += 1
            add_text(into, item.get("name"), item.get("arguments"), item.get("input"))
        # Reasoning comes as content or as a summary (Ollama puts it only there), as it does in a stream.
        for key in ("content", "summary"):
            parts = item.get(key)
            for part in parts if isinstance(parts, list) else []:
                if isinstance(part, dict):
                    add_text(into, part.get("text"), part.get("refusal"))
    into.choices = max(into.choices, 1)


class Responses(Api):
    name = "responses"
    title = "the Responses API"
    max_event_bytes = 16 * 1024 * 1024  # `response.completed` repeats the whole answer, reasoning and tools included

    def limits(self, parsed: Parsed, body_bytes: int, default_max_tokens: int) -> Limits:
        body = parsed.body
        items = body.get("input")
        count = len(items) if isinstance(items, list) else 1
        prompt = body_bytes + PROMPT_BASE_ALLOWANCE + PROMPT_PER_MESSAGE * count
        prompt += PROMPT_PER_MEDIA_PART * _media_parts(items)
        asked = positive(body, "max_output_tokens")
        return Limits(prompt, asked or default_max_tokens, prompt_chars(body), 1, explicit=asked is not None)

    def answer(self, payload: Any, relayed: Relayed) -> Report | None:
        relay_output(payload, relayed)
        return usage_report(payload)

    def ends(self, payload: Any) -> bool:
        return isinstance(payload, dict) and payload.get("type") in _ENDS

    def event(self, payload: Any, relayed: Relayed) -> Report | None:
        kind = payload.get("type") if isinstance(payload, dict) else None
        if kind in _TEXT_DELTAS:
            relayed.choices = max(relayed.choices, 1)
            add_text(relayed, payload.get("delta"))
        elif kind == "response.output_item.added":
            item = payload.get("item")
            if isinstance(item, dict) and item.get("type") in ("function_call", "custom_tool_call"):
                relayed.tool_calls += 1
                add_text(relayed, item.get("name"))
        elif kind in _ENDS:
            return usage_report(payload.get("response"))
        return None

    def parse(self, raw: bytes, content_type: str) -> Parsed:
        parsed = super().parse(raw, content_type)
        for name in STORED:
            if parsed.body.get(name) not in (None, ""):
                raise BadRequest(
                    f"'{name}' is not supported: the hub does not keep responses or conversations, and each request "
                    "may go to another GPU. Send the whole conversation in 'input' (and 'store': false)."
                )
        return parsed

    def error_event(self, message: str) -> bytes:
        # The stream's own `error` event; its sequence number is the hub's, as the stream's were the server's.
        error = {"type": "error", "code": "upstream_error", "message": message, "param": None, "sequence_number": 0}
        return b"event: error\ndata: " + json.dumps(error).encode() + b"\n\n"


def _media_parts(items: Any) -> int:
    count = 0
    for item in items if isinstance(items, list) else []:
        content = item.get("content") if isinstance(item, dict) else None
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and part.get("type") in _MEDIA:
                count += 1
    return count
