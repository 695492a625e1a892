"""Model discovery against real (fake) model servers that disagree on the shape of /v1/models."""

from __future__ import annotations

import httpx

from agent.upstreams import discover, discover_models, model_ids
from tests.support.fake_upstream import RunningFake
from tests.support.processes import free_port


async def test_a_server_answering_data_and_models_lists_each_model_once(upstream: RunningFake) -> None:
    async with httpx.AsyncClient() as client:
        routes = await discover_models(client, [upstream.url], None)

    assert routes.models == ["llama-3-8b", "qwen2.5-7b"]


async def test_a_server_answering_only_models_is_understood(models_only: RunningFake) -> None:
    async with httpx.AsyncClient() as client:
        routes = await discover_models(client, [models_only.url], None)

    assert routes.models == ["mistral-7b", "llama-3-8b"]


async def test_several_upstreams_serve_the_union_and_the_first_one_listing_a_model_gets_it(
    upstream: RunningFake, models_only: RunningFake
) -> None:
    async with httpx.AsyncClient() as client:
        routes = await discover_models(client, [upstream.url, models_only.url], None)

    assert routes.models == ["llama-3-8b", "qwen2.5-7b", "mistral-7b"]
    assert routes.upstream_for("llama-3-8b") == upstream.url
    assert routes.upstream_for("mistral-7b") == models_only.url
    assert routes.upstream_for("gpt-4o") is None


async def test_an_upstream_that_is_down_contributes_no_models(upstream: RunningFake) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    async with httpx.AsyncClient() as client:
        listings = await discover(client, [down, upstream.url], None)

    assert listings[0].models == () and listings[0].problem is not None and "not reachable" in listings[0].problem
    assert listings[1].models == ("llama-3-8b", "qwen2.5-7b")


async def test_an_upstream_needing_a_key_gets_it(keyed: RunningFake) -> None:
    async with httpx.AsyncClient() as client:
        without, wrong, right = [(await discover(client, [keyed.url], key))[0] for key in (None, "nope", "up-key")]

    assert without.problem is not None and "needs an API key" in without.problem
    assert wrong.problem is not None and "rejected the API key" in wrong.problem
    assert right.models == ("phi-3",)


def test_listings_of_every_shape_are_read_in_order_without_duplicates() -> None:
    listing = {
        "data": [{"id": "a"}, {"id": "b", "extra": 1}, {"nope": True}],
        "models": [{"name": "Display C", "model": "c"}, {"name": "b"}, "d"],
        "other": [{"id": "ignored"}],
    }

    assert model_ids(listing) == ["a", "b", "c", "d"]
    assert model_ids(["a"]) == []
