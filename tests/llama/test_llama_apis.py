"""A member's tools, through the hub, get what llama.cpp's `llama-server` itself answers, and pay what it reported.

The official `openai` and `anthropic` SDKs talk to the hub, a real `gpuclub-agent` forwards to a real llama-server
with the tiny model; the same SDK calls made to llama-server directly say what the answer should be. At
temperature 0 the tiny model writes the same text every time. One token costs one credit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anthropic
import httpx
import openai
import pytest

from tests.llama.conftest import Club

pytestmark = pytest.mark.llama
T = TypeVar("T")
PROMPT = "Say hello to the tiny model."
GREEDY = {"temperature": 0}  # the anthropic SDK no longer has a parameter for it; llama-server still reads it
MAX_TOKENS = 12  # within the hub's allowance for tokens that print nothing, whatever the tiny model writes


@dataclass(frozen=True)
class Spent:
    """One request through the hub: its usage row, and how many credits it cost the member."""

    row: dict[str, Any]
    credits: float


def spend(club: Club, ask: Callable[[], T]) -> tuple[T, Spent]:
    """Run `ask` against the hub; wait for its usage row, which is written with its charge."""
    before, seen = club.credits(), len(club.rows(0))
    answer = ask()
    rows = club.rows(seen + 1)
    assert len(rows) == seen + 1, f"expected one new usage row, found {rows[seen:]}"
    return answer, Spent(rows[seen], before - club.credits())


def openai_sdk(club: Club, *, direct: bool = False) -> openai.OpenAI:
    if direct:
        return openai.OpenAI(base_url=f"{club.llama.url}/v1", api_key="not-needed", max_retries=0, timeout=60)
    return openai.OpenAI(base_url=f"{club.hub.url}/v1", api_key=club.alice.key, max_retries=0, timeout=60)


def anthropic_sdk(club: Club, *, direct: bool = False) -> anthropic.Anthropic:
    # Anthropic's SDK adds /v1 itself and sends the key as `x-api-key`.
    if direct:
        return anthropic.Anthropic(base_url=club.llama.url, api_key="not-needed", max_retries=0, timeout=60)
    return anthropic.Anthropic(base_url=club.hub.url, api_key=club.alice.key, max_retries=0, timeout=60)


def test_llama_server_itself_answers_chat_responses_and_messages_with_the_tiny_model(club: Club) -> None:
    with openai_sdk(club, direct=True) as sdk:
        chat = sdk.chat.completions.create(
            model=club.llama.model, messages=[{"role": "user", "content": PROMPT}], max_tokens=MAX_TOKENS
        )
        response = sdk.responses.create(model=club.llama.model, input=PROMPT, max_output_tokens=MAX_TOKENS)
    with anthropic_sdk(club, direct=True) as sdk_a:
        message = sdk_a.messages.create(
            model=club.llama.model, max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": PROMPT}]
        )

    assert chat.choices[0].message.content and chat.usage and chat.usage.completion_tokens > 0
    assert response.output_text and response.usage and response.usage.output_tokens > 0
    assert message.content and message.content[0].type == "text" and message.usage.output_tokens > 0


def test_the_hub_lists_each_model_with_the_apis_its_llama_server_speaks(club: Club) -> None:
    listing = httpx.get(f"{club.hub.url}/v1/models", headers={"authorization": f"Bearer {club.alice.key}"})

    apis = {model["id"]: set(model["apis"]) for model in listing.json()["data"]}
    assert apis.keys() == {club.llama.model, club.reranker.model}
    # The first three are taken as served (as before probing); rerank and audio answer 501 without their flags.
    served = {"chat/completions", "completions", "embeddings", "responses", "messages", "messages/count_tokens"}
    assert apis[club.llama.model] == served
    assert apis[club.reranker.model] == served | {"rerank"}


def test_a_chat_completion_through_the_hub_is_the_servers_own_and_bills_its_usage(club: Club) -> None:
    def ask(sdk: openai.OpenAI) -> Any:
        return sdk.chat.completions.create(
            model=club.llama.model,
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=MAX_TOKENS,
            temperature=0,
        )

    with openai_sdk(club, direct=True) as direct:
        expected = ask(direct)
    with openai_sdk(club) as sdk:
        answer, spent = spend(club, lambda: ask(sdk))

    assert answer.choices[0].message.content == expected.choices[0].message.content
    assert answer.usage is not None and answer.usage.prompt_tokens == expected.usage.prompt_tokens
    billed = (answer.usage.prompt_tokens, answer.usage.completion_tokens)
    assert (spent.row["prompt_tokens"], spent.row["completion_tokens"]) == billed
    assert spent.row["endpoint"] == "chat/completions" and not spent.row["estimated"]
    assert spent.credits == sum(billed)


def test_a_response_through_the_hub_is_the_servers_own_and_bills_its_usage(club: Club) -> None:
    def ask(sdk: openai.OpenAI) -> Any:
        return sdk.responses.create(model=club.llama.model, input=PROMPT, max_output_tokens=MAX_TOKENS, temperature=0)

    with openai_sdk(club, direct=True) as direct:
        expected = ask(direct)
    with openai_sdk(club) as sdk:
        answer, spent = spend(club, lambda: ask(sdk))

    assert answer.output_text == expected.output_text
    assert answer.usage is not None and answer.usage.input_tokens == expected.usage.input_tokens
    billed = (answer.usage.input_tokens, answer.usage.output_tokens)
    assert (spent.row["prompt_tokens"], spent.row["completion_tokens"]) == billed
    assert spent.row["endpoint"] == "responses" and not spent.row["stream"] and not spent.row["estimated"]
    assert spent.credits == sum(billed)


def streamed_response(sdk: openai.OpenAI, model: str) -> tuple[str, Any]:
    """The text of a streamed response, from its deltas, and the usage of its `response.completed` event."""
    deltas: list[str] = []
    usage: Any = None
    with sdk.responses.create(
        model=model, input=PROMPT, max_output_tokens=MAX_TOKENS, temperature=0, stream=True
    ) as events:
        for event in events:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
            elif event.type == "response.completed":
                usage = event.response.usage
    return "".join(deltas), usage


def test_a_streamed_response_through_the_hub_is_the_servers_own_and_bills_its_usage(club: Club) -> None:
    with openai_sdk(club, direct=True) as direct:
        expected_text, expected_usage = streamed_response(direct, club.llama.model)
    with openai_sdk(club) as sdk:
        (text, usage), spent = spend(club, lambda: streamed_response(sdk, club.llama.model))

    assert text == expected_text and text
    assert usage is not None and usage.input_tokens == expected_usage.input_tokens
    assert (spent.row["prompt_tokens"], spent.row["completion_tokens"]) == (usage.input_tokens, usage.output_tokens)
    assert spent.row["endpoint"] == "responses" and spent.row["stream"] and not spent.row["estimated"]
    assert spent.credits == usage.input_tokens + usage.output_tokens


def prompt_tokens(usage: anthropic.types.Usage | anthropic.types.MessageDeltaUsage) -> int:
    """What the hub bills as prompt: input tokens, read from the cache or written to it included."""
    return (usage.input_tokens or 0) + (usage.cache_read_input_tokens or 0) + (usage.cache_creation_input_tokens or 0)


def test_a_message_through_the_hub_is_the_servers_own_and_bills_its_usage(club: Club) -> None:
    def ask(sdk: anthropic.Anthropic) -> anthropic.types.Message:
        return sdk.messages.create(
            model=club.llama.model,
            max_tokens=MAX_TOKENS,
            system="You are tiny.",
            extra_body=GREEDY,
            messages=[{"role": "user", "content": PROMPT}],
        )

    with anthropic_sdk(club, direct=True) as direct:
        expected = ask(direct)
    with anthropic_sdk(club) as sdk:
        answer, spent = spend(club, lambda: ask(sdk))

    assert [block.model_dump() for block in answer.content] == [block.model_dump() for block in expected.content]
    assert prompt_tokens(answer.usage) == prompt_tokens(expected.usage)
    billed = (prompt_tokens(answer.usage), answer.usage.output_tokens)
    assert (spent.row["prompt_tokens"], spent.row["completion_tokens"]) == billed
    assert spent.row["endpoint"] == "messages" and not spent.row["estimated"]
    assert spent.credits == sum(billed)


def streamed_message(sdk: anthropic.Anthropic, model: str) -> tuple[str, anthropic.types.Message]:
    with sdk.messages.stream(
        model=model, max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": PROMPT}], extra_body=GREEDY
    ) as stream:
        text = "".join(stream.text_stream)
        return text, stream.get_final_message()


def test_a_streamed_message_through_the_hub_is_the_servers_own_and_bills_its_usage(club: Club) -> None:
    with anthropic_sdk(club, direct=True) as direct:
        expected_text, expected = streamed_message(direct, club.llama.model)
    with anthropic_sdk(club) as sdk:
        (text, final), spent = spend(club, lambda: streamed_message(sdk, club.llama.model))

    assert text == expected_text and text
    assert [block.model_dump() for block in final.content] == [block.model_dump() for block in expected.content]
    billed = (prompt_tokens(final.usage), final.usage.output_tokens)
    assert billed[0] == prompt_tokens(expected.usage) and billed[0] > 0
    assert (spent.row["prompt_tokens"], spent.row["completion_tokens"]) == billed
    assert spent.row["endpoint"] == "messages" and spent.row["stream"] and not spent.row["estimated"]
    assert spent.credits == sum(billed)


def test_counting_tokens_through_the_hub_answers_like_the_server_and_costs_nothing(club: Club) -> None:
    def count(sdk: anthropic.Anthropic) -> int:
        counted = sdk.messages.count_tokens(model=club.llama.model, messages=[{"role": "user", "content": PROMPT}])
        return counted.input_tokens

    with anthropic_sdk(club, direct=True) as direct:
        expected = count(direct)
    before, chats = club.credits(), len(club.rows(0, "chat/completions"))
    with anthropic_sdk(club) as sdk, openai_sdk(club) as chat:
        counted = count(sdk)
        # A billed request after it: once its charge is written, so is anything the count cost (in order).
        answer = chat.chat.completions.create(
            model=club.llama.model, messages=[{"role": "user", "content": PROMPT}], max_tokens=MAX_TOKENS
        )
    assert len(club.rows(chats + 1, "chat/completions")) == chats + 1

    assert counted == expected and counted > 0
    assert answer.usage is not None
    assert before - club.credits() == answer.usage.prompt_tokens + answer.usage.completion_tokens


RERANK = {"query": "hello", "documents": ["hello there", "the lazy dog", "a club of friends"]}


def test_a_rerank_through_the_hub_is_the_servers_own_and_bills_its_input_tokens(club: Club) -> None:
    expected = httpx.post(f"{club.reranker.url}/v1/rerank", json={"model": club.reranker.model, **RERANK}).json()
    headers = {"authorization": f"Bearer {club.alice.key}"}

    answers, spent = spend(
        club,
        lambda: httpx.post(f"{club.hub.url}/rerank", json={"model": club.reranker.model, **RERANK}, headers=headers),
    )

    assert answers.status_code == 200 and answers.json()["results"] == expected["results"]
    assert (spent.row["prompt_tokens"], spent.row["completion_tokens"]) == (expected["usage"]["prompt_tokens"], 0)
    assert spent.row["endpoint"] == "rerank" and not spent.row["estimated"]
    assert spent.credits == expected["usage"]["prompt_tokens"]


def test_a_rerank_of_a_model_whose_server_cannot_rerank_says_which_apis_it_has(club: Club) -> None:
    headers = {"authorization": f"Bearer {club.alice.key}"}
    before = club.credits()

    refused = httpx.post(f"{club.hub.url}/v1/rerank", json={"model": club.llama.model, **RERANK}, headers=headers)

    assert refused.status_code == 404
    error = refused.json()["error"]
    assert error["code"] == "model_not_found" and "/v1/rerank" in error["message"]
    assert "/v1/responses" in error["message"] and "/v1/messages" in error["message"]
    assert club.credits() == before
