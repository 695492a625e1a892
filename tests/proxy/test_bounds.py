"""The hub's bounds on a provider's report, on the shapes real servers (and liars) send."""

from __future__ import annotations

import json
from typing import Any

from hub.proxy.apis.openai import ChatCompletions
from hub.proxy.bounds import Limits, bill
from hub.proxy.meter import Relayed, Report, StreamMeter, read_answer

API = ChatCompletions()
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}


def limits(body: dict[str, Any]) -> Limits:
    return Limits.of(body, len(json.dumps(body)), default_max_tokens=1024, embeddings=False)


def test_a_made_up_choice_index_buys_no_allowance() -> None:
    answer = read_answer(
        API,
        b'{"choices":[{"index":63,"message":{"content":""}}],"usage":{"completion_tokens":1024}}',
        "application/json",
    )

    billed = bill(limits(CHAT), Report(5, 1024), answer.relayed)

    assert (billed.counts.completion_tokens, billed.disputed) == (16, True)  # one choice was asked for


def test_tool_calls_count_their_names_and_arguments() -> None:
    call = {"function": {"name": "get_weather", "arguments": '{"city": "Lyon"}'}}
    answer = read_answer(
        API, json.dumps({"choices": [{"index": 0, "message": {"tool_calls": [call]}}]}).encode(), "application/json"
    )

    billed = bill(limits(CHAT), Report(5, 20), answer.relayed)

    assert (billed.counts.completion_tokens, billed.disputed) == (20, False)
    assert answer.relayed.text_bytes == len("get_weather") + len('{"city": "Lyon"}')


def test_reasoning_counts_as_relayed_text() -> None:
    meter = StreamMeter(API, strip_usage=False)
    meter.feed(b'data: {"choices":[{"index":0,"delta":{"reasoning_content":"' + b"r" * 300 + b'"}}]}\n\n')

    billed = bill(limits(CHAT), Report(5, 90), meter.relayed)

    assert (billed.counts.completion_tokens, billed.disputed) == (90, False)


def test_several_prompts_of_a_completions_request_each_get_their_answers() -> None:
    body = {"model": "m", "prompt": ["a", "b", "c", "d"], "max_tokens": 16}

    assert limits(body).completion == 64 and limits(body).choices == 4


def test_an_event_split_into_tiny_pieces_is_forwarded_whole_and_once() -> None:
    event = b'data: {"choices":[{"index":0,"delta":{"content":"' + b"z" * 5000 + b'"}}]}\r\n\r\n'
    meter = StreamMeter(API, strip_usage=True)

    out = b"".join(meter.feed(event[i : i + 3]) for i in range(0, len(event), 3))

    assert out == event
    assert meter.relayed.text_chars == 5000


def test_many_small_fragments_are_kept_as_one_text_for_the_tokenizer() -> None:
    relayed = Relayed.keeping(True)
    meter = StreamMeter(API, strip_usage=False, relayed=relayed)
    for _ in range(2000):
        meter.feed(b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n')

    assert relayed.texts is not None and len(relayed.texts) <= 257
    assert "".join(relayed.texts) == "a" * 2000


def test_the_last_event_is_held_back_and_nothing_after_it_is_kept() -> None:
    meter = StreamMeter(API, strip_usage=False)
    first = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'

    out = meter.feed(first + b"data: [DONE]\n\n")
    for _ in range(100):  # a provider flooding after the end
        out += meter.feed(b'data: {"choices":[{"index":0,"delta":{"content":"' + b"x" * 60_000 + b'"}}]}\n\n')

    assert out == first
    assert bytes(meter.held) == b"data: [DONE]\n\n"
    assert meter.flush() == b"data: [DONE]\n\n"
    assert meter.relayed.text_chars == 2
