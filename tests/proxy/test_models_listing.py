"""What `/v1/models` says about each model (price, GPUs, status), and the 503 a known model gets while no GPU
serving it is online (a model nobody ever offered stays 404). Hub, agents and servers are real processes."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from hub.agents import service as agents
from hub.agents.live import Link, Registry
from hub.agents.models import Agent
from hub.db import Database
from hub.errors import ModelNotFound
from hub.keys import service as keys
from hub.keys.models import KeyModel
from hub.keys.trust import Trust
from hub.proxy.catalog import GONE_MODELS, GONE_PER_OWNER, GONE_SECONDS
from hub.proxy.scheduler import Scheduler
from tests.proxy.conftest import proxy_hub
from tests.support.cluster import (
    Member,
    _database_url,
    _run,
    agent_process,
    agent_token,
    member,
    provision,
    signed_in,
    submit,
)
from tests.support.fake_upstream import fake_upstream
from tests.support.hub import LiveHub

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


@dataclass
class Club:
    hub: LiveHub
    alice: Member  # uses the club's GPUs
    bob: Member  # shares a GPU


@pytest.fixture(scope="module")
def club(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Club]:
    with proxy_hub(tmp_path_factory.mktemp("listing")) as hub:
        alice, bob = member(hub, "alice@lab.example.org"), member(hub, "bob@lab.example.org")
        for args in (("m", "--input", "0.5", "--output", "1.5"), ("*", "--input", "0.1", "--output", "0.2")):
            assert hub.cli("price", "set", *args).returncode == 0
        assert hub.cli("price", "set", "priced-only", "--input", "1", "--output", "1").returncode == 0
        assert hub.cli("credits", "grant", alice.email, "100").returncode == 0
        yield Club(hub, alice, bob)


@contextmanager
def bobs_gpu(club: Club, *models: str) -> Iterator[str]:
    """Bob's agent serving `models` (its name is yielded); on exit, wait until the hub has let it go."""
    name = f"gpu-{uuid.uuid4().hex[:8]}"
    with fake_upstream(list(models)) as upstream:
        mark = club.hub.process.mark()
        with agent_process(club.hub, agent_token(club.hub, club.bob.email, name), f"{upstream.url}/v1", name=name):
            yield name
        club.hub.process.wait_for(rf"agent \d+ \({name}\) disconnected", since=mark)


def client(club: Club, who: Member) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{club.hub.url}/v1", api_key=who.key, max_retries=0)


def test_the_sdk_sees_each_models_price_its_gpus_and_that_it_is_online(club: Club) -> None:
    with bobs_gpu(club, "m", "n"), client(club, club.alice) as alices, client(club, club.bob) as bobs:
        seen = {m.id: m.model_extra or {} for m in alices.models.list().data}
        own = {m.id: (m.model_extra or {}).get("own_gpus") for m in bobs.models.list().data}
        one = alices.models.retrieve("m").to_dict()

    assert seen["m"]["pricing"] == {"currency": "credits", "prompt": "0.5", "completion": "1.5"}
    assert seen["n"]["pricing"]["prompt"] == "0.1" and seen["n"]["pricing"]["completion"] == "0.2"  # the default
    assert {name: (extra["gpus"], extra["own_gpus"], extra["status"]) for name, extra in seen.items()} == {
        "m": (1, 0, "online"),
        "n": (1, 0, "online"),
    }
    assert own == {"m": 1, "n": 1}
    assert (one["id"], one["status"], one["pricing"]) == ("m", "online", seen["m"]["pricing"])


