"""The hub's own token count, for models an admin attached a tokenizer to.

`Tokenizers` is built once in `create_app` and keeps every attached tokenizer loaded, by model name. The proxy
asks it at settlement time:

    counter = tokenizers.counter(model)          # None: no tokenizer for this model, trust the other bounds
    if counter is not None:
        prompt = await prompt_tokens_async(counter, body)                # None: the body holds an image, audio…
        completion = await completion_tokens_async(counter, texts, choices=n)

and bills the smaller of each count and the provider's report. Counts are of text without special tokens, plus
the small allowances below for what a chat template or the server adds, so an honest provider's report is
normally the smaller one and a dishonest one can add at most the allowances.

Cost, measured on this project's 2-core machine with a 32k-vocabulary byte-level BPE: tokenizing 100 KB of text
takes 27 to 31 ms of CPU (about 0.3 ms per KB), and `Tokenizer.encode` holds the GIL while it runs (the event loop
stalled for the whole 27 ms even from a worker thread). `encode_batch` releases the GIL, so texts past
OFF_LOOP_CHARS go to a thread through it and the event loop keeps relaying other streams (its longest stall
fell to 2.5 ms). Loading a tokenizer.json holds the GIL for about 40 ms per MB; that happens once per attach.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession
from tokenizers import Tokenizer

from hub.background import cancel
from hub.db import Database
from hub.outage import Outage, is_outage
from hub.tokenizers import service

log = logging.getLogger("gpuclub")

# About half a millisecond of tokenizing: below this, a thread hop costs more than it saves.
OFF_LOOP_CHARS = 2_000
# Per chat message, for what the chat template wraps around its content: a start marker, the role, a separator
# and an end marker are 4 or 5 tokens in the Llama 3, ChatML (Qwen), Gemma and Mistral templates.
MESSAGE_ALLOWANCE = 6
# Once per chat request: the begin-of-text token, the opening of the reply (`<|im_start|>assistant\n`), and the
# short default system prompt some templates add when there is none (Llama 3.1's knowledge date, Qwen's "You are
# Qwen…"), about 25 tokens.
CHAT_ALLOWANCE = 32
# Once per request that offers tools: the template's preamble around the definitions ("You have access to the
# following functions…", the call format), 60 to 150 tokens in the Llama 3.1 and Qwen templates.
TOOLS_ALLOWANCE = 160
# Per prompt or input string of completions and embeddings: begin and end tokens ([CLS]/[SEP], <s>/</s>).
TEXT_ALLOWANCE = 2
# Per choice of an answer: the end-of-sequence token the provider counts, and the reasoning markers (`<think>`,
# `</think>`) a server strips from the text it returns.
COMPLETION_ALLOWANCE = 3
# How often a hub process looks for tokenizers attached elsewhere (the CLI, another replica): one small query.
REFRESH_SECONDS = 30.0


class Uncountable(Exception):
    """The tokenizer could not encode this text (a vocabulary without an unknown token, say)."""


class TokenCounter:
    """One loaded tokenizer."""

    def __init__(self, tokenizer: Tokenizer, sha256: str) -> None:
        self.tokenizer = tokenizer
        self.sha256 = sha256

    def count(self, text: str) -> int:
        """Tokens of `text`, without special tokens. Holds the GIL: for short texts only (see count_async)."""
        if not text:
            return 0
        # The library raises a bare Exception when it cannot encode.
        try:
            return len(self.tokenizer.encode(text, add_special_tokens=False))
        except Exception as exc:  # noqa: BLE001
            raise Uncountable(str(exc)) from None

    def count_all(self, texts: Sequence[str]) -> int:
        """Tokens of all `texts`; releases the GIL while it encodes, so it can run in a worker thread."""
        texts = [text for text in texts if text]
        if not texts:
            return 0
        try:
            return sum(len(encoding) for encoding in self.tokenizer.encode_batch(texts, add_special_tokens=False))
        except Exception as exc:  # noqa: BLE001
            raise Uncountable(str(exc)) from None

    async def count_async(self, texts: Sequence[str]) -> int:
        """Like count_all, off the event loop once the texts are long enough to stall it."""
        if sum(len(text) for text in texts) <= OFF_LOOP_CHARS:
            return self.count_all(texts)
        return await asyncio.to_thread(self.count_all, texts)


@dataclass
class _Prompt:
    texts: list[str] = field(default_factory=list)
    tokens: int = 0  # counted without the tokenizer: allowances and prompts sent as token ids


class _CannotCount(Exception):
    pass


def _text_or_ids(prompt: _Prompt, value: Any) -> None:
    """A completions `prompt` or an embeddings `input`: text, token ids, or a list of either."""
    if isinstance(value, str):
        prompt.texts.append(value)
        prompt.tokens += TEXT_ALLOWANCE
    elif isinstance(value, list) and value and all(isinstance(item, int) for item in value):
        prompt.tokens += len(value) + TEXT_ALLOWANCE
    elif isinstance(value, list) and all(isinstance(item, str | list) for item in value):
        for item in value:
            _text_or_ids(prompt, item)
    else:
        raise _CannotCount


def _content(prompt: _Prompt, content: Any) -> None:
    """A message's content: a string, or parts of which only text can be counted."""
    if content is None or isinstance(content, str):
        prompt.texts.append(content or "")
        return
    if not isinstance(content, list):
        raise _CannotCount
    for part in content:
        if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
            prompt.texts.append(part["text"])
        else:
            raise _CannotCount  # an image, audio or file: tokens the hub cannot know


