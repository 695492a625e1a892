"""A GPU owner's first five minutes: the command My GPUs shows, run on a machine with only Python.

The agent is installed from the running hub's own URL into a fresh venv (its dependencies from pip's configured
index), and that venv's `gpuclub-agent`, not this repository's, brings a model online.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import httpx
import pytest

from agent import __version__
from tests.agent.conftest import MODELS
from tests.support.cluster import member, signed_in, submit
from tests.support.fake_upstream import RunningFake
from tests.support.hub import LiveHub, hub_env, live_hub
from tests.support.processes import free_port, run

WHEEL = f"gpuclub_agent-{__version__}-py3-none-any.whl"


@pytest.fixture(scope="module")
def real_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveHub]:
    with live_hub(hub_env(tmp_path_factory.mktemp("hub"), port=free_port())) as hub:
        yield hub


def shown_command(page: str, element: str) -> str:
    found = re.search(rf'<code id="{element}">(.*?)</code>', page, re.S)
    assert found, f"no #{element} on the page"
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", found.group(1))).split())


def test_anyone_downloads_the_agent_wheel_and_it_holds_only_the_agent(real_hub: LiveHub) -> None:
    with httpx.Client(base_url=real_hub.url) as anonymous:
        wheel = anonymous.get(f"/agent/{WHEEL}")
        other = anonymous.get("/agent/gpuclub_agent-0.0.1-py3-none-any.whl")

    assert wheel.status_code == 200
    assert wheel.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(BytesIO(wheel.content)).namelist()
    assert "agent/cli.py" in names and f"gpuclub_agent-{__version__}.dist-info/entry_points.txt" in names
    assert not [name for name in names if name.startswith("hub/")]
    assert other.status_code == 404


def test_the_command_on_my_gpus_installs_from_the_hub_and_brings_the_gpu_online(
    real_hub: LiveHub, upstream: RunningFake, tmp_path: Path
) -> None:
    owner = member(real_hub, "pia@lab.example.org")
    with signed_in(real_hub, owner.email) as browser:
        page = submit(browser, "/gpus", "/gpus", {"name": "desk-3090"}).text
    pipx = shown_command(page, "agent-command")
    uvx = shown_command(page, "agent-command-uvx")
    shown = re.fullmatch(
        rf"pipx run --spec (\S+) gpuclub-agent --hub {re.escape(real_hub.url)} --token (gpa_\S+) "
        r"--upstream http://127\.0\.0\.1:11434/v1",
        pipx,
    )
    assert shown, pipx
    url, token = shown.groups()
    assert url == f"{real_hub.url}/agent/{WHEEL}"
    assert (
        uvx
        == f"uvx --from {url} gpuclub-agent --hub {real_hub.url} --token {token} --upstream http://127.0.0.1:11434/v1"
    )
    assert f"ExecStart=/opt/gpuclub-agent/bin/gpuclub-agent --hub {real_hub.url}" in page

    # What pipx does underneath: a venv of its own, and pip installing the wheel from the hub's URL.
    venv = tmp_path / "machine"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [venv / "bin" / "pip", "install", "--quiet", url], capture_output=True, text=True, timeout=300, check=False
    )
    assert installed.returncode == 0, installed.stderr
    listed = subprocess.run(
        [venv / "bin" / "pip", "list", "--format=json"], capture_output=True, text=True, timeout=60, check=True
    )
    packages = {entry["name"].lower(): entry["version"] for entry in json.loads(listed.stdout)}
    assert packages["gpuclub-agent"] == __version__
    assert {"httpx", "websockets", "aiohttp", "tenacity"} <= packages.keys()
    assert not {"litestar", "sqlmodel", "sqlalchemy", "stripe", "gpuclub"} & packages.keys()

    command = [str(venv / "bin" / "gpuclub-agent"), "--hub", real_hub.url, "--token", token]
    with run([*command, "--upstream", f"{upstream.url}/v1"], env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path) as agent:
        agent.wait_for(r"connected to the hub")
        with httpx.Client(base_url=real_hub.url, headers={"Authorization": f"Bearer {owner.key}"}) as client:
            listed_models = client.get("/v1/models").json()

    assert sorted(model["id"] for model in listed_models["data"]) == sorted(MODELS)


def test_the_hubs_wheel_holds_what_setuptools_builds_from_agent_pyproject(real_hub: LiveHub, tmp_path: Path) -> None:
    """The hub writes the wheel itself; `pip wheel agent/` (setuptools) must agree on files and requirements."""
    source = Path(__file__).resolve().parents[2] / "agent"
    copy = tmp_path / "agent"  # built in a copy: setuptools leaves build/ and egg-info next to the sources
    copy.mkdir()
    for path in [*source.glob("*.py"), source / "pyproject.toml"]:
        (copy / path.name).write_bytes(path.read_bytes())
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", str(copy), "-w", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    with httpx.Client(base_url=real_hub.url) as anonymous:
        served = zipfile.ZipFile(BytesIO(anonymous.get(f"/agent/{WHEEL}").content))
    reference = zipfile.ZipFile(tmp_path / "out" / WHEEL)

    def code(archive: zipfile.ZipFile) -> dict[str, bytes]:
        return {name: archive.read(name) for name in archive.namelist() if not name.startswith("gpuclub_agent-")}

    def requirements(archive: zipfile.ZipFile) -> list[str]:
        metadata = archive.read(f"gpuclub_agent-{__version__}.dist-info/METADATA").decode()
        return sorted(line for line in metadata.splitlines() if line.startswith(("Requires-", "Name:", "Version:")))

    assert code(served) == code(reference)
    assert requirements(served) == requirements(reference)
    assert (
        served.read(f"gpuclub_agent-{__version__}.dist-info/entry_points.txt").split()
        == reference.read(f"gpuclub_agent-{__version__}.dist-info/entry_points.txt").split()
    )
