"""Model servers disagree on the details; members still see one OpenAI API (hub, agents and servers are processes)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.proxy.conftest import database_of, proxy_hub
from tests.support.cluster import Member, agent_process, agent_token, member, recorded, usage_rows
from tests.support.fake_upstream import RunningFake, fake_upstream
from tests.support.hub import LiveHub
from tests.support.processes import Running

BODY_LIMIT = 2048
PROMPT = "please count these five words"
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": PROMPT}]


@dataclass
class Club:
    hub: LiveHub
    owner: Member
    alice: Member
    database: Path

    def last_row(self) -> int:
        rows = usage_rows(self.database)
        return int(str(rows[-1]["id"])) if rows else 0

    def rows_since(self, last: int, count: int) -> list[dict[str, object]]:
        return recorded(self.database, count, where=f"id > {last}")


@pytest.fixture(scope="module")
def club(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Club]:
    """One hub for the module; each test brings its own server and agent, and takes them away again.

    The body limit is small so that one test can go over it; every other request here is far below it.
    """
    with proxy_hub(tmp_path_factory.mktemp("quirks"), GPUCLUB_MAX_BODY_BYTES=str(BODY_LIMIT)) as hub:
        owner, alice = member(hub, "owner@lab.example.org"), member(hub, "alice@lab.example.org")
        yield Club(hub, owner, alice, database_of(hub))


@contextmanager
def sharing(club: Club, *upstreams: str, extra: Sequence[str] = ()) -> Iterator[Running]:
    """The owner's agent in front of `upstreams`; on exit, wait until the hub has let it go, so tests stay apart."""
    name = f"gpu-{uuid.uuid4().hex[:8]}"
    mark = club.hub.process.mark()
    with agent_process(
        club.hub, agent_token(club.hub, club.owner.email, name), *upstreams, name=name, extra=extra
    ) as gpu:
        yield gpu
    club.hub.process.wait_for(rf"agent \d+ \({name}\) disconnected", since=mark)


def sdk(club: Club) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{club.hub.url}/v1", api_key=club.alice.key, max_retries=0)


def listed(club: Club) -> dict[str, object]:
    """Each model the club offers alice, with how many GPUs serve it."""
    with sdk(club) as client:
        return {m.id: (m.model_extra or {}).get("gpus") for m in client.models.list().data}


def requests_at(upstream: RunningFake) -> int:
    """How many generation requests reached this server (the fake counts them itself)."""
    count: int = httpx.get(f"{upstream.url}/fake/stats").json()["requests"]
    return count


@pytest.mark.parametrize("shape", ["models-both", "models-only"])
def test_each_advertised_model_is_offered_once_whatever_shape_the_servers_list_has(club: Club, shape: str) -> None:
    with fake_upstream(["llama-3-8b", "qwen2.5-7b"], shape) as upstream, sharing(club, f"{upstream.url}/v1"):
        offered = listed(club)
        with sdk(club) as client:
            answer = client.chat.completions.create(model="qwen2.5-7b", messages=MESSAGES, max_tokens=2)

    assert offered == {"llama-3-8b": 1, "qwen2.5-7b": 1}
    assert answer.choices[0].message.content == "tok0 tok1"


def test_one_agent_with_two_servers_offers_both_and_sends_each_request_to_the_right_one(club: Club) -> None:
    with (
        fake_upstream(["llama-3-8b"]) as chat_server,
        fake_upstream(["nomic-embed"]) as embedding_server,
        sharing(club, f"{chat_server.url}/v1", f"{embedding_server.url}/v1"),
    ):
        offered = listed(club)
        with sdk(club) as client:
            answer = client.chat.completions.create(model="llama-3-8b", messages=MESSAGES, max_tokens=2)
            vectors = client.embeddings.create(model="nomic-embed", input=["a", "b"])
            second = client.chat.completions.create(model="llama-3-8b", messages=MESSAGES, max_tokens=1)
        reached = (requests_at(chat_server), requests_at(embedding_server))

    assert offered == {"llama-3-8b": 1, "nomic-embed": 1}
    assert answer.choices[0].message.content == "tok0 tok1" and second.choices[0].message.content == "tok0"
    assert len(vectors.data) == 2
    assert reached == (2, 1)


