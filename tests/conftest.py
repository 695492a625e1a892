"""Shared fixtures: a real database (SQLite file and PostgreSQL), the app, and people who use it."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

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
from hub.settings import Settings

REQUIRE_SERVICES = os.environ.get("GPUCLUB_REQUIRE_SERVICES") == "1"
POSTGRES_URL = os.environ.get("GPUCLUB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BASE_URL = "http://testserver.local"


def missing_service(reason: str) -> None:
    """Skip with a clear reason, or fail when CI says every service must be there."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (GPUCLUB_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def _sync_url(url: str) -> str:
    return str(make_url(url).set(drivername="postgresql+psycopg"))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this run, dropped at the end."""
    admin = create_engine(_sync_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    name = f"gpuclub_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any failure means "no PostgreSQL here"
        admin.dispose()
        missing_service(f"PostgreSQL is not reachable at {POSTGRES_URL}: {type(exc).__name__}")
    url = str(make_url(POSTGRES_URL).set(database=name, drivername="postgresql+asyncpg"))
    upgrade(url)
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


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
    await database.dispose()


@pytest.fixture
async def db(database: Database) -> AsyncIterator[AsyncSession]:
    async with database.session() as session:
        yield session


@pytest.fixture
def app(settings: Settings, database: Database) -> Litestar:
    return create_app(settings, database)


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client talking to the app in this event loop (so it shares the database pool)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as client:
        yield client
