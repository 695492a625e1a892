"""`gpuclub backup DIR` on both databases: a copy the operator can restore, with the secret key beside it."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

from tests.conftest import fresh_postgres
from tests.support.hub import cli, hub_env


def restored_sqlite(tmp_path: Path, saved: Path) -> dict[str, str]:
    """A second hub's environment, its data directory restored from `saved` as docs/operations.md says."""
    data = tmp_path / "restored"
    data.mkdir()
    shutil.copy2(saved / "secret_key", data / "secret_key")
    shutil.copy2(saved / "gpuclub.db", data / "gpuclub.db")
    env = hub_env(data, port=8000)
    env.pop("GPUCLUB_SECRET_KEY")
    return env


def test_a_sqlite_backup_restores_the_club(tmp_path: Path) -> None:
    env = hub_env(tmp_path / "hub", port=8000)
    env.pop("GPUCLUB_SECRET_KEY")  # the secret the hub made in its data directory goes along
    assert cli(env, "migrate").returncode == 0
    assert cli(env, "member", "add", "alice@lab.example.org").returncode == 0

    result = cli(env, "backup", str(tmp_path / "saved"))
    again = cli(env, "backup", str(tmp_path / "saved"))

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(tmp_path / "saved" / "gpuclub.db"), str(tmp_path / "saved" / "secret_key")]
    assert stat.S_IMODE((tmp_path / "saved" / "gpuclub.db").stat().st_mode) == 0o600
    assert again.returncode == 1 and "is not empty" in again.stderr
    duplicate = cli(restored_sqlite(tmp_path, tmp_path / "saved"), "member", "add", "alice@lab.example.org")
    assert duplicate.returncode == 1 and "already" in duplicate.stderr  # alice is in the restored club


def test_a_postgres_backup_restores_the_club_with_pg_restore(tmp_path: Path) -> None:
    with fresh_postgres("gpuclub_backup", driver="postgresql") as url, fresh_postgres("gpuclub_restore") as target:
        env = hub_env(tmp_path / "hub", port=8000, database_url=url)
        assert cli(env, "migrate").returncode == 0
        assert cli(env, "member", "add", "alice@lab.example.org").returncode == 0

        result = cli(env, "backup", str(tmp_path / "saved"))
        plain = target.replace("postgresql+asyncpg://", "postgresql://")
        restore = subprocess.run(
            ["pg_restore", "--no-owner", "--dbname", plain, str(tmp_path / "saved" / "gpuclub.pgdump")],
            capture_output=True,
            text=True,
            check=False,
        )
        duplicate = cli(
            hub_env(tmp_path / "restored", port=8000, database_url=target), "member", "add", "alice@lab.example.org"
        )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(tmp_path / "saved" / "gpuclub.pgdump")]  # the secret came from the env
    assert restore.returncode == 0, restore.stderr
    assert duplicate.returncode == 1 and "already" in duplicate.stderr


def test_a_backup_of_an_unreachable_postgres_fails_with_one_line(tmp_path: Path) -> None:
    env = hub_env(tmp_path / "hub", port=8000, database_url="postgresql://nobody@127.0.0.1:1/none")

    result = cli(env, "backup", str(tmp_path / "saved"))

    assert result.returncode == 1
    assert result.stderr.startswith("gpuclub: pg_dump failed:") and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "saved" / "gpuclub.pgdump").exists()