def test_a_model_whose_gpu_went_offline_answers_503_in_each_apis_envelope_and_an_unknown_one_404(club: Club) -> None:
    with bobs_gpu(club, "gone-model"), client(club, club.alice) as alices:
        assert alices.chat.completions.create(model="gone-model", messages=HELLO, max_tokens=2)

    with client(club, club.alice) as alices:
        with pytest.raises(openai.APIStatusError) as offline:
            alices.chat.completions.create(model="gone-model", messages=HELLO)
        with pytest.raises(openai.NotFoundError) as unknown:
            alices.chat.completions.create(model="gpt-9", messages=HELLO)
        listed = [m.id for m in alices.models.list().data]
        shown = alices.models.retrieve("gone-model").to_dict()
    anthropic = httpx.post(
        f"{club.hub.url}/v1/messages",
        headers={"x-api-key": club.alice.key, "anthropic-version": "2023-06-01"},
        json={"model": "gone-model", "max_tokens": 2, "messages": HELLO},
    )

    assert offline.value.status_code == 503
    assert offline.value.code == "model_offline"
    assert "No GPU serving 'gone-model' is online now" in offline.value.message
    assert offline.value.response.headers["retry-after"]
    assert unknown.value.code == "model_not_found"
    assert anthropic.status_code == 503
    assert anthropic.json()["type"] == "error" and anthropic.json()["error"]["type"] == "overloaded_error"
    assert "No GPU serving 'gone-model' is online now" in anthropic.json()["error"]["message"]
    assert "gone-model" not in listed  # the list holds what this key can use now
    assert (shown["status"], shown["gpus"]) == ("offline", 0)


def test_a_priced_model_no_gpu_has_served_yet_answers_503(club: Club) -> None:
    with client(club, club.alice) as alices, pytest.raises(openai.APIStatusError) as offline:
        alices.chat.completions.create(model="priced-only", messages=HELLO)

    assert offline.value.status_code == 503
    assert "No GPU serving 'priced-only' is online now" in offline.value.message


def test_a_paused_gpus_model_answers_503_and_a_private_gpus_model_stays_unknown_to_others(club: Club) -> None:
    with (
        bobs_gpu(club, "p") as name,
        signed_in(club.hub, club.bob.email) as browser,
        client(club, club.alice) as alices,
    ):
        agent_id = re.search(rf'data-name="{name}".*?/gpus/(\d+)/pause', browser.get("/gpus").text, re.S)
        assert agent_id
        submit(browser, "/gpus", f"/gpus/{agent_id.group(1)}/pause")
        with pytest.raises(openai.APIStatusError) as paused:
            alices.chat.completions.create(model="p", messages=HELLO)
        status = alices.models.retrieve("p").to_dict()["status"]
        submit(browser, "/gpus", f"/gpus/{agent_id.group(1)}/private")
        with pytest.raises(openai.NotFoundError) as private:
            alices.chat.completions.create(model="p", messages=HELLO)

    assert paused.value.status_code == 503 and "paused" in paused.value.message
    assert status == "paused"
    assert private.value.code == "model_not_found"


def restricted_key(club: Club, email: str, *, models: tuple[str, ...] = (), trust: Trust = Trust.ANY) -> str:
    """Another key of `email`'s, limited to `models` (if any) and to `trust`'s GPUs."""

    async def add() -> str:
        database = Database(_database_url(club.hub))
        try:
            async with database.session() as db:
                user = await accounts.find_by_email(db, email)
                assert user is not None
                key, secret = await keys.create_key(db, user, name="limited", trust=trust)
                db.add_all(KeyModel(key_id=key.id or 0, model=model) for model in models)
                await db.commit()
                return secret
        finally:
            await database.dispose()

    return _run(add)


def test_a_model_a_key_may_not_use_or_reach_answers_the_same_offline_as_online(club: Club) -> None:
    only_m = restricted_key(club, club.alice.email, models=("m",))
    own_gpus = restricted_key(club, club.alice.email, trust=Trust.OWN)
    with bobs_gpu(club, "bobs-gone"):
        pass
    ask = {"messages": HELLO, "max_tokens": 2}
    with openai.OpenAI(base_url=f"{club.hub.url}/v1", api_key=only_m, max_retries=0) as limited:
        with pytest.raises(openai.PermissionDeniedError) as priced:
            limited.chat.completions.create(model="priced-only", **ask)  # type: ignore[call-overload]
    with openai.OpenAI(base_url=f"{club.hub.url}/v1", api_key=own_gpus, max_retries=0) as own:
        with pytest.raises(openai.NotFoundError) as outside:
            own.chat.completions.create(model="bobs-gone", **ask)  # type: ignore[call-overload]
    with client(club, club.alice) as alices, pytest.raises(openai.APIStatusError) as offline:
        alices.chat.completions.create(model="bobs-gone", messages=HELLO)

    assert "may not use the model 'priced-only'; it may use: m" in priced.value.message
    assert outside.value.code == "model_not_found"
    assert offline.value.status_code == 503  # the same GPU gone, for a key that reaches it


