"""A real llama.cpp `llama-server` with the tiny model, and a club whose one GPU owner shares it through an agent.

Skipped where `llama-server` is not built (`make test-llama` builds it); a failure under GPUCLUB_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from hub.ledger import service as ledger
from hub.ledger.grants import grant
from hub.pricing import service as pricing
from tests.conftest import missing_service
from tests.proxy.conftest import proxy_hub
from tests.support import llama_build, tiny_gguf
from tests.support.cluster import Member, agent_process, agent_token, member, provision
from tests.support.hub import LiveHub
from tests.support.llama import RERANKER, LlamaServer, built, llama_server

CREDIT = 1_000_000
PER_TOKEN = CREDIT * 1_000_000  # a price per million tokens that makes one token cost one credit
START = 100_000  # credits the member starts with


@pytest.fixture(scope="session")
def binary() -> Path:
    found = built()
    if found is None:
        missing_service(f"llama-server is not built at {llama_build.binary()}: run `make test-llama`")
    return found


@pytest.fixture(scope="session")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_gguf.write(tmp_path_factory.mktemp("model") / "tiny.gguf")


@pytest.fixture(scope="session")
def llama(binary: Path, model_file: Path) -> Iterator[LlamaServer]:
    """llama-server as most people run it: chat, completions, responses and messages; no rerank, no embeddings."""
    with llama_server(binary, model_file) as server:
        yield server


@pytest.fixture(scope="session")
def reranker(binary: Path, model_file: Path) -> Iterator[LlamaServer]:
    with llama_server(binary, model_file, name=RERANKER, extra=["--reranking"]) as server:
        yield server


@dataclass
class Club:
    hub: LiveHub
    llama: LlamaServer
    reranker: LlamaServer
    alice: Member

    def rows(self, count: int, endpoint: str = "%") -> list[dict[str, Any]]:
        """Alice's usage rows, once `count` of them are written (just after each answer, with the charge)."""

        async def read(db: AsyncSession) -> list[dict[str, Any]]:
            user = await accounts.get_member(db, self.alice.email)
            query = text("SELECT * FROM usage WHERE user_id = :user AND endpoint LIKE :endpoint ORDER BY id")
            found = await db.exec(query, params={"user": user.pk, "endpoint": endpoint})  # type: ignore[call-overload]
            return [dict(row._mapping) for row in found]

        deadline = time.monotonic() + 10
        while len(found := provision(self.hub, read)) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return found

    def credits(self) -> float:
        """Alice's balance in credits (what is still held counts as spent); one token costs one credit."""

        async def read(db: AsyncSession) -> float:
            account = await ledger.balance_of(db, (await accounts.get_member(db, self.alice.email)).pk)
            return (account.balance - account.held) / CREDIT

        return provision(self.hub, read)


@pytest.fixture(scope="module")
def club(llama: LlamaServer, reranker: LlamaServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Club]:
    """One GPU owner's agent in front of both servers, and Alice, who pays one credit a token for either model."""
    with proxy_hub(tmp_path_factory.mktemp("hub")) as hub:
        owner = member(hub, "owner@lab.example.org")
        alice = member(hub, "alice@lab.example.org")

        async def prices_and_credits(db: AsyncSession) -> None:
            for model in (llama.model, reranker.model):
                await pricing.set_price(db, None, model, input_micro=PER_TOKEN, output_micro=PER_TOKEN)
            await grant(db, None, await accounts.get_member(db, alice.email), START * CREDIT, reason="test")

        provision(hub, prices_and_credits)
        token = agent_token(hub, owner.email, "llama-box")
        with agent_process(hub, token, llama.url, reranker.url, name="llama-box"):
            yield Club(hub, llama, reranker, alice)
