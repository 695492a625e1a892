"""A whole club on one machine: the hub process, fake upstream processes and real `gpuclub-agent` processes."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from hub.accounts.models import Role
from hub.agents import service as agents
from hub.db import Database
from hub.keys import service as keys
from hub.settings import Settings
from tests.support.hub import LiveHub
from tests.support.processes import Running, run

AGENT = str(Path(sys.executable).parent / "gpuclub-agent")
T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Member:
    email: str
    key: str


def _database_url(hub: LiveHub) -> str:
    return Settings.from_env(hub.env).database_url


def _run(work: Callable[[], Coroutine[Any, Any, str]]) -> str:
    """Run set-up work to completion, also from inside an async test (in a thread with its own loop)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, work()).result()


def member(hub: LiveHub, email: str, role: Role = Role.MEMBER) -> Member:
    """A member with an API key, written straight into the hub's database (the CLI tests cover that path)."""

    async def add() -> str:
        database = Database(_database_url(hub))
        try:
            async with database.session() as db:
                user = await accounts.find_by_email(db, email) or await accounts.add_member(db, email, role=role)
                _, secret = await keys.create_key(db, user, name="test")
                return secret
        finally:
            await database.dispose()

    return Member(email, _run(add))


def agent_token(hub: LiveHub, email: str, name: str) -> str:
    async def create() -> str:
        database = Database(_database_url(hub))
        try:
            async with database.session() as db:
                user = await accounts.get_member(db, email)
                _, token = await agents.create_agent(db, user, name=name)
                return token
        finally:
            await database.dispose()

    return _run(create)


@contextmanager
def agent_process(
    hub: LiveHub,
    token: str,
    *upstreams: str,
    capacity: int = 8,
    name: str = "gpu",
    wait: bool = True,
    extra: Sequence[str] = (),
) -> Iterator[Running]:
    """Run `gpuclub-agent` as a GPU owner would; by default wait until the hub has welcomed it.

    `extra` are further command-line flags, e.g. `("--refresh", "1")`.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCLUB_")}
    env["GPUCLUB_AGENT_TOKEN"] = token
    command = [AGENT, "--hub", hub.url, "--max-concurrency", str(capacity), "--name", name]
    for upstream in upstreams:
        command += ["--upstream", upstream]
    command += extra
    with run(command, env=env, cwd=ROOT) as process:
        if wait:
            process.wait_for(r"connected to the hub")
        yield process


def usage_rows(database: Path, where: str = "1=1") -> list[dict[str, object]]:
    """What the hub recorded, read straight from its SQLite file."""
    import sqlite3

    with sqlite3.connect(database) as connection:
        connection.row_factory = sqlite3.Row
        rows = connection.execute(f"SELECT * FROM usage WHERE {where} ORDER BY id").fetchall()
    return [dict(row) for row in rows]


def recorded(database: Path, count: int, where: str = "1=1", timeout: float = 10.0) -> list[dict[str, object]]:
    """Usage is written just after the response; wait (bounded) until `count` rows are there."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        rows = usage_rows(database, where)
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.02)


@contextmanager
def signed_in(hub: LiveHub, email: str) -> Iterator[httpx.Client]:
    """A browser signed in to the live hub as `email` (through a one-time sign-in link)."""

    async def link() -> str:
        database = Database(_database_url(hub))
        try:
            async with database.session() as db:
                user = await accounts.get_member(db, email)
                return await accounts.create_login_link(db, user, minutes=5)
        finally:
            await database.dispose()

    with httpx.Client(base_url=hub.url, follow_redirects=True, timeout=20) as browser:
        assert browser.get(f"/login/{_run(link)}").status_code == 200
        yield browser


def submit(browser: httpx.Client, page: str, action: str, data: dict[str, str] | None = None) -> httpx.Response:
    """Post a form the way the page would, CSRF token included."""
    token = re.search(r'name="_csrf_token" value="([^"]+)"', browser.get(page).text)
    assert token, f"{page} has no form"
    return browser.post(action, data={"_csrf_token": token.group(1), **(data or {})})


def provision(hub: LiveHub, work: Callable[[AsyncSession], Coroutine[Any, Any, T]]) -> T:
    """Run `work` with a session on the hub's own database, as an operator's script would."""

    async def session() -> T:
        database = Database(_database_url(hub))
        try:
            async with database.session() as db:
                return await work(db)
        finally:
            await database.dispose()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, session()).result()
