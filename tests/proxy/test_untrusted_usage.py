"""A lying model server behind the real `gpuclub-agent`: the hub bills only what it can believe.

Prices here make every token cost one credit, so a member's balance says exactly how many tokens were billed.
Each test checks what the consumer and the provider see: balances, earnings, the usage row, the next request.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from hub.accounts.models import Role
from hub.ledger import service as ledger
from hub.ledger.grants import grant
from hub.pricing import service as pricing
from hub.quotas import service as quotas
from hub.tokenizers.counting import CHAT_ALLOWANCE, COMPLETION_ALLOWANCE, MESSAGE_ALLOWANCE
from tests.proxy.conftest import proxy_hub
from tests.support.cluster import Member, agent_process, agent_token, member, provision, signed_in, submit
from tests.support.fake_upstream import RunningFake, fake_upstream
from tests.support.hub import LiveHub
from tests.tokenizers.making import tokenizer_json, word_level

CREDIT = 1_000_000
PER_TOKEN = CREDIT * 1_000_000  # a price per million tokens that makes one token cost one credit
START = 100_000  # credits each consumer starts with


@dataclass
class Club:
    hub: LiveHub
    upstream: RunningFake
    provider: Member


@pytest.fixture(scope="module")
def club(tmp_path_factory: pytest.TempPathFactory, live_database: str) -> Iterator[Club]:
    data = tmp_path_factory.mktemp("hub")
    with (
        proxy_hub(data, GPUCLUB_DATABASE_URL=live_database, GPUCLUB_UPSTREAM_TIMEOUT="3") as hub,
        fake_upstream(["m"]) as upstream,
        fake_upstream(["counted"]) as counted,
    ):
        provider = member(hub, "liar@lab.example.org")

        async def prices(db: AsyncSession) -> None:
            for model in ("m", "counted"):
                await pricing.set_price(db, None, model, input_micro=PER_TOKEN, output_micro=PER_TOKEN)
            await pricing.set_fee(db, None, 1000)  # 10 %

        provision(hub, prices)
        with agent_process(hub, agent_token(hub, provider.email, "gpu"), f"{upstream.url}/v1", f"{counted.url}/v1"):
            yield Club(hub, upstream, provider)


def consumer(club: Club, email: str, *, concurrency: int | None = None) -> Member:
    who = member(club.hub, email)

    async def fund(db: AsyncSession) -> None:
        user = await accounts.get_member(db, email)
        await grant(db, None, user, START * CREDIT, reason="test")
        if concurrency is not None:
            await quotas.set_member_limits(db, None, user, concurrency=concurrency)

    provision(club.hub, fund)
    return who


def rows(club: Club, email: str, count: int) -> list[dict[str, Any]]:
    """The member's usage rows, once `count` of them are written (they are written just after the answer)."""

    async def read(db: AsyncSession) -> list[dict[str, Any]]:
        user = await accounts.get_member(db, email)
        query = text("SELECT * FROM usage WHERE user_id = :user ORDER BY id")
        found = [dict(row._mapping) for row in (await db.exec(query, params={"user": user.pk}))]  # type: ignore[call-overload]
        for row in found:  # SQLite gives booleans back as 0 and 1
            row.update({name: bool(row[name]) for name in ("disputed", "estimated", "stream")})
        return found

    deadline = time.monotonic() + 10
    while len(found := provision(club.hub, read)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def balances(club: Club, *emails: str) -> list[float]:
    """Balances in credits, as fractions of micro-credits are exact (what is still held counts as spent)."""

    async def read(db: AsyncSession) -> list[float]:
        found = []
        for email in emails:
            account = await ledger.balance_of(db, (await accounts.get_member(db, email)).pk)
            found.append((account.balance - account.held) / CREDIT)
        return found

    return provision(club.hub, read)


def sdk(club: Club, who: Member) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{club.hub.url}/v1", api_key=who.key, max_retries=0, timeout=30)


def ask(client: openai.OpenAI, usage: Any = None, **extra: Any) -> Any:
    fake = {"usage": usage} if usage is not None else {}
    return client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "hello there"}],
        max_tokens=10,
        extra_body={"fake": fake} if fake else None,
        **extra,
    )


