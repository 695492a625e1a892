"""The proxy is tested end to end: hub, agents and upstreams are real processes; the client is the openai SDK."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import fresh_postgres
from tests.support.hub import LiveHub, hub_env, live_hub
from tests.support.processes import free_port


@contextmanager
def proxy_hub(data_dir: Path, **extra: str) -> Iterator[LiveHub]:
    """A hub process with quick heartbeats and short queues, so failures show within a test's patience."""
    quick = {"GPUCLUB_AGENT_HEARTBEAT": "0.5", "GPUCLUB_QUEUE_WAIT_SECONDS": "30", "GPUCLUB_UPSTREAM_TIMEOUT": "20"}
    env = hub_env(data_dir, port=free_port(), **(quick | extra))
    with live_hub(env) as running:
        yield running


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[LiveHub]:
    """A fresh hub for tests that break things."""
    with proxy_hub(tmp_path / "hub") as running:
        yield running


def database_of(hub: LiveHub) -> Path:
    return Path(hub.env["GPUCLUB_DATA_DIR"]) / "gpuclub.db"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def live_database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database for one module's hub: its own SQLite file, or its own PostgreSQL database (dropped after)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'gpuclub.db'}"
        return
    with fresh_postgres("gpuclub_live", driver="postgresql") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def own_database(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """A test hub's database setting: its own SQLite file (the default), or its own PostgreSQL database."""
    if request.param == "sqlite":
        yield {}
        return
    with fresh_postgres("gpuclub_own", driver="postgresql") as url:
        yield {"GPUCLUB_DATABASE_URL": url}
