"""Which APIs each upstream serves: probed with an empty body at discovery, or declared by hand with --api."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import httpx
import pytest

from agent import protocol
from agent.config import Config
from agent.runner import Agent
from agent.upstreams import PROBE_SECONDS, Clients, discover, discover_models
from tests.agent.conftest import TOKEN, stub_upstream

LEGACY = list(protocol.LEGACY_APIS)
PROBED = [api for api in protocol.APIS if api not in protocol.LEGACY_APIS]

MakeAgent = Callable[..., Agent]


class Clock:
    """Monotonic seconds that move only when the test moves them."""

    def __init__(self) -> None:
        self.seconds = 1000.0

    def __call__(self) -> float:
        return self.seconds


@pytest.fixture
async def make_agent() -> AsyncIterator[MakeAgent]:
    """The agent's own refresh, against the stub upstreams given, with no hub: it is not asked here."""
    async with httpx.AsyncClient() as client, Clients() as clients:

        def make(
            *upstreams: str, now: Callable[[], float] = time.monotonic, apis: tuple[str, ...] | None = None
        ) -> Agent:
            config = Config(hub="http://127.0.0.1:9", token=TOKEN, upstreams=upstreams, apis=apis)
            return Agent(config, client, clients, now)

        yield make


async def test_every_path_is_probed_at_once_and_only_a_missing_endpoint_means_not_served() -> None:
    answers = {
        "/v1/responses": 400,  # refused the empty body: the endpoint is there
        "/v1/messages": 422,
        "/v1/messages/count_tokens": 500,
        "/v1/rerank": 405,
        "/v1/audio/transcriptions": 501,
    }  # and /v1/audio/translations: 404
    # The stub holds each probe until all have arrived: probes one after another would time out instead.
    async with (
        stub_upstream(["llama-3-8b", "qwen2.5-7b"], answers=answers, gather=len(PROBED)) as stub,
        httpx.AsyncClient() as client,
    ):
        routes = await discover_models(client, [stub.url], "up-key")

    served = [*LEGACY, "responses", "messages", "messages/count_tokens"]
    assert routes.apis == {"llama-3-8b": served, "qwen2.5-7b": served}
    probes = sorted((s.path, s.body, s.headers["content-type"], s.headers["authorization"]) for s in stub.posted())
    assert probes == sorted((f"/v1/{api}", b"{}", "application/json", "Bearer up-key") for api in PROBED)


async def test_a_probe_the_server_never_answers_counts_as_not_served_after_a_short_wait() -> None:
    async with (
        stub_upstream(["llama-3-8b"], answers={"/v1/responses": 400}, hang={"/v1/rerank"}) as stub,
        httpx.AsyncClient() as client,
    ):
        (listing,) = await discover(client, [stub.url], None)

    assert listing.apis == (*LEGACY, "responses")


async def test_declared_apis_are_taken_as_they_are_without_probing() -> None:
    async with stub_upstream(["llama-3-8b"], answers={"/v1/responses": 400}) as stub, httpx.AsyncClient() as client:
        routes = await discover_models(client, [stub.url], None, apis=(*LEGACY, "messages"))

    assert routes.apis == {"llama-3-8b": [*LEGACY, "messages"]}
    assert stub.posted() == []


async def test_each_model_has_the_apis_of_the_upstream_its_requests_go_to() -> None:
    async with (
        stub_upstream(["llama-3-8b", "shared"], answers={"/v1/responses": 400}) as first,
        stub_upstream(["shared", "bge-reranker"], answers={"/v1/rerank": 422}) as second,
        httpx.AsyncClient() as client,
    ):
        routes = await discover_models(client, [first.url, second.url], None)

    assert routes.upstream_for("shared") == first.url
    assert routes.apis == {
        "llama-3-8b": [*LEGACY, "responses"],
        "shared": [*LEGACY, "responses"],
        "bge-reranker": [*LEGACY, "rerank"],
    }


