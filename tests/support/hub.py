"""A real hub process (`gpuclub serve`) on a loopback port, and the `gpuclub` command line."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import Running, run

GPUCLUB = str(Path(sys.executable).parent / "gpuclub")
ROOT = Path(__file__).resolve().parents[2]


def hub_env(data_dir: Path, *, port: int, database_url: str | None = None, **extra: str) -> dict[str, str]:
    """The environment an operator would set; nothing leaks in from the developer's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCLUB_")}
    env.update(
        GPUCLUB_DATA_DIR=str(data_dir),
        GPUCLUB_PUBLIC_URL=f"http://127.0.0.1:{port}",
        GPUCLUB_PORT=str(port),
        GPUCLUB_SECRET_KEY="live-hub-secret-" + "y" * 32,
    )
    if database_url:
        env["GPUCLUB_DATABASE_URL"] = database_url
    env.update(extra)
    return env


def cli(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run `gpuclub ARGS` as an operator would and capture what it prints."""
    return subprocess.run(
        [GPUCLUB, *args], env=dict(env), capture_output=True, text=True, timeout=60, check=False, cwd=ROOT
    )


@dataclass
class LiveHub:
    url: str
    env: dict[str, str]
    process: Running
    owner_link: str

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return cli(self.env, *args)


@contextmanager
def live_hub(env: dict[str, str]) -> Iterator[LiveHub]:
    migrated = cli(env, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    with run([GPUCLUB, "serve"], env=env, cwd=ROOT) as process:
        link = process.wait_for(r"(http://\S+/setup/\S+)").group(1)
        process.wait_for(r"Uvicorn running on")
        yield LiveHub(url=env["GPUCLUB_PUBLIC_URL"], env=env, process=process, owner_link=link)
