"""Anthropic's Messages API through the hub (what Claude Code speaks), with the official `anthropic` SDK: answers
pass through unchanged, the prompt the member pays for includes what the server read from and wrote to its
prompt cache, and counting tokens is free."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types import Message, MessageParam

from tests.proxy.metering import (
    START,
    Club,
    assert_nothing_changed,
    balance,
    consumer,
    event_payloads,
    open_club,
    rows,
    sse_events,
)
from tests.support.cluster import Member

HELLO: list[MessageParam] = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def club(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Club]:
    with open_club(tmp_path_factory.mktemp("hub")) as running:
        yield running


def claude(club: Club, who: Member, **options: Any) -> anthropic.Anthropic:
    """The SDK as Claude Code is set up for the hub: ANTHROPIC_BASE_URL without /v1, the key sent as x-api-key."""
    options = {"api_key": who.key} | options
    return anthropic.Anthropic(base_url=club.hub.url, max_retries=0, timeout=30, **options)


def create(club: Club, who: Member, **request: Any) -> Message:
    with claude(club, who) as client:
        answer: Message = client.messages.create(**request)
        return answer


def test_a_message_comes_back_byte_for_byte_and_costs_its_reported_usage(club: Club) -> None:
    alice = consumer(club, "alice@lab.example.org")
    body = {"model": "m", "max_tokens": 5, "system": "be brief", "messages": HELLO, "temperature": 0, "top_k": 3}
    headers = {"x-api-key": alice.key, "anthropic-version": "2023-06-01", "anthropic-beta": "fake-beta-2025"}

    through = httpx.post(f"{club.hub.url}/v1/messages", headers=headers, json=body, timeout=30)
    forwarded = httpx.get(f"{club.full.url}/fake/stats").json()
    direct = httpx.post(f"{club.full.url}/v1/messages", json=body, timeout=30)

    assert through.status_code == 200
    assert through.content == direct.content
    assert forwarded["last_body"] == body
    assert forwarded["last_headers"] == {"anthropic-version": "2023-06-01", "anthropic-beta": "fake-beta-2025"}
    (row,) = rows(club, alice, 1)
    assert (row["endpoint"], row["model"], row["status"], row["stream"]) == ("messages", "m", 200, False)
    assert (row["prompt_tokens"], row["completion_tokens"], row["estimated"], row["disputed"]) == (4, 5, False, False)
    assert balance(club, alice) == START - 4 - 5


def test_the_anthropic_sdk_reads_a_message_through_the_hub(club: Club) -> None:
    bob = consumer(club, "bob@lab.example.org")

    answer = create(club, bob, model="m", max_tokens=4, messages=HELLO)

    assert [block.type for block in answer.content] == ["text"]
    assert answer.content[0].text == "tok0 tok1 tok2 tok3"  # type: ignore[union-attr]
    assert (answer.usage.input_tokens, answer.usage.output_tokens, answer.stop_reason) == (2, 4, "end_turn")
    (row,) = rows(club, bob, 1)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (2, 4)
    assert balance(club, bob) == START - 6


def test_a_key_as_a_bearer_token_works_as_well_as_x_api_key(club: Club) -> None:
    carol = consumer(club, "carol@lab.example.org")

    with claude(club, carol, api_key=None, auth_token=carol.key) as client:  # Authorization: Bearer <key>
        answer = client.messages.create(model="m", max_tokens=2, messages=HELLO)

    assert answer.content[0].text == "tok0 tok1"  # type: ignore[union-attr]
    assert [row["endpoint"] for row in rows(club, carol, 1)] == ["messages"]


def test_a_streamed_message_arrives_event_by_event_unchanged(club: Club) -> None:
    dave = consumer(club, "dave@lab.example.org")
    body = {"model": "m", "max_tokens": 6, "messages": HELLO, "stream": True}

    with httpx.stream(
        "POST", f"{club.hub.url}/v1/messages", headers={"x-api-key": dave.key}, json=body, timeout=30
    ) as response:
        through = response.read()
    direct = httpx.post(f"{club.full.url}/v1/messages", json=body, timeout=30).content

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert sse_events(through) == sse_events(direct)
    kinds = [event["type"] for event in event_payloads(through)]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("content_block_delta") == 6
    (row,) = rows(club, dave, 1)
    assert (row["endpoint"], row["stream"], row["prompt_tokens"], row["completion_tokens"]) == ("messages", True, 2, 6)
    assert row["estimated"] is False and row["ttft_ms"] is not None
    assert balance(club, dave) == START - 8


def test_the_anthropic_sdk_streams_a_message_and_its_final_usage(club: Club) -> None:
    erin = consumer(club, "erin@lab.example.org")

    with claude(club, erin) as client, client.messages.stream(model="m", max_tokens=3, messages=HELLO) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()

    assert pieces == ["tok0", " tok1", " tok2"]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (2, 3)
    (row,) = rows(club, erin, 1)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (2, 3)
    assert balance(club, erin) == START - 5


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_the_prompt_billed_includes_what_was_read_from_and_written_to_the_cache(club: Club, stream: bool) -> None:
    frank = consumer(club, f"frank-{stream}@lab.example.org")
    # Ten words: the server says it read six from its cache and wrote three, so one was new input.
    prompt = [{"role": "user", "content": "one two three four five six seven eight nine ten"}]
    body = {"model": "m", "max_tokens": 2, "messages": prompt, "stream": stream}
    body["fake"] = {"cache_read": 6, "cache_creation": 3}

    answer = httpx.post(f"{club.hub.url}/v1/messages", headers={"x-api-key": frank.key}, json=body, timeout=30)

    assert answer.status_code == 200
    usage = event_payloads(answer.content)[0]["message"]["usage"] if stream else answer.json()["usage"]
    assert (usage["input_tokens"], usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"]) == (1, 6, 3)
    (row,) = rows(club, frank, 1)
    assert (row["prompt_tokens"], row["completion_tokens"], row["disputed"]) == (10, 2, False)
    assert balance(club, frank) == START - 12


def test_a_report_of_a_million_output_tokens_for_ten_bills_ten_and_records_the_dispute(club: Club) -> None:
    gina = consumer(club, "gina@lab.example.org")
    lie = {"input_tokens": 2, "output_tokens": 1_000_000}

    answer = create(club, gina, model="m", max_tokens=10, messages=HELLO, extra_body={"fake": {"usage": lie}})

    assert answer.usage.output_tokens == 1_000_000  # the member sees what the server said
    (row,) = rows(club, gina, 1)
    assert (row["prompt_tokens"], row["completion_tokens"], row["disputed"]) == (2, 10, True)
    assert (row["reported_prompt_tokens"], row["reported_completion_tokens"]) == (2, 1_000_000)
    assert balance(club, gina) == START - 12


def test_a_streamed_lie_in_message_start_and_message_delta_is_bounded_the_same_way(club: Club) -> None:
    hana = consumer(club, "hana@lab.example.org")
    lie = {"input_tokens": 10**12, "cache_read_input_tokens": 10**12, "output_tokens": 10**12}

    with (
        claude(club, hana) as client,
        client.messages.stream(model="m", max_tokens=4, messages=HELLO, extra_body={"fake": {"usage": lie}}) as stream,
    ):
        text = "".join(stream.text_stream)

    assert text == "tok0 tok1 tok2 tok3"
    (row,) = rows(club, hana, 1)
    assert row["disputed"] is True and row["reported_prompt_tokens"] == 2 * 10**12
    assert row["completion_tokens"] == 4
    assert 0 < row["prompt_tokens"] < 1000  # the bytes the hub forwarded, plus the template allowance
    assert balance(club, hana) == START - 4 - row["prompt_tokens"]


def test_counting_tokens_answers_and_costs_nothing(club: Club) -> None:
    ivy = consumer(club, "ivy@lab.example.org")

    with claude(club, ivy) as client:
        counted = client.messages.count_tokens(model="m", system="be brief", messages=HELLO)

    assert counted.input_tokens == 4
    assert_nothing_changed(club, ivy, recorded=["messages/count_tokens"])  # logged, but free


def test_counting_tokens_is_passed_through_unchanged(club: Club) -> None:
    jack = consumer(club, "jack@lab.example.org")
    body = {"model": "m", "messages": HELLO, "tools": [{"name": "noop", "input_schema": {"type": "object"}}]}

    through = httpx.post(
        f"{club.hub.url}/v1/messages/count_tokens",
        headers={"x-api-key": jack.key, "anthropic-version": "2023-06-01"},
        json=body,
        timeout=30,
    )

    assert through.status_code == 200 and through.json() == {"input_tokens": 2}
    assert httpx.get(f"{club.full.url}/fake/stats").json()["last_body"] == body


def test_a_message_without_max_tokens_is_refused_in_anthropics_shape_before_it_reaches_a_gpu(club: Club) -> None:
    kim = consumer(club, "kim@lab.example.org")
    before = httpx.get(f"{club.full.url}/fake/stats").json()["requests"]

    refused = httpx.post(
        f"{club.hub.url}/v1/messages",
        headers={"x-api-key": kim.key},
        json={"model": "m", "messages": HELLO},
        timeout=30,
    )

    assert refused.status_code == 400
    assert refused.json()["type"] == "error"
    assert refused.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in refused.json()["error"]["message"]
    assert httpx.get(f"{club.full.url}/fake/stats").json()["requests"] == before
    assert_nothing_changed(club, kim)


def test_the_sdk_sees_anthropics_own_errors_for_a_bad_key_and_an_unknown_model(club: Club) -> None:
    liam = consumer(club, "liam@lab.example.org")

    with claude(club, liam, api_key="gpc_wrong") as client, pytest.raises(anthropic.AuthenticationError) as bad_key:
        client.messages.create(model="m", max_tokens=2, messages=HELLO)
    with pytest.raises(anthropic.NotFoundError) as unknown:
        create(club, liam, model="claude-9", max_tokens=2, messages=HELLO)

    assert bad_key.value.status_code == 401
    assert bad_key.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert unknown.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert "claude-9" in unknown.value.body["error"]["message"]  # type: ignore[index]
    assert_nothing_changed(club, liam)


def test_an_error_from_the_server_reaches_the_member_in_anthropics_shape(club: Club) -> None:
    mona = consumer(club, "mona@lab.example.org")

    with pytest.raises(anthropic.BadRequestError) as refused:
        create(club, mona, model="m", max_tokens=2, messages=HELLO, extra_body={"fake": {"status": 400}})

    assert refused.value.body == {  # the server's own answer, unchanged
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "fake failure with status 400"},
    }
    (row,) = rows(club, mona, 1)
    assert (row["endpoint"], row["status"]) == ("messages", 400)
    assert balance(club, mona) == START
