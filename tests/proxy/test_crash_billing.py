"""A crash loses no charge: the hub SIGKILLed under load, restarted, and every answer a client received whole is
charged exactly once, from the bills its agent kept (hub/proxy/bills.py, agent/journal.py)."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from hub.ledger import service as ledger
from hub.ledger.grants import grant
from hub.pricing import service as pricing
from hub.usage.models import UsageRecord
from tests.proxy.conftest import database_of, proxy_hub
from tests.support.cluster import agent_process, agent_token, member, provision
from tests.support.fake_upstream import fake_upstream
from tests.support.hub import GPUCLUB, ROOT, LiveHub
from tests.support.processes import run

CREDIT = 1_000_000
TOKENS = 5  # one credit per answer
PRICE = {"input_micro": 0, "output_micro": 200_000 * CREDIT}  # per million tokens: 0.2 credits a token
CLIENTS = 6
ANSWERS = 36  # answered while the database would not take a single write, then the hub is killed
WARM_UP = 4


def body(stream: bool) -> dict[str, object]:
    chat: dict[str, object] = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": TOKENS}
    return chat | {"stream": True, "stream_options": {"include_usage": True}} if stream else chat


async def ask(client: httpx.AsyncClient, stream: bool) -> bool:
    """One request; True when the client got the whole answer (a stream up to `[DONE]`)."""
    if not stream:
        answer = await client.post("/v1/chat/completions", json=body(False))
        return answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == TOKENS
    last = ""
    async with client.stream("POST", "/v1/chat/completions", json=body(True)) as response:
        if response.status_code != 200:
            return False
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                last = line.removeprefix("data: ")
    return last == "[DONE]"


async def load(client: httpx.AsyncClient, worker: int, answered: list[int], enough: asyncio.Event) -> None:
    """Ask again and again until the hub dies under it; count the whole answers."""
    stream = worker % 2 == 0
    while True:
        try:
            whole = await ask(client, stream)
        except (httpx.HTTPError, json.JSONDecodeError):
            return  # the hub is gone: whatever this request was, the client did not get it whole
        if whole:
            answered.append(worker)
            if len(answered) >= ANSWERS:
                enough.set()


@contextmanager
def writes_blocked(hub: LiveHub) -> Iterator[None]:
    """Another process holds the lock the hub needs to write usage: SQLite's write lock, or PostgreSQL's on the
    usage table (reads go on)."""
    url = hub.env.get("GPUCLUB_DATABASE_URL")
    if url is None:
        lock = sqlite3.connect(database_of(hub), isolation_level=None, timeout=30)
        lock.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        return
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as connection, connection.begin() as transaction:
            connection.execute(text("LOCK TABLE usage IN EXCLUSIVE MODE"))
            yield
            transaction.rollback()
    finally:
        engine.dispose()


def written(hub: LiveHub, at_least: int = 0, timeout: float = 10.0) -> list[str]:
    """The request ids of the usage rows in the hub's database (waiting, bounded, for `at_least` of them)."""

    async def ids(db: AsyncSession) -> list[str]:
        return list((await db.exec(select(UsageRecord.request_id))).all())

    deadline = time.monotonic() + timeout
    while len(found := provision(hub, ids)) < at_least and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def kept_bills(journal: Path) -> set[str]:
    """The ids the agent's journal still keeps (read without touching the file the agent appends to)."""
    kept: set[str] = set()
    for line in journal.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:  # a line the agent is writing right now
            continue
        kept |= {entry["id"]} if "id" in entry else set()
        kept -= set(entry.get("written", []))
    return kept


def confirmed(journal: Path, timeout: float = 10.0) -> set[str]:
    """Wait (bounded) until the hub has confirmed every bill; what is left then."""
    deadline = time.monotonic() + timeout
    while (left := kept_bills(journal)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


async def test_a_hub_killed_under_load_charges_every_whole_answer_once_after_its_restart(
    tmp_path: Path, own_database: dict[str, str]
) -> None:
    journal = tmp_path / "agent-bills.jsonl"
    with proxy_hub(tmp_path / "hub", **own_database) as hub, fake_upstream(["m"]) as upstream:
        provider = member(hub, "provider@lab.example.org")
        alice = member(hub, "alice@lab.example.org")

        async def prepare(db: AsyncSession) -> None:
            await pricing.set_price(db, None, "m", **PRICE)
            await pricing.set_fee(db, None, 1000)  # 10 %
            await grant(db, None, await accounts.get_member(db, alice.email), 1000 * CREDIT, reason="test")

        provision(hub, prepare)
        token = agent_token(hub, provider.email, "gpu")
        with agent_process(
            hub, token, f"{upstream.url}/v1", capacity=CLIENTS, extra=("--journal", str(journal))
        ) as gpu:
            headers = {"Authorization": f"Bearer {alice.key}"}
            async with httpx.AsyncClient(base_url=hub.url, headers=headers, timeout=30) as client:
                for index in range(WARM_UP):  # keys, prices and the balance are read; these are written at once
                    assert await ask(client, stream=index % 2 == 0)
                await asyncio.to_thread(written, hub, WARM_UP)  # within 0.2 s

                # From here the hub's database takes no write (another process holds the lock), so every answer
                # below exists only in the hub's memory and in the agent's journal when the hub dies.
                with writes_blocked(hub):
                    answered: list[int] = []
                    enough = asyncio.Event()
                    workers = [asyncio.create_task(load(client, n, answered, enough)) for n in range(CLIENTS)]
                    await asyncio.wait_for(enough.wait(), 60)
                    hub.process.process.send_signal(signal.SIGKILL)
                    await asyncio.wait_for(asyncio.gather(*workers), 30)
                    await asyncio.to_thread(hub.process.process.wait, 10)
            lost_without_bills = len(written(hub)) - WARM_UP

            mark = gpu.mark()
            with run([GPUCLUB, "serve"], env=hub.env, cwd=ROOT) as again:
                await asyncio.to_thread(again.wait_for, r"Uvicorn running on")
                await asyncio.to_thread(gpu.wait_for, r"connected to the hub", 30, since=mark)
                sent = await asyncio.to_thread(gpu.wait_for, r"sent the hub (\d+) bills", 10, since=mark)
                await asyncio.to_thread(again.wait_for, r"agent \d+ sent \d+ bills not yet confirmed; \d+ queued")
                left = await asyncio.to_thread(confirmed, journal)
            # The hub has stopped (SIGTERM): what it had queued is written.
            rows = written(hub)

            async def outcome(db: AsyncSession) -> tuple[int, int, list[str]]:
                alice_now = await ledger.balance_of(db, (await accounts.get_member(db, alice.email)).pk)
                provider_now = await ledger.balance_of(db, (await accounts.get_member(db, provider.email)).pk)
                return alice_now.balance, provider_now.balance, await ledger.check(db)

            alice_left, earned, problems = provision(hub, outcome)

    charged = len(rows) - WARM_UP
    assert lost_without_bills == 0  # not one of these answers reached the database before the crash
    assert int(sent.group(1)) >= len(answered)
    # Each answer a client got whole is charged; the only extra ones are requests in flight at the kill whose bill
    # had reached the agent but whose last bytes had not reached the client (at most one per client).
    assert len(answered) <= charged <= len(answered) + CLIENTS
    assert len(set(rows)) == len(rows)
    assert alice_left == 1000 * CREDIT - len(rows) * CREDIT  # one credit per answer, once
    assert earned == len(rows) * CREDIT * 9 // 10
    assert problems == []
    assert left == set()  # the hub confirmed every bill: the agent keeps none
