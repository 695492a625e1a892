"""The hub's own count: what the tokenizers library counts, plus the named allowances, for each kind of body."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlmodel.ext.asyncio.session import AsyncSession
from tokenizers import Tokenizer

from hub.db import Database
from hub.tokenizers import service
from hub.tokenizers.counting import (
    CHAT_ALLOWANCE,
    COMPLETION_ALLOWANCE,
    MESSAGE_ALLOWANCE,
    OFF_LOOP_CHARS,
    TEXT_ALLOWANCE,
    TOOLS_ALLOWANCE,
    TokenCounter,
    Tokenizers,
    completion_tokens_async,
    prompt_tokens,
    prompt_tokens_async,
)
from tests.tokenizers.making import byte_level_bpe, tokenizer_json, word_level

TEXTS = [
    "Providers are untrusted: the hub counts tokens itself.",
    "Words it never saw: zyzzyva, naïve café, 東京, 😀, tabs\tand\nnewlines.",
    "",
]


@pytest.fixture
def library(tmp_path: Path) -> Tokenizer:
    """The tokenizer as the library itself loads it from the file an admin would upload."""
    path = tmp_path / "tokenizer.json"
    path.write_bytes(tokenizer_json(byte_level_bpe()))
    return Tokenizer.from_file(str(path))


@pytest.fixture
def counter(library: Tokenizer) -> TokenCounter:
    return TokenCounter(Tokenizer.from_str(library.to_str()), sha256="test")


def tokens(library: Tokenizer, *texts: str) -> int:
    return sum(len(library.encode(text, add_special_tokens=False).ids) for text in texts)


@pytest.mark.parametrize("text", TEXTS)
def test_the_counter_counts_what_the_tokenizers_library_counts_without_special_tokens(
    counter: TokenCounter, library: Tokenizer, text: str
) -> None:
    assert counter.count(text) == tokens(library, text)
    assert len(library.encode(text).ids) == tokens(library, text) + 2  # the file's own <s> … </s>


def test_a_chat_body_counts_every_messages_text_plus_the_template_allowances(
    counter: TokenCounter, library: Tokenizer
) -> None:
    body = {
        "model": "llama-3-8b",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [{"type": "text", "text": TEXTS[0]}, {"type": "text", "text": TEXTS[1]}]},
            {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "content": "42", "name": "f"},
        ],
        "max_tokens": 100,
    }

    expected = tokens(library, "You are terse.", TEXTS[0], TEXTS[1], "f", "{}", "42", "f")
    assert prompt_tokens(counter, body) == expected + 4 * MESSAGE_ALLOWANCE + CHAT_ALLOWANCE


def test_tool_definitions_count_as_their_json_and_the_templates_preamble(
    counter: TokenCounter, library: Tokenizer
) -> None:
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    plain: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}]}

    without = prompt_tokens(counter, plain)

    with_tools = prompt_tokens(counter, plain | {"tools": tools})

    assert without is not None and with_tools == without + tokens(library, json.dumps(tools)) + TOOLS_ALLOWANCE


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
    ],
    ids=["image", "audio"],
)
def test_a_chat_with_an_image_or_audio_cannot_be_counted(counter: TokenCounter, part: dict[str, Any]) -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "what is this?"}, part]}]}

    assert prompt_tokens(counter, body) is None


@pytest.mark.parametrize(
    ("prompt", "texts", "ids", "strings"),
    [
        (TEXTS[0], [TEXTS[0]], 0, 1),
        ([TEXTS[0], TEXTS[1]], [TEXTS[0], TEXTS[1]], 0, 2),
        ([101, 7592, 102], [], 3, 1),
        ([[1, 2], [3, 4, 5]], [], 5, 2),
    ],
    ids=["string", "strings", "token-ids", "lists-of-token-ids"],
)
@pytest.mark.parametrize("key", ["prompt", "input"])
def test_completions_and_embeddings_count_text_and_token_ids(
    counter: TokenCounter, library: Tokenizer, key: str, prompt: Any, texts: list[str], ids: int, strings: int
) -> None:
    body = {"model": "m", key: prompt}

    assert prompt_tokens(counter, body) == tokens(library, *texts) + ids + strings * TEXT_ALLOWANCE


@pytest.mark.parametrize(
    "body",
    [{"model": "m"}, {"messages": "hello"}, {"prompt": {"text": "x"}}, {"input": [1, "two"]}],
    ids=["no-text", "messages-not-a-list", "prompt-object", "mixed-input"],
)
def test_a_body_of_an_unknown_shape_cannot_be_counted(counter: TokenCounter, body: dict[str, Any]) -> None:
    assert prompt_tokens(counter, body) is None


async def test_a_long_prompt_counted_off_the_event_loop_counts_the_same(counter: TokenCounter) -> None:
    text = " ".join(TEXTS) * (100_000 // len(" ".join(TEXTS)))
    body = {"messages": [{"role": "user", "content": text}, {"role": "user", "content": "and a short one"}]}
    assert len(text) > OFF_LOOP_CHARS

    assert await prompt_tokens_async(counter, body) == prompt_tokens(counter, body)


async def test_an_answers_tokens_are_its_text_plus_an_allowance_per_choice(
    counter: TokenCounter, library: Tokenizer
) -> None:
    counted = await completion_tokens_async(counter, [TEXTS[0], TEXTS[1]], choices=2)

    assert counted == tokens(library, TEXTS[0], TEXTS[1]) + 2 * COMPLETION_ALLOWANCE


async def test_text_the_tokenizer_cannot_encode_is_not_counted() -> None:
    strict = TokenCounter(word_level(["hello"], unknown=False), sha256="test")

    assert prompt_tokens(strict, {"prompt": "hello stranger"}) is None
    assert await completion_tokens_async(strict, ["stranger"]) is None


async def test_the_hub_counts_with_what_is_attached_and_stops_when_it_is_detached(
    database: Database, db: AsyncSession
) -> None:
    tokenizers = Tokenizers(database)
    words = word_level(["hub", "counts"])
    await service.attach(db, None, "llama-3-8b", tokenizer_json(words))
    assert tokenizers.counter("llama-3-8b") is None

    await tokenizers.refresh()
    counter = tokenizers.counter("llama-3-8b")
    assert counter is not None and counter.count("hub counts hub") == 3

    await service.attach(db, None, "llama-3-8b", tokenizer_json(byte_level_bpe()))
    await tokenizers.refresh()
    replaced = tokenizers.counter("llama-3-8b")
    assert replaced is not None and replaced.count("hub counts hub") > 3

    await service.detach(db, None, "llama-3-8b")
    await tokenizers.refresh()
    assert tokenizers.counter("llama-3-8b") is None
    assert tokenizers.counter("qwen-2.5-7b") is None


async def test_starting_loads_what_is_attached_before_the_first_request(database: Database, db: AsyncSession) -> None:
    await service.attach(db, None, "llama-3-8b", tokenizer_json())
    tokenizers = Tokenizers(database, interval=3600)

    await tokenizers.start()
    try:
        assert tokenizers.counter("llama-3-8b") is not None
    finally:
        await tokenizers.stop()