def test_a_stream_that_never_says_done_still_ends_with_the_whole_text(club: Club) -> None:
    last = club.last_row()
    with fake_upstream(["m"], "no-done") as upstream, sharing(club, f"{upstream.url}/v1"):
        with sdk(club) as client:
            chunks = list(client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=4, stream=True))

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "tok0 tok1 tok2 tok3"
    assert chunks[-1].choices[0].finish_reason == "length"
    [row] = club.rows_since(last, 1)
    assert (row["status"], row["completion_tokens"], row["estimated"]) == (200, 4, 0)


def test_a_stream_from_a_server_that_never_reports_usage_is_recorded_as_an_estimate(club: Club) -> None:
    last = club.last_row()
    with fake_upstream(["m"], "no-usage") as upstream, sharing(club, f"{upstream.url}/v1"):
        with sdk(club) as client:
            chunks = list(client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=6, stream=True))

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tok0 tok1 tok2 tok3 tok4 tok5"
    [row] = club.rows_since(last, 1)
    assert (row["status"], row["stream"], row["estimated"]) == (200, 1, 1)
    # The fake counts 5 prompt and 6 completion tokens; an estimate within a factor of two is plausible.
    prompt, completion = int(str(row["prompt_tokens"])), int(str(row["completion_tokens"]))
    assert 5 / 2 <= prompt <= 5 * 2, prompt
    assert 6 / 2 <= completion <= 6 * 2, completion


def test_a_server_that_answers_any_model_name_only_gets_the_models_it_advertised(club: Club) -> None:
    with fake_upstream(["m"], "any-model") as upstream, sharing(club, f"{upstream.url}/v1"):
        with sdk(club) as client, pytest.raises(openai.NotFoundError) as raised:
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        reached = requests_at(upstream)

    assert raised.value.code == "model_not_found" and "gpt-4o" in raised.value.message
    assert reached == 0


def test_a_body_over_the_hubs_limit_is_413_in_openais_envelope_and_never_recorded(club: Club) -> None:
    last = club.last_row()
    huge: list[ChatCompletionMessageParam] = [{"role": "user", "content": "word " * BODY_LIMIT}]
    with fake_upstream(["m"]) as upstream, sharing(club, f"{upstream.url}/v1"):
        with sdk(club) as client:
            with pytest.raises(openai.APIStatusError) as raised:
                client.chat.completions.create(model="m", messages=huge)
            # A request that fits, so that "nothing recorded" is checked after a write that did happen.
            client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=1)
        reached = requests_at(upstream)

    assert raised.value.status_code == 413
    assert raised.value.code == "payload_too_large" and f"{BODY_LIMIT} bytes" in raised.value.message
    assert raised.value.type == "invalid_request_error"
    assert reached == 1
    rows = club.rows_since(last, 1)
    assert [row["status"] for row in rows] == [200]


async def test_a_model_the_server_loads_later_is_offered_without_restarting_anything(club: Club) -> None:
    with fake_upstream(["m"]) as upstream, sharing(club, f"{upstream.url}/v1", extra=("--refresh", "1")) as gpu:
        async with openai.AsyncOpenAI(base_url=f"{club.hub.url}/v1", api_key=club.alice.key, max_retries=0) as client:
            before = [m.id for m in (await client.models.list()).data]
            mark = gpu.mark()
            await upstream.serve_models("m", "m-large")
            await asyncio.to_thread(gpu.wait_for, r"models or their APIs changed", since=mark)
            after = [m.id for m in (await client.models.list()).data]
            answer = await client.chat.completions.create(model="m-large", messages=MESSAGES, max_tokens=2)

    assert before == ["m"]
    assert after == ["m", "m-large"]
    assert answer.choices[0].message.content == "tok0 tok1"