def test_a_report_of_a_million_tokens_for_ten_bills_ten_and_records_the_dispute(club: Club) -> None:
    alice = consumer(club, "alice@lab.example.org")
    earned_before = balances(club, club.provider.email)[0]

    answer = ask(sdk(club, alice), usage={"prompt_tokens": 3, "completion_tokens": 1_000_000})

    assert answer.choices[0].message.content == "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 tok8 tok9"
    (row,) = rows(club, alice.email, 1)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (3, 10)
    assert (row["reported_prompt_tokens"], row["reported_completion_tokens"], row["disputed"]) == (3, 1_000_000, True)
    assert balances(club, alice.email) == [START - 13]
    # The liar is paid for 13 tokens less the club's 10 % fee, not for a million.
    assert balances(club, club.provider.email)[0] - earned_before == pytest.approx(13 * 0.9)


def test_a_streamed_lie_is_bounded_the_same_way(club: Club) -> None:
    bob = consumer(club, "bob@lab.example.org")

    stream = ask(sdk(club, bob), usage={"prompt_tokens": 10**12, "completion_tokens": 10**12}, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

    assert text.startswith("tok0 tok1")
    (row,) = rows(club, bob.email, 1)
    assert row["disputed"] is True and row["reported_prompt_tokens"] == 10**12
    assert row["completion_tokens"] == 10
    assert 0 < row["prompt_tokens"] < 1000  # the bytes the hub forwarded, plus the template allowance
    assert balances(club, bob.email) == [START - 10 - row["prompt_tokens"]]


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": -5, "completion_tokens": -1},
        {"prompt_tokens": 1.5, "completion_tokens": 2.5},
        {"prompt_tokens": "abc", "completion_tokens": "lots"},
        {"prompt_tokens": True, "completion_tokens": None},
        {"total_tokens": 7},
    ],
    ids=["negative", "fractional", "text", "bool-and-null", "missing"],
)
def test_malformed_numbers_are_estimated_and_the_slot_comes_back(club: Club, usage: Any) -> None:
    # Concurrency 1: if the first request's slot leaked, the second would be refused with 429.
    carol = consumer(club, f"carol-{len(str(usage))}-{sorted(usage)[0]}@lab.example.org", concurrency=1)
    client = sdk(club, carol)

    first, second = ask(client, usage=usage), ask(client, usage=usage)

    assert first.choices[0].message.content == second.choices[0].message.content
    found = rows(club, carol.email, 2)
    assert [(r["status"], r["estimated"], r["disputed"]) for r in found] == [(200, True, False)] * 2
    # "tok0 tok1 … tok9" is 49 characters: about 13 tokens, but never more than the 10 allowed.
    assert {r["completion_tokens"] for r in found} == {10}
    assert balances(club, carol.email) == [START - sum(r["prompt_tokens"] + r["completion_tokens"] for r in found)]


def test_a_report_above_the_bytes_relayed_is_bounded_by_them(club: Club) -> None:
    dave = consumer(club, "dave@lab.example.org")

    # max_tokens allows 2,000, but the answer is five short words: a claim of 1,500 tokens cannot be true.
    answer = sdk(club, dave).chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=2000,
        extra_body={"fake": {"tokens": 5, "usage": {"prompt_tokens": 1, "completion_tokens": 1500}}},
    )

    assert answer.choices[0].message.content is not None
    relayed = len(answer.choices[0].message.content.encode())
    (row,) = rows(club, dave.email, 1)
    assert row["disputed"] is True
    assert row["completion_tokens"] == relayed + 16  # the bytes, plus the allowance for tokens that print nothing