def _chat(prompt: _Prompt, body: dict[str, Any]) -> None:
    messages = body["messages"]
    if not isinstance(messages, list):
        raise _CannotCount
    if "system" in body:  # Anthropic's Messages API keeps the system prompt beside the messages
        _content(prompt, body["system"])
        prompt.tokens += MESSAGE_ALLOWANCE
    for message in messages:
        if not isinstance(message, dict):
            raise _CannotCount
        _content(prompt, message.get("content"))
        for key in ("name", "reasoning_content"):
            if isinstance(message.get(key), str):
                prompt.texts.append(message[key])
        for call in message.get("tool_calls") or []:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                prompt.texts += [str(function.get("name") or ""), str(function.get("arguments") or "")]
    prompt.tokens += MESSAGE_ALLOWANCE * len(messages) + CHAT_ALLOWANCE
    # Templates write the tool definitions into the prompt as JSON; their layout varies, the count barely does.
    for key in ("tools", "functions"):
        if body.get(key):
            prompt.texts.append(json.dumps(body[key], ensure_ascii=False))
            prompt.tokens += TOOLS_ALLOWANCE


def _prompt(body: dict[str, Any]) -> _Prompt | None:
    prompt = _Prompt()
    try:
        if "messages" in body:
            _chat(prompt, body)
        elif "prompt" in body:
            _text_or_ids(prompt, body["prompt"])
            if isinstance(body.get("suffix"), str):
                prompt.texts.append(body["suffix"])
        elif "input" in body:
            _text_or_ids(prompt, body["input"])
        else:
            return None
    except _CannotCount:
        return None
    return prompt


def prompt_tokens(counter: TokenCounter, body: dict[str, Any]) -> int | None:
    """Tokens of a chat, completions or embeddings request's text plus the allowances; None when the body holds
    something the hub cannot count (images, audio, files, an unknown shape). Holds the GIL: prefer the async one."""
    prompt = _prompt(body)
    if prompt is None:
        return None
    try:
        return prompt.tokens + counter.count_all(prompt.texts)
    except Uncountable:
        return None


async def prompt_tokens_async(counter: TokenCounter, body: dict[str, Any]) -> int | None:
    """prompt_tokens, off the event loop when the text is long."""
    prompt = _prompt(body)
    if prompt is None:
        return None
    try:
        return prompt.tokens + await counter.count_async(prompt.texts)
    except Uncountable:
        return None


async def completion_tokens_async(counter: TokenCounter, texts: Sequence[str], *, choices: int = 1) -> int | None:
    """Tokens of what the answer said (content, reasoning, tool call names and arguments) plus the allowance per
    choice; None when the tokenizer cannot encode it."""
    try:
        return await counter.count_async(texts) + COMPLETION_ALLOWANCE * max(choices, 1)
    except Uncountable:
        return None


class Tokenizers:
    """Every attached tokenizer, loaded, by model name; one per hub process, built in create_app.

    `refresh` compares each model's hash in the database with what is loaded and loads only what changed: it runs
    at start-up, right after an admin attaches or detaches one on the page, and every REFRESH_SECONDS for changes
    made elsewhere (the command line, another replica).
    """

    def __init__(self, database: Database, interval: float = REFRESH_SECONDS, outage: Outage | None = None) -> None:
        self.database = database
        self.outage = outage or Outage()
        self.interval = interval
        self.counters: dict[str, TokenCounter] = {}
        self.broken: dict[str, str] = {}  # model → hash of a file that failed to load, so it is logged once
        self.lock = asyncio.Lock()
        self.task: asyncio.Task[None] | None = None

    def counter(self, model: str) -> TokenCounter | None:
        return self.counters.get(model)

    async def refresh(self) -> None:
        # The lock: a refresh from the page and one from the loop must not load the same file twice.
        async with self.lock, self.database.session() as db:
            wanted = await service.fingerprints(db)
            for model in set(self.counters) - set(wanted):
                del self.counters[model]
            for model, sha256 in wanted.items():
                loaded = self.counters.get(model)
                if (loaded is None or loaded.sha256 != sha256) and self.broken.get(model) != sha256:
                    await self._load(db, model)

    async def _load(self, db: AsyncSession, model: str) -> None:
        found = await service.content_of(db, model)
        if found is None:  # detached meanwhile
            self.counters.pop(model, None)
            return
        text, sha256 = found
        try:
            tokenizer = await asyncio.to_thread(Tokenizer.from_str, text)
        except Exception as exc:  # noqa: BLE001 - it loaded when attached; a library upgrade may refuse it
            log.error("the tokenizer of %s does not load (%s); its requests use the provider's count", model, exc)
            self.broken[model] = sha256
            self.counters.pop(model, None)
            return
        self.counters[model] = TokenCounter(tokenizer, sha256)
        self.broken.pop(model, None)

    async def start(self) -> None:
        """Load what is attached before the first request, then keep watching."""
        await self._refresh_logged()
        self.task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        await cancel(self.task)

    async def _refresh_logged(self) -> None:
        try:
            await self.refresh()
        except Exception as exc:
            if is_outage(exc):
                self.outage.noticed(exc)  # said once per outage; what is loaded keeps counting
            else:
                log.exception("loading tokenizers failed")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self._refresh_logged()
