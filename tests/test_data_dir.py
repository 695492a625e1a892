"""The data directory (session secret, SQLite database) is readable only by the hub's own user."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx

from tests.support.hub import cli, hub_env, live_hub
from tests.support.processes import free_port


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_migrate_makes_the_data_dir_0700_and_the_database_0600(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = hub_env(data, port=8000)
    del env["GPUCLUB_SECRET_KEY"]  # so the hub makes its own secret file too

    result = cli(env, "migrate")

    assert result.returncode == 0, result.stderr
    assert mode(data) == 0o700
    assert mode(data / "gpuclub.db") == 0o600
    assert mode(data / "secret_key") == 0o600
    assert "readable by others" not in result.stderr


def test_a_data_dir_left_open_to_others_is_tightened_with_a_warning(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    (data / "gpuclub.db").touch()
    (data / "gpuclub.db").chmod(0o644)

    result = cli(hub_env(data, port=8000), "migrate")

    assert result.returncode == 0, result.stderr
    assert mode(data) == 0o700 and mode(data / "gpuclub.db") == 0o600
    assert f"{data} was readable by others (mode 755): tightened it to 700" in result.stderr
    assert f"{data / 'gpuclub.db'} was readable by others (mode 644): tightened it to 600" in result.stderr


def test_a_serving_hub_keeps_its_wal_and_shm_files_private_too(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with live_hub(hub_env(data, port=free_port())) as hub:
        assert httpx.get(f"{hub.url}/healthz").json()["database"] == "ok"  # the pool now holds a connection open

        files = {path.name: mode(path) for path in data.iterdir()}

    assert {"gpuclub.db", "gpuclub.db-wal", "gpuclub.db-shm"} <= files.keys()
    assert set(files.values()) == {0o600}, files
    assert mode(data) == 0o700