async def test_an_upstream_that_lists_no_models_is_not_probed() -> None:
    async with stub_upstream([]) as stub, httpx.AsyncClient() as client:
        (listing,) = await discover(client, [stub.url], None)

    assert listing.problem is not None and "serves no models" in listing.problem
    assert stub.posted() == []


async def test_a_refresh_that_finds_the_same_models_sends_no_probes(make_agent: MakeAgent) -> None:
    async with stub_upstream(["llama-3-8b", "qwen2.5-7b"], answers={"/v1/responses": 400}) as stub:
        agent = make_agent(stub.url)
        assert await agent.refresh_models()
        at_start = len(stub.posted())

        changed = [await agent.refresh_models() for _ in range(3)]

    assert at_start == len(PROBED)
    assert changed == [False] * 3 and stub.posted()[at_start:] == []
    assert [s.path for s in stub.seen[-3:]] == ["/v1/models"] * 3  # the models were still asked for each time
    served = [*LEGACY, "responses"]
    assert agent.routes.apis == {"llama-3-8b": served, "qwen2.5-7b": served}


async def test_a_model_loaded_or_unloaded_makes_the_agent_probe_again(make_agent: MakeAgent) -> None:
    async with stub_upstream(["llama-3-8b"]) as stub:
        agent = make_agent(stub.url)
        await agent.refresh_models()
        stub.answers["/v1/rerank"] = 422
        stub.models.append("bge-reranker")  # loaded into a server that now has /v1/rerank

        loaded = await agent.refresh_models()
        apis_loaded = agent.routes.apis
        stub.models.remove("bge-reranker")
        del stub.answers["/v1/rerank"]
        unloaded = await agent.refresh_models()

    assert loaded and apis_loaded == {"llama-3-8b": [*LEGACY, "rerank"], "bge-reranker": [*LEGACY, "rerank"]}
    assert unloaded and agent.routes.apis == {"llama-3-8b": LEGACY}
    assert len(stub.posted()) == 3 * len(PROBED)


async def test_with_the_same_models_the_apis_are_probed_again_after_probe_seconds(make_agent: MakeAgent) -> None:
    clock = Clock()
    async with stub_upstream(["llama-3-8b"]) as stub:
        agent = make_agent(stub.url, now=clock)
        await agent.refresh_models()
        stub.answers["/v1/responses"] = 400  # the server was upgraded in place, with the same models

        clock.seconds += PROBE_SECONDS - 1
        early = await agent.refresh_models()
        clock.seconds += 1
        due = await agent.refresh_models()
        clock.seconds += PROBE_SECONDS - 1
        after = await agent.refresh_models()

    assert (early, due, after) == (False, True, False)
    assert agent.routes.apis == {"llama-3-8b": [*LEGACY, "responses"]}
    assert len(stub.posted()) == 2 * len(PROBED)


async def test_an_upstream_that_answers_again_after_being_down_is_probed_again(make_agent: MakeAgent) -> None:
    async with stub_upstream(["llama-3-8b"]) as before:
        agent = make_agent(before.url)
        await agent.refresh_models()
    went_down = await agent.refresh_models()
    apis_down = agent.routes.apis

    # Restarted on the same port with the same model, perhaps a newer version with more APIs.
    async with stub_upstream(["llama-3-8b"], port=urlsplit(before.url).port or 0, answers={"/v1/rerank": 422}) as after:
        came_back = await agent.refresh_models()

    assert went_down and apis_down == {}
    assert came_back and agent.routes.apis == {"llama-3-8b": [*LEGACY, "rerank"]}
    assert len(after.posted()) == len(PROBED)


async def test_declared_apis_mean_no_probes_on_any_refresh(make_agent: MakeAgent) -> None:
    async with stub_upstream(["llama-3-8b"], answers={"/v1/responses": 400}) as stub:
        agent = make_agent(stub.url, apis=(*LEGACY, "messages"))
        for _ in range(2):
            await agent.refresh_models()
        stub.models.append("qwen2.5-7b")
        await agent.refresh_models()

    assert stub.posted() == []
    assert agent.routes.apis == {"llama-3-8b": [*LEGACY, "messages"], "qwen2.5-7b": [*LEGACY, "messages"]}