def test_an_html_answer_is_never_served_from_the_hub(club: Club) -> None:
    erin = consumer(club, "erin@lab.example.org")

    response = httpx.post(
        f"{club.hub.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {erin.key}"},
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "fake": {"content_type": "text/html"}},
        timeout=30,
    )

    assert response.status_code == 502
    assert response.headers["content-type"].startswith("application/json")
    assert "content type" in response.json()["error"]["message"]
    assert balances(club, erin.email) == [START]


def test_a_stream_that_goes_silent_ends_with_an_error_event_and_frees_the_slot(club: Club) -> None:
    frank = consumer(club, "frank@lab.example.org", concurrency=1)
    client = sdk(club, frank)

    with httpx.stream(
        "POST",
        f"{club.hub.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {frank.key}"},
        json={
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "fake": {"silent_after": 2},
        },
        timeout=30,
    ) as response:
        body = response.read().decode()

    assert response.status_code == 200
    assert body.count("tok") == 2
    assert "sent nothing for 3 s" in body and '"type": "server_error"' in body
    assert ask(client).choices[0].message.content  # the slot came back: concurrency 1 lets the next one in
    found = rows(club, frank.email, 2)
    assert [r["status"] for r in found] == [502, 200]


def test_a_deeply_nested_body_is_a_400_not_a_500(club: Club) -> None:
    gina = consumer(club, "gina@lab.example.org")

    response = httpx.post(
        f"{club.hub.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {gina.key}", "content-type": "application/json"},
        content=b'{"model": "m", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        timeout=30,
    )

    assert response.status_code == 400
    assert response.json()["error"]["message"] == "The JSON body of your request is nested too deeply."


def test_an_answer_over_the_size_limit_is_a_clear_502(club: Club) -> None:
    hana = consumer(club, "hana@lab.example.org", concurrency=1)

    response = httpx.post(
        f"{club.hub.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {hana.key}"},
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "fake": {"body_bytes": 20 * 2**20}},
        timeout=60,
    )

    assert response.status_code == 502
    assert response.json()["error"]["message"] == "The GPU's answer is larger than this hub's limit of 16777216 bytes."
    assert balances(club, hana.email) == [START]
    assert ask(sdk(club, hana)).choices[0].message.content


def test_with_a_tokenizer_attached_the_hub_bills_its_own_smaller_count(club: Club) -> None:
    admin = member(club.hub, "admin@lab.example.org", Role.ADMIN)
    ivy = consumer(club, "ivy@lab.example.org")
    words = word_level(["tok0", "tok1", "tok2", "tok3", "tok4", "hello", "there"])
    with signed_in(club.hub, admin.email) as browser:
        page = browser.get("/admin/tokenizers")
        csrf = re.search(r'name="_csrf_token" value="([^"]+)"', page.text)
        assert csrf
        attached = browser.post(
            "/admin/tokenizers",
            data={"_csrf_token": csrf.group(1), "model": "counted"},
            files={"file": ("tokenizer.json", tokenizer_json(words), "application/json")},
        )
    assert attached.status_code == 200 and "counted" in attached.text

    # An inflated report, but inside the hard bounds (so no dispute): the hub's own count is what it bills.
    answer = sdk(club, ivy).chat.completions.create(
        model="counted",
        messages=[{"role": "user", "content": "hello there"}],
        max_tokens=50,
        extra_body={"fake": {"tokens": 5, "usage": {"prompt_tokens": 100, "completion_tokens": 30}}},
    )

    assert answer.choices[0].message.content == "tok0 tok1 tok2 tok3 tok4"
    (row,) = rows(club, ivy.email, 1)
    prompt = len(words.encode("hello there", add_special_tokens=False)) + MESSAGE_ALLOWANCE + CHAT_ALLOWANCE
    completion = len(words.encode(answer.choices[0].message.content, add_special_tokens=False)) + COMPLETION_ALLOWANCE
    assert (row["prompt_tokens"], row["completion_tokens"], row["disputed"]) == (prompt, completion, False)
    assert balances(club, ivy.email) == [START - prompt - completion]


