"""A database outage under load: the hub keeps answering known keys from what it read last, turns a key it never
saw away with 503 and Retry-After, says "degraded" to load balancers, logs one line when the outage starts and one
when it ends, and afterwards writes every answered request's usage and charge exactly once.

The outage is real: the test's own PostgreSQL database refuses new connections and its sessions are terminated.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import create_engine, func, text
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from hub.ledger import service as ledger
from hub.ledger.grants import grant
from hub.ledger.models import LedgerTransaction
from hub.pricing import service as pricing
from hub.usage.models import UsageRecord
from tests.conftest import POSTGRES_URL, _sync_url, fresh_postgres
from tests.proxy.conftest import proxy_hub
from tests.support.cluster import agent_process, agent_token, member, provision
from tests.support.fake_upstream import fake_upstream
from tests.support.hub import LiveHub

CREDIT = 1_000_000
ONE_CREDIT_PER_5_TOKENS = 200_000 * CREDIT
TOKENS = 10  # 2 credits a request
COST = 2 * CREDIT
GRANTED = 100_000 * CREDIT
CLIENTS = 6  # per key
CACHE_SECONDS = 10.0  # the longest the hub trusts what it read (keys, prices, limits) while the database is up
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": TOKENS}


@dataclass
class Load:
    """Clients sending requests in a loop, and every status they got, in order."""

    statuses: dict[str, list[int]] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def answered(self) -> int:
        return sum(statuses.count(200) for statuses in self.statuses.values())

    async def client(self, hub_url: str, name: str, key: str) -> None:
        got = self.statuses.setdefault(name, [])
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=hub_url, headers=headers, timeout=30) as client:
            while not self.stop.is_set():
                got.append((await client.post("/v1/chat/completions", json=BODY)).status_code)
                async with self.changed:
                    self.changed.notify_all()

    async def until(self, answered: int, deadline: float = 20.0) -> None:
        """Wait (bounded) until at least `answered` requests have been answered in all."""
        async with asyncio.timeout(deadline), self.changed:
            await self.changed.wait_for(lambda: self.answered() >= answered)


@contextmanager
def refusing(database: str) -> Iterator[None]:
    """The database refuses connections and its sessions end, as if its server had gone; afterwards it is back."""
    admin = create_engine(_sync_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false'))
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name "
                    "AND pid <> pg_backend_pid()"
                ),
                {"name": database},
            )
        yield
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true'))
        admin.dispose()


async def test_known_keys_are_served_through_a_database_outage_and_everything_is_written_after(tmp_path: Path) -> None:
    with (
        fresh_postgres("gpuclub_outage", driver="postgresql") as url,
        proxy_hub(tmp_path / "hub", database_url=url, GPUCLUB_PROBE_MINUTES="0") as hub,
        fake_upstream(["m"]) as upstream,
    ):
        database = url.rsplit("/", 1)[1]
        provider = member(hub, "provider@lab.example.org")
        alice = member(hub, "alice@lab.example.org")
        bob = member(hub, "bob@lab.example.org")
        carol = member(hub, "carol@lab.example.org")  # her key is first used during the outage

        async def prepare(db: AsyncSession) -> None:
            await pricing.set_price(db, None, "m", input_micro=0, output_micro=ONE_CREDIT_PER_5_TOKENS)
            await pricing.set_fee(db, None, 1000)  # 10 %
            for who in (alice, bob, carol):
                await grant(db, None, await accounts.get_member(db, who.email), GRANTED, reason="test")

        provision(hub, prepare)
        keys = {"alice": alice.key, "bob": bob.key}
        late_token = agent_token(hub, provider.email, "late-gpu")  # its agent first dials in during the outage
        with (
            agent_process(hub, agent_token(hub, provider.email, "gpu"), f"{upstream.url}/v1", capacity=16),
            ExitStack() as later,
        ):
            async with httpx.AsyncClient(base_url=hub.url, timeout=30) as browser:
                for key in keys.values():  # warm up: each key used once
                    warm = await browser.post("/v1/chat/completions", json=BODY, headers=_bearer(key))
                    assert warm.status_code == 200, warm.text
                assert (await browser.get("/healthz")).json()["status"] == "ok"

                load = Load(statuses={"alice": [200], "bob": [200]})
                clients = [
                    asyncio.create_task(load.client(hub.url, name, key))
                    for name, key in keys.items()
                    for _ in range(CLIENTS)
                ]
                await load.until(load.answered() + 50)
                mark = hub.process.mark()
                with refusing(database):
                    began = time.monotonic()
                    await asyncio.to_thread(hub.process.wait_for, r"database unreachable", 20, since=mark)
                    noticed = load.answered()
                    health = await browser.get("/healthz")
                    stranger = await browser.post("/v1/chat/completions", json=BODY, headers=_bearer(carol.key))
                    landing = await browser.get("/")
                    late_agent = later.enter_context(agent_process(hub, late_token, f"{upstream.url}/v1", wait=False))
                    turned_away = await asyncio.to_thread(
                        late_agent.wait_for, r"the hub cannot take the agent now \((.*?)\)", 20
                    )
                    await load.until(noticed + 100)
                    # The outage lasts until everything read before it has expired (not a synchronisation: the
                    # clients go on meanwhile); the hub still answers from it.
                    await asyncio.sleep(max(0.0, began + CACHE_SECONDS + 0.5 - time.monotonic()))
                    expired = load.answered()
                    await load.until(expired + 100)
                    late, during = load.answered() - expired, load.answered() - noticed
                await asyncio.to_thread(hub.process.wait_for, r"database reachable again", 20, since=mark)
                back = load.answered()
                await asyncio.to_thread(late_agent.wait_for, r"connected to the hub", 40)  # by itself, with its backoff
                health_after = await browser.get("/healthz")
                await load.until(back + 50)
                load.stop.set()
                await asyncio.gather(*clients)
                carol_after = await browser.post("/v1/chat/completions", json=BODY, headers=_bearer(carol.key))
            answered = {name: statuses.count(200) for name, statuses in load.statuses.items()}
            answered["carol"] = 1
            written = await _written(hub, sum(answered.values()))

        async def outcome(db: AsyncSession) -> tuple[dict[str, int], int, list[str]]:
            left = {}
            for name, who in (("alice", alice), ("bob", bob), ("carol", carol)):
                now = await ledger.balance_of(db, (await accounts.get_member(db, who.email)).pk)
                left[name] = now.balance + now.held
            earned = (await ledger.balance_of(db, (await accounts.get_member(db, provider.email)).pk)).balance
            return left, earned, await ledger.check(db)

        left, earned, problems = provision(hub, outcome)
        log = hub.process.text

    assert {status for statuses in load.statuses.values() for status in statuses} == {200}  # no 500, no 503
    assert during >= 200  # known keys kept being answered while the database was away
    assert late >= 100  # also after everything read before the outage had expired
    assert (health.status_code, health.json()) == (200, {"status": "degraded", "database": "unreachable"})
    assert stranger.status_code == 503 and int(stranger.headers["retry-after"]) > 0
    assert stranger.json()["error"]["code"] == "database_unavailable"
    assert stranger.json()["error"]["type"] == "server_error"
    assert landing.status_code == 503 and "database" in landing.text and "Traceback" not in landing.text
    assert (health_after.status_code, health_after.json()["status"]) == (200, "ok")
    assert carol_after.status_code == 200  # not an unknown key: only never read
    assert written == Written(answered, sum(answered.values()))
    assert left == {name: GRANTED - count * COST for name, count in answered.items()}
    assert earned == sum(answered.values()) * COST * 9 // 10
    assert problems == []
    assert len([line for line in log.splitlines() if "database unreachable" in line]) == 1
    assert len([line for line in log.splitlines() if "database reachable again" in line]) == 1
    assert "Traceback" not in log
    assert turned_away.group(1) == "the hub's database is unreachable"


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Written:
    rows: dict[str, int]  # usage rows of answered requests, by member
    charges: int  # usage transactions in the ledger


async def _written(hub: LiveHub, total: int, deadline: float = 30.0) -> Written:
    """What the hub wrote, once (polled, bounded) `total` usage rows are there."""

    async def counts(db: AsyncSession) -> Written:
        rows = (
            await db.exec(
                select(col(UsageRecord.user_id), func.count())
                .where(UsageRecord.status == 200)
                .group_by(col(UsageRecord.user_id))
            )
        ).all()
        names = {}
        for email in ("alice", "bob", "carol"):
            names[(await accounts.get_member(db, f"{email}@lab.example.org")).pk] = email
        query = select(func.count()).select_from(LedgerTransaction)
        charges = (await db.exec(query.where(col(LedgerTransaction.key).startswith("request:")))).one()
        return Written({names[user_id]: count for user_id, count in rows}, charges)

    end = time.monotonic() + deadline
    while True:
        found = await asyncio.to_thread(provision, hub, counts)
        if sum(found.rows.values()) >= total or time.monotonic() > end:
            return found
        await asyncio.sleep(0.2)