async def noop(*_: object) -> None:
    return None


def gpu(agent_id: int, owner_id: int, models: list[str], *, shared: bool = True) -> Link:
    link = Link(agent_id, owner_id, f"gpu{agent_id}", shared, False, 1, frozenset(models), noop, noop)
    link.ready = True
    return link


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_the_catalog_forgets_revoked_agents_follows_gone_ones_changes_and_bounds_what_it_keeps() -> None:
    registry, clock = Registry(), Clock()
    scheduler = Scheduler(registry, queue_per_member=1, wait_seconds=1)
    catalog = scheduler.catalog
    catalog.clock = clock
    registry.add(gpu(1, owner_id=10, models=["secret"]))
    await registry.disconnect(1, "revoked")
    catalog.revoked(1)
    registry.add(gpu(2, owner_id=10, models=["now-private"]))
    registry.remove(registry.links[2])
    catalog.configure(2, shared=False, paused=False)
    for agent_id in range(100, 100 + GONE_PER_OWNER + 5):  # a hostile member's agents, each with many long names
        registry.add(gpu(agent_id, owner_id=66, models=[f"{agent_id}-{n:04d}-" + "x" * 190 for n in range(999)]))
        registry.remove(registry.links[agent_id])
        clock.now += 1

    assert "secret" not in catalog.offered(20)
    assert isinstance(await scheduler.missing("secret", 20), ModelNotFound)
    assert "now-private" not in catalog.offered(20) and catalog.offered(10)["now-private"] == "offline"
    hostile = [offer for offer in catalog.offers.values() if offer.owner_id == 66]
    assert len(hostile) == GONE_PER_OWNER and all(len(offer.models) == GONE_MODELS for offer in hostile)
    clock.now += GONE_SECONDS + 1
    registry.notify()
    assert catalog.offers == {}


async def _revoke_all(db: AsyncSession, email: str) -> None:
    user = await accounts.get_member(db, email)
    for agent in (await db.exec(select(Agent).where(Agent.user_id == user.pk))).all():
        await agents.revoke(db, user, agent.pk)


def test_a_gpu_still_away_when_the_hub_restarts_keeps_its_models_known(tmp_path: Path) -> None:
    """What an agent last offered is kept with it, so a restarted hub answers 503 (not 404) for its models, on the
    Models page too, until the agent is back; a revoked agent's models are unknown again."""
    data = tmp_path / "hub"
    with proxy_hub(data) as hub, fake_upstream(["away-model"]) as upstream:
        owner, alice = member(hub, "owner@lab.example.org"), member(hub, "alice@lab.example.org")
        mark = hub.process.mark()
        with agent_process(hub, agent_token(hub, owner.email, "desk"), f"{upstream.url}/v1", name="desk"):
            pass
        hub.process.wait_for(r"agent \d+ \(desk\) disconnected", since=mark)

    with proxy_hub(data) as hub:
        again = Club(hub, alice, owner)
        with client(again, alice) as alices, pytest.raises(openai.APIStatusError) as offline:
            alices.chat.completions.create(model="away-model", messages=HELLO)
        with signed_in(hub, alice.email) as browser:
            shown = browser.get("/models").text
    provision(hub, lambda db: _revoke_all(db, owner.email))

    with proxy_hub(data) as hub:
        with client(Club(hub, alice, owner), alice) as alices, pytest.raises(openai.NotFoundError):
            alices.chat.completions.create(model="away-model", messages=HELLO)

    assert (offline.value.status_code, offline.value.code) == (503, "model_offline")
    assert re.search(r"away-model.*?offline", shown, re.S), "the Models page lists the model as offline"