def hub_memory(club: Club) -> dict[str, int]:
    status = Path(f"/proc/{club.hub.process.process.pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {name: int(fields[name].split()[0]) * 1024 for name in ("VmRSS", "VmHWM")}


def test_a_long_stream_arrives_whole_through_the_flow_control_window(club: Club) -> None:
    jack = consumer(club, "jack@lab.example.org")
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}

    with httpx.stream(
        "POST",
        f"{club.hub.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {jack.key}"},
        json=body | {"fake": {"stream_bytes": 20 * 2**20}},
        timeout=60,
    ) as response:
        events = [line for line in response.iter_lines() if line.startswith("data: {")]

    assert len(events) == 20 * 2**20 // 16_384
    assert all('"content":"' + "y" * 16_384 + '"' in event for event in events)


def test_a_client_that_stops_reading_holds_the_agent_back_not_the_hubs_memory(club: Club) -> None:
    kim = consumer(club, "kim@lab.example.org", concurrency=1)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    before = hub_memory(club)

    with httpx.stream(
        "POST",
        f"{club.hub.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {kim.key}"},
        json=body | {"fake": {"stream_bytes": 300 * 2**20}},
        timeout=60,
    ) as response:
        first = next(response.iter_raw())
        time.sleep(3)  # the scenario: a client that reads nothing for three seconds, then hangs up
        during = hub_memory(club)

    assert first.startswith(b"data: ")
    assert during["VmHWM"] - before["VmRSS"] < 50 * 2**20
    (row,) = rows(club, kim.email, 1)
    assert (row["status"], row["error"]) == (499, "the client went away")
    assert ask(sdk(club, kim)).choices[0].message.content  # the slot came back


def test_an_honest_long_answer_to_a_request_without_max_tokens_is_not_a_dispute(club: Club) -> None:
    liam = consumer(club, "liam@lab.example.org")

    admin = member(club.hub, "admin@lab.example.org", Role.ADMIN)

    def default(tokens: int) -> None:  # as an admin sets it on Admin → Money, which applies at once
        with signed_in(club.hub, admin.email) as browser:
            form = {"model": "m", "input": "1000000", "output": "1000000", "max_tokens": str(tokens)}
            assert submit(browser, "/admin/money", "/admin/money/prices", form).status_code == 200

    default(5)
    try:
        # No max_tokens: the server may write as much as it likes (here 8 tokens, reported truthfully), but the
        # member is charged at most the model default that sized the hold (5), and the provider is not accused.
        answer = sdk(club, liam).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    finally:
        default(1024)

    assert answer.usage is not None and answer.usage.completion_tokens == 8
    (row,) = rows(club, liam.email, 1)
    assert (row["completion_tokens"], row["disputed"], row["estimated"]) == (5, False, False)
    assert balances(club, liam.email) == [START - row["prompt_tokens"] - 5]


def test_an_image_in_the_prompt_may_cost_more_tokens_than_its_bytes(club: Club) -> None:
    mona = consumer(club, "mona@lab.example.org")
    picture = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "https://x/cat.jpg"}},
    ]

    sdk(club, mona).chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": picture}],  # type: ignore[list-item,misc]
        max_tokens=3,
        extra_body={"fake": {"usage": {"prompt_tokens": 1500, "completion_tokens": 3}}},
    )

    (row,) = rows(club, mona.email, 1)
    assert (row["prompt_tokens"], row["disputed"]) == (1500, False)


def test_more_than_128_choices_are_refused_before_anything_is_held(club: Club) -> None:
    nico = consumer(club, "nico@lab.example.org")

    with pytest.raises(openai.BadRequestError) as refused:
        ask(sdk(club, nico), n=129)

    assert refused.value.body["message"] == "'n' must be a whole number from 1 to 128."  # type: ignore[index]
    assert balances(club, nico.email) == [START]
