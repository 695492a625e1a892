"""Members' requests reach a member's GPU and come back unchanged, through the official openai SDK."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import openai
import pytest

from tests.proxy.conftest import database_of, proxy_hub
from tests.support.cluster import Member, agent_process, agent_token, member, recorded
from tests.support.fake_upstream import RunningFake, fake_upstream
from tests.support.hub import LiveHub


@dataclass
class Club:
    hub: LiveHub
    upstream: RunningFake
    alice: Member
    database: Path
    since: str = ""

    def new_rows(self, count: int) -> list[dict[str, object]]:
        """Usage rows of the requests that finished since the test started (the recorder writes within 0.2 s)."""
        return recorded(self.database, count, where=f"created_at >= '{self.since}'")


@pytest.fixture(scope="module")
def shared_club(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Club]:
    """One hub, one GPU owner's agent and one member, shared by the tests that only read."""
    with proxy_hub(tmp_path_factory.mktemp("club")) as hub, fake_upstream(["llama-3-8b", "nomic-embed"]) as upstream:
        owner = member(hub, "owner@lab.example.org")
        with agent_process(hub, agent_token(hub, owner.email, "desk-4090"), f"{upstream.url}/v1"):
            yield Club(hub, upstream, member(hub, "alice@lab.example.org"), database_of(hub))


@pytest.fixture
def club(shared_club: Club) -> Club:
    shared_club.since = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")  # as SQLite stores it
    return shared_club


def sdk(club: Club) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{club.hub.url}/v1", api_key=club.alice.key, max_retries=0)


def test_models_lists_what_the_gpus_serve_with_how_many_serve_each(club: Club) -> None:
    with sdk(club) as client:
        models = client.models.list()

    assert sorted(m.id for m in models.data) == ["llama-3-8b", "nomic-embed"]
    assert all(m.model_extra and m.model_extra["gpus"] == 1 for m in models.data)


def test_a_chat_completion_comes_back_unchanged_and_is_recorded(club: Club) -> None:
    with sdk(club) as client:
        answer = client.chat.completions.create(
            model="llama-3-8b",
            messages=[{"role": "user", "content": "three little words"}],
            max_tokens=5,
            tools=[{"type": "function", "function": {"name": "noop", "parameters": {"type": "object"}}}],
            extra_body={"top_k": 7, "response_format": {"type": "json_object"}},
        )

    assert answer.choices[0].message.content == "tok0 tok1 tok2 tok3 tok4"
    assert answer.usage is not None and (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (3, 5)
    forwarded = httpx.get(f"{club.upstream.url}/fake/stats").json()["last_body"]
    assert forwarded["top_k"] == 7 and forwarded["tools"][0]["function"]["name"] == "noop"
    assert forwarded["response_format"] == {"type": "json_object"}
    [row] = club.new_rows(1)
    assert (row["model"], row["status"], row["prompt_tokens"], row["completion_tokens"]) == ("llama-3-8b", 200, 3, 5)
    assert row["estimated"] == 0 and row["endpoint"] == "chat/completions" and row["agent_id"] is not None


def test_a_stream_arrives_chunk_by_chunk_without_the_usage_chunk_the_client_did_not_ask_for(club: Club) -> None:
    with sdk(club) as client:
        chunks = list(
            client.chat.completions.create(
                model="llama-3-8b", messages=[{"role": "user", "content": "hi there"}], max_tokens=4, stream=True
            )
        )

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tok0 tok1 tok2 tok3"
    assert all(c.choices for c in chunks), "the usage chunk the hub asked for leaked to the client"
    assert all(c.usage is None for c in chunks)
    [row] = club.new_rows(1)
    assert (row["stream"], row["prompt_tokens"], row["completion_tokens"], row["estimated"]) == (1, 2, 4, 0)
    assert row["ttft_ms"] is not None


def test_a_stream_that_asks_for_usage_gets_it(club: Club) -> None:
    with sdk(club) as client:
        chunks = list(
            client.chat.completions.create(
                model="llama-3-8b",
                messages=[{"role": "user", "content": "hi there"}],
                max_tokens=3,
                stream=True,
                stream_options={"include_usage": True},
            )
        )

    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and (usage[0].prompt_tokens, usage[0].completion_tokens) == (2, 3)


async def test_async_completions_and_embeddings_work(club: Club) -> None:
    async with openai.AsyncOpenAI(base_url=f"{club.hub.url}/v1", api_key=club.alice.key, max_retries=0) as client:
        completion = await client.completions.create(model="llama-3-8b", prompt="once upon", max_tokens=2)
        embedding = await client.embeddings.create(model="nomic-embed", input=["a", "b"])

    assert completion.choices[0].text == "tok0 tok1"
    assert len(embedding.data) == 2 and embedding.data[0].embedding


def test_an_unknown_model_is_404_model_not_found_and_logged_as_refused_at_no_cost(club: Club) -> None:
    with sdk(club) as client:
        with pytest.raises(openai.NotFoundError) as raised:
            client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
        client.chat.completions.create(model="llama-3-8b", messages=[{"role": "user", "content": "hi"}])

    assert raised.value.code == "model_not_found"
    rows = sorted(club.new_rows(2), key=lambda row: str(row["model"]))
    logged = [(r["model"], r["status"], r["code"], r["agent_id"], r["prompt_tokens"], r["cost"]) for r in rows]
    assert logged[0] == ("gpt-9", 404, "model_not_found", None, 0, 0)  # in the request log, charged nothing
    assert logged[1][:4] == ("llama-3-8b", 200, "", rows[1]["agent_id"]) and rows[1]["agent_id"] is not None


def test_upstream_client_errors_pass_back_as_they_are(club: Club) -> None:
    with sdk(club) as client, pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model="llama-3-8b", messages=[{"role": "user", "content": "hi"}], extra_body={"fake": {"status": 400}}
        )

    assert raised.value.status_code == 400
    assert raised.value.body == {
        "message": "fake failure with status 400",
        "type": "server_error",
        "param": None,
        "code": None,
    }


def test_upstream_server_errors_become_502_with_a_clear_message(club: Club) -> None:
    with sdk(club) as client, pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(
            model="llama-3-8b", messages=[{"role": "user", "content": "hi"}], extra_body={"fake": {"status": 500}}
        )

    assert raised.value.status_code == 502
    assert "HTTP 500" in raised.value.message
