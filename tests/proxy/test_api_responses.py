"""OpenAI's Responses API through the hub (what Codex CLI and the Agents SDK speak): answers pass through unchanged,
the member pays for the usage the server reported, and never more than the hub can believe."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response

from tests.proxy.metering import START, Club, balance, consumer, event_payloads, open_club, rows, sse_events
from tests.support.cluster import Member


@pytest.fixture(scope="module")
def club(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Club]:
    with open_club(tmp_path_factory.mktemp("hub")) as running:
        yield running


def sdk(club: Club, who: Member) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{club.hub.url}/v1", api_key=who.key, max_retries=0, timeout=30)


def create(club: Club, who: Member, **request: Any) -> Response:
    with sdk(club, who) as client:
        answer: Response = client.responses.create(**request)
        return answer


def stream(club: Club, who: Member, **request: Any) -> tuple[list[str], Response]:
    """The text deltas of a streamed response as the SDK hands them over, and the response it puts together."""
    with sdk(club, who) as client, client.responses.stream(**request) as events:
        deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
        return deltas, events.get_final_response()


def both_ways(club: Club, who: Member, body: dict[str, Any]) -> tuple[httpx.Response, httpx.Response]:
    """The same request through the hub and straight to the server."""
    through = httpx.post(
        f"{club.hub.url}/v1/responses", headers={"Authorization": f"Bearer {who.key}"}, json=body, timeout=30
    )
    direct = httpx.post(f"{club.full.url}/v1/responses", json=body, timeout=30)
    return through, direct


def test_a_response_comes_back_byte_for_byte_and_costs_its_reported_usage(club: Club) -> None:
    alice = consumer(club, "alice@lab.example.org")
    body = {"model": "m", "input": "three little words", "max_output_tokens": 5, "store": False, "top_p": 0.5}

    through, direct = both_ways(club, alice, body)

    assert through.status_code == 200
    assert through.headers["content-type"].startswith("application/json")
    assert through.content == direct.content
    assert httpx.get(f"{club.full.url}/fake/stats").json()["last_body"] == body  # forwarded as it was sent
    (row,) = rows(club, alice, 1)
    assert (row["endpoint"], row["model"], row["status"], row["stream"]) == ("responses", "m", 200, False)
    assert (row["prompt_tokens"], row["completion_tokens"], row["estimated"], row["disputed"]) == (3, 5, False, False)
    assert balance(club, alice) == START - 3 - 5


def test_the_openai_sdk_reads_a_response_through_the_hub(club: Club) -> None:
    bob = consumer(club, "bob@lab.example.org")

    answer = create(club, bob, model="m", input="hello there", max_output_tokens=4)

    assert answer.output_text == "tok0 tok1 tok2 tok3"
    assert answer.usage is not None and (answer.usage.input_tokens, answer.usage.output_tokens) == (2, 4)
    (row,) = rows(club, bob, 1)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (2, 4)
    assert balance(club, bob) == START - 6


def test_a_streamed_response_arrives_event_by_event_unchanged(club: Club) -> None:
    carol = consumer(club, "carol@lab.example.org")
    body = {"model": "m", "input": "hi there you", "max_output_tokens": 6, "stream": True}

    with httpx.stream(
        "POST",
        f"{club.hub.url}/v1/responses",
        headers={"Authorization": f"Bearer {carol.key}"},
        json=body,
        timeout=30,
    ) as response:
        through = response.read()
    direct = httpx.post(f"{club.full.url}/v1/responses", json=body, timeout=30).content

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert sse_events(through) == sse_events(direct)
    kinds = [event["type"] for event in event_payloads(through)]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert kinds.count("response.output_text.delta") == 6
    (row,) = rows(club, carol, 1)
    assert (row["endpoint"], row["stream"], row["prompt_tokens"], row["completion_tokens"]) == ("responses", True, 3, 6)
    assert row["estimated"] is False and row["ttft_ms"] is not None
    assert balance(club, carol) == START - 3 - 6


def test_the_openai_sdk_streams_a_response_and_gets_its_usage_at_the_end(club: Club) -> None:
    dave = consumer(club, "dave@lab.example.org")

    deltas, final = stream(club, dave, model="m", input="one two", max_output_tokens=3)

    assert deltas == ["tok0", " tok1", " tok2"]
    assert final.output_text == "tok0 tok1 tok2"
    assert final.usage is not None and final.usage.output_tokens == 3
    (row,) = rows(club, dave, 1)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (2, 3)
    assert balance(club, dave) == START - 5


def test_a_request_without_max_output_tokens_is_billed_what_the_server_wrote(club: Club) -> None:
    erin = consumer(club, "erin@lab.example.org")

    answer = create(club, erin, model="m", input="hi")  # the fake writes 8 tokens by default

    assert answer.output_text == "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7"
    (row,) = rows(club, erin, 1)
    assert (row["prompt_tokens"], row["completion_tokens"], row["disputed"]) == (1, 8, False)
    assert balance(club, erin) == START - 9


def test_a_report_of_a_million_output_tokens_for_ten_bills_ten_and_records_the_dispute(club: Club) -> None:
    frank = consumer(club, "frank@lab.example.org")
    lie = {"input_tokens": 3, "output_tokens": 1_000_000, "total_tokens": 1_000_003}

    answer = create(
        club, frank, model="m", input="hello there you", max_output_tokens=10, extra_body={"fake": {"usage": lie}}
    )

    assert answer.output_text == "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 tok8 tok9"
    assert answer.usage is not None and answer.usage.output_tokens == 1_000_000  # the member sees what was said
    (row,) = rows(club, frank, 1)
    assert (row["prompt_tokens"], row["completion_tokens"], row["disputed"]) == (3, 10, True)
    assert (row["reported_prompt_tokens"], row["reported_completion_tokens"]) == (3, 1_000_000)
    assert balance(club, frank) == START - 13


def test_a_streamed_lie_on_response_completed_is_bounded_the_same_way(club: Club) -> None:
    gina = consumer(club, "gina@lab.example.org")
    lie = {"input_tokens": 10**12, "output_tokens": 10**12, "total_tokens": 2 * 10**12}

    deltas, _ = stream(club, gina, model="m", input="hi", max_output_tokens=4, extra_body={"fake": {"usage": lie}})

    assert "".join(deltas) == "tok0 tok1 tok2 tok3"
    (row,) = rows(club, gina, 1)
    assert row["disputed"] is True and row["reported_prompt_tokens"] == 10**12
    assert row["completion_tokens"] == 4
    assert 0 < row["prompt_tokens"] < 1000  # the bytes the hub forwarded, plus the template allowance
    assert balance(club, gina) == START - 4 - row["prompt_tokens"]


def test_output_above_the_bytes_relayed_is_bounded_by_them(club: Club) -> None:
    hana = consumer(club, "hana@lab.example.org")

    # max_output_tokens allows 2,000, but the answer is five short words: a claim of 1,500 cannot be true.
    answer = create(
        club,
        hana,
        model="m",
        input="hi",
        max_output_tokens=2000,
        extra_body={"fake": {"tokens": 5, "usage": {"input_tokens": 1, "output_tokens": 1500}}},
    )

    relayed = len(answer.output_text.encode())
    (row,) = rows(club, hana, 1)
    assert row["disputed"] is True
    assert relayed < row["completion_tokens"] <= relayed + 16  # the bytes, plus a small allowance per answer
    assert balance(club, hana) == START - 1 - row["completion_tokens"]


def test_an_error_from_the_server_reaches_the_member_and_costs_nothing(club: Club) -> None:
    ivy = consumer(club, "ivy@lab.example.org")

    with pytest.raises(openai.BadRequestError) as refused:
        create(club, ivy, model="m", input="hi", extra_body={"fake": {"status": 400}})

    assert refused.value.status_code == 400
    assert refused.value.body["message"] == "fake failure with status 400"  # type: ignore[index]
    (row,) = rows(club, ivy, 1)
    assert row["status"] == 400 and row["endpoint"] == "responses"
    assert balance(club, ivy) == START
