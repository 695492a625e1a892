"""The most the hub believes of a provider's usage report, from what the hub itself forwarded and relayed.

A provider controls its agent and its server, so `usage` is a claim. The hub holds it against facts it knows:

- prompt tokens cannot exceed the bytes of the request the hub forwarded (a token covers at least one byte of
  text, JSON escapes only make the body longer), plus an allowance for what a server adds around them (a chat
  template, a system prompt of its own) and for each image, audio or video part, whose tokens bytes do not bound;
- completion tokens cannot exceed what the request allowed (`max_tokens` / `max_completion_tokens`, or the model
  default that sized the hold, times `n` and the number of prompts), nor the bytes of text the hub relayed
  (content, reasoning and tool-call arguments: a generated token yields at least one byte, byte-fallback tokens
  included), plus a small allowance per choice and per tool call for tokens that print nothing.

What is billed never exceeds a bound. A report above a bound is a dispute (billed at the bound, the report kept)
only where an honest server could not have sent it: above the bytes, or above a limit the request itself set. A
request that set no limit is billed at most the model default that sized its hold, without a dispute, since the
server was free to write more. A number that is missing or malformed is estimated instead, flagged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hub.proxy.meter import Counts, Relayed, Report, estimate_tokens, prompt_chars

PROMPT_BASE_ALLOWANCE = 256  # a template's preamble and a server's own system prompt (an Ollama Modelfile's)
PROMPT_PER_MESSAGE = 8  # role markers and separators around each message
PROMPT_PER_MEDIA_PART = 4096  # an image or audio part: hundreds to thousands of tokens from a short URL
COMPLETION_PER_CHOICE = 16  # end-of-turn and other tokens that print nothing
COMPLETION_PER_TOOL_CALL = 16  # tool-call markers around the name and arguments
TOOL_CALLS_PER_CHOICE = 16  # what the allowance believes of one choice
MAX_CHOICES = 128  # OpenAI's own limit for `n`
_MEDIA = ("image_url", "input_image", "image", "input_audio", "audio_url", "video_url", "file", "input_file")


@dataclass(frozen=True)
class Limits:
    """What a request allows, known before it is sent; the hold is sized from these."""

    prompt: int
    completion: int
    prompt_chars: int  # for estimates
    choices: int = 1  # how many answers the request asked for (n times the prompts)
    explicit: bool = True  # the completion limit came from the request, not from the model default
    audio_ms: int = 0  # an upload's longest possible length (`hub.proxy.apis.audio`)
    audio_ms_guess: int = 0  # what the hub bills when the server says nothing

    @classmethod
    def of(cls, body: dict[str, Any], body_bytes: int, *, default_max_tokens: int, embeddings: bool) -> Limits:
        messages = body.get("messages")
        count = len(messages) if isinstance(messages, list) else 1
        prompt = body_bytes + PROMPT_BASE_ALLOWANCE + PROMPT_PER_MESSAGE * count
        prompt += PROMPT_PER_MEDIA_PART * media_parts(messages)
        asked = requested_max_tokens(body)
        answers = choices(body) * prompts(body)
        completion = 0 if embeddings else (asked or default_max_tokens) * answers
        return cls(prompt, completion, prompt_chars(body), answers, explicit=embeddings or asked is not None)


def requested_max_tokens(body: dict[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def choices(body: dict[str, Any]) -> int:
    """`n`; views refuse a value outside 1 to MAX_CHOICES before anything is held."""
    n = body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= MAX_CHOICES else 1


def prompts(body: dict[str, Any]) -> int:
    """A completions request may carry several prompts (strings, or lists of token ids): one answer each."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and all(isinstance(p, str | list) for p in prompt):
        return len(prompt)
    return 1


def media_parts(messages: Any) -> int:
    count = 0
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and (part.get("type") in _MEDIA or any(key in part for key in _MEDIA)):
                count += 1
    return count


@dataclass(frozen=True)
class Counted:
    """The hub's own count with an attached tokenizer; None where it could not count (an image, say)."""

    prompt_tokens: int | None
    completion_tokens: int | None


@dataclass(frozen=True)
class Billed:
    """The numbers the hub bills, quotas and pays on; `reported` is kept when the provider claimed more."""

    counts: Counts
    disputed: bool = False
    reported: Report | None = None


def bill(limits: Limits, report: Report | None, relayed: Relayed, *, counted: Counted | None = None) -> Billed:
    """Hold `report` against the bounds; `counted` is the hub's own tokenizer count, when it has one."""
    answers = min(max(relayed.choices, 1), limits.choices)
    tool_calls = min(relayed.tool_calls, TOOL_CALLS_PER_CHOICE * answers)
    relayed_bound = relayed.text_bytes + COMPLETION_PER_CHOICE * answers + COMPLETION_PER_TOOL_CALL * tool_calls
    prompt_bound = limits.prompt
    completion_bound = min(limits.completion, relayed_bound)
    reported_prompt = report.prompt_tokens if report else None
    reported_completion = report.completion_tokens if report else None
    if limits.completion == 0 and report is not None and reported_completion is None:
        reported_completion = 0  # embeddings generate nothing, and their usage says so by leaving it out
    # Only the hard bounds make a dispute; a tokenizer's count does not (it cannot see a chat template).
    disputed = (reported_prompt or 0) > prompt_bound or (reported_completion or 0) > (
        completion_bound if limits.explicit else relayed_bound
    )
    prompt_guess = estimate_tokens(limits.prompt_chars)
    completion_guess = estimate_tokens(relayed.text_chars)
    if counted is not None:
        if counted.prompt_tokens is not None:
            prompt_bound = min(prompt_bound, counted.prompt_tokens)
            prompt_guess = counted.prompt_tokens
        if counted.completion_tokens is not None:
            completion_bound = min(completion_bound, counted.completion_tokens)
            completion_guess = counted.completion_tokens
    estimated = reported_prompt is None or reported_completion is None
    prompt = prompt_guess if reported_prompt is None else reported_prompt
    completion = completion_guess if reported_completion is None else reported_completion
    audio_ms = 0
    if limits.audio_ms:  # an upload: its seconds are bounded by what the hub read of the file
        reported_audio = report.audio_ms if report else None
        disputed = disputed or (reported_audio or 0) > limits.audio_ms
        estimated = estimated or reported_audio is None
        audio_ms = min(limits.audio_ms_guess if reported_audio is None else reported_audio, limits.audio_ms)
    counts = Counts(min(prompt, prompt_bound), min(completion, completion_bound), estimated, audio_ms)
    return Billed(counts, disputed, report if disputed else None)
