"""Shared fixtures: a real database (SQLite file and PostgreSQL), the app, and people who use it."""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import NoReturn

import httpx
import pytest
from litestar import Litestar
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.app import create_app
from hub.db import Database
from hub.migrate import upgrade
from hub.models import metadata
from hub.settings import OidcSettings, Settings
from tests.support.hub import LiveHub, hub_env, live_hub
from tests.support.oidc import OidcProvider, start_oidc_provider
from tests.support.processes import free_port

REQUIRE_SERVICES = os.environ.get("GPUCLUB_REQUIRE_SERVICES") == "1"
POSTGRES_URL = os.environ.get("GPUCLUB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BASE_URL = "http://testserver.local"


def pytest_configure(config: pytest.Config) -> None:
    """Agents the tests start keep the hub's bills (agent.journal) in a folder of this run, not in ~/.local."""
    state = Path(tempfile.mkdtemp(prefix="gpuclub-agent-state-"))
    os.environ["XDG_STATE_HOME"] = str(state)
    config.add_cleanup(lambda: shutil.rmtree(state, ignore_errors=True))


def missing_service(reason: str) -> NoReturn:
    """Skip with a clear reason, or fail when CI says every service must be there."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (GPUCLUB_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def _sync_url(url: str) -> str:
    return str(make_url(url).set(drivername="postgresql+psycopg"))


@contextmanager
def fresh_postgres(prefix: str, driver: str = "postgresql+asyncpg") -> Iterator[str]:
    """A new, empty PostgreSQL database (its URL, with `driver`), dropped afterwards."""
    admin = create_engine(_sync_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any failure means "no PostgreSQL here"
        admin.dispose()
        missing_service(f"PostgreSQL is not reachable at {POSTGRES_URL}: {type(exc).__name__}")
    try:
        yield make_url(POSTGRES_URL).set(database=name, drivername=driver).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this run, dropped at the end."""
    with fresh_postgres("gpuclub_test") as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once; each test gets its own copy."""
    path = tmp_path_factory.mktemp("template") / "gpuclub.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    if request.param == "sqlite":
        path = tmp_path / "gpuclub.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite+aiosqlite:///{path}"
    url: str = request.getfixturevalue("postgres_server")
    engine = create_engine(_sync_url(url))
    tables = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    with engine.begin() as connection:
        # A session an earlier test left open in a transaction would block this for ever: fail within 30 s instead.
        connection.execute(text("SET LOCAL lock_timeout = '30s'"))
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        secret_key="test-secret-" + "x" * 32, database_url=database_url, data_dir=tmp_path, public_url=BASE_URL
    )


@pytest.fixture
async def database(settings: Settings) -> AsyncIterator[Database]:
    database = Database(settings.database_url)
    yield database
    # Work the test left running (a settlement, a cache load) ends while the loop still runs, so its connection
    # is closed here rather than collected, unclosed, in some later test.
    # What is only garbage now (an async generator never run to its end, a session kept alive by a traceback) is
    # collected while the loop runs, so its cleanup can still close its connection.
    gc.collect()
    await asyncio.sleep(0)
    for _ in range(5):  # again: a cancelled task may have started another (a shielded write, a cancel it sends)
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task() and not task.done()]
        if not others:
            break
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
    leaked = database.engine.pool.checkedout()  # type: ignore[attr-defined]
    await database.dispose()
    assert leaked == 0, f"the test left {leaked} database connection(s) checked out (a session never closed)"


@pytest.fixture
async def db(database: Database) -> AsyncIterator[AsyncSession]:
    async with database.session() as session:
        yield session


@pytest.fixture
def app(settings: Settings, database: Database) -> Litestar:
    return create_app(settings, database)


def browser_for(app: Litestar, base_url: str = BASE_URL) -> httpx.AsyncClient:
    """A browser-like client talking to the app in this event loop (so it shares the database pool)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)  # type: ignore[arg-type]


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    async with browser_for(app) as client:
        yield client


@pytest.fixture
async def their_browser(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """A second person's browser, with its own cookies, talking to the same app."""
    async with browser_for(app) as browser:
        yield browser


@pytest.fixture(scope="session")
def live_port() -> int:
    """One port for the live hubs of this run (one at a time), so the OIDC provider can know the callback."""
    return free_port()


@pytest.fixture(scope="session")
def oidc_provider(live_port: int) -> Iterator[OidcProvider]:
    if not (Path(__file__).parent / "node_modules" / "oidc-provider").is_dir():
        missing_service("the OIDC provider is not installed: run `npm ci --prefix tests` (make test does)")
    yield from start_oidc_provider(
        [f"{BASE_URL}/auth/oidc/callback", f"http://127.0.0.1:{live_port}/auth/oidc/callback"]
    )


@pytest.fixture
def oidc_settings(settings: Settings, oidc_provider: OidcProvider) -> Settings:
    """The app's settings with the test OIDC provider configured."""
    oidc = OidcSettings(oidc_provider.client_id, oidc_provider.client_secret, oidc_provider.discovery_url, "Lab SSO")
    return replace(settings, oidc=oidc)


@pytest.fixture
def live_env(tmp_path: Path, live_port: int, oidc_provider: OidcProvider) -> dict[str, str]:
    return hub_env(
        tmp_path / "live",
        port=live_port,
        GPUCLUB_OIDC_DISCOVERY_URL=oidc_provider.discovery_url,
        GPUCLUB_OIDC_CLIENT_ID=oidc_provider.client_id,
        GPUCLUB_OIDC_CLIENT_SECRET=oidc_provider.client_secret,
        GPUCLUB_OIDC_LABEL="Lab SSO",
    )


@pytest.fixture
def hub_process(live_env: dict[str, str]) -> Iterator[LiveHub]:
    """A real `gpuclub serve` on SQLite with the test OIDC provider, fresh for each test."""
    with live_hub(live_env) as hub:
        yield hub
