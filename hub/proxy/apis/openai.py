"""OpenAI's chat completions, completions and embeddings: `usage.prompt_tokens` / `completion_tokens`, in a stream
on a last chunk the hub asks for (`stream_options.include_usage`) when the client did not, and drops again."""

from __future__ import annotations

import json
from typing import Any

from hub.errors import BadRequest
from hub.proxy.apis.base import Api, Outgoing, Parsed, add_text
from hub.proxy.bounds import MAX_CHOICES
from hub.proxy.meter import Relayed, Report, whole


def usage_report(payload: Any) -> Report | None:
    """The `usage` object of an answer or a stream chunk, or None when there is none."""
    usage = payload.get("usage") if isinstance(payload, dict) else None
    if not isinstance(usage, dict):
        return None
    return Report(whole(usage.get("prompt_tokens")), whole(usage.get("completion_tokens")))


def relay_choices(payload: Any, into: Relayed) -> None:
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
        add_text(into, *parts)


class ChatCompletions(Api):
    name = "chat/completions"
    title = "the Chat Completions API"
    countable = True

    def parse(self, raw: bytes, content_type: str) -> Parsed:
        parsed = super().parse(raw, content_type)
        n = parsed.body.get("n", 1)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CHOICES:
            raise BadRequest(f"'n' must be a whole number from 1 to {MAX_CHOICES}.")
        return parsed

    def outgoing(self, parsed: Parsed) -> Outgoing:
        options = parsed.body.get("stream_options")
        wants_usage = isinstance(options, dict) and options.get("include_usage") is True
        if not parsed.stream or wants_usage:
            return Outgoing(parsed.raw.decode(), wants_usage=True)
        # Ask for usage on the client's behalf; the extra chunk is taken out again on the way back.
        asked = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        return Outgoing(json.dumps({**parsed.body, "stream_options": asked}), wants_usage=False)

    def answer(self, payload: Any, relayed: Relayed) -> Report | None:
        relay_choices(payload, relayed)
        return usage_report(payload)

    def injected(self, payload: Any) -> bool:
        return isinstance(payload, dict) and not payload.get("choices")


class Completions(ChatCompletions):
    name = "completions"
    title = "the Completions API"


class Embeddings(ChatCompletions):
    name = "embeddings"
    title = "the Embeddings API"
    generates = False
