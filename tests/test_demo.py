"""`make demo`, run the way a newcomer runs it: on the port they chose, with something on every page."""

from __future__ import annotations

import csv
import io
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.people import text_of
from tests.support.processes import Running, free_port, run

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Demo:
    url: str
    output: Running
    browser: httpx.Client  # signed in as the demo owner with the link the demo printed


def newcomer_env(data_dir: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCLUB_")}
    return env | {"GPUCLUB_DATA_DIR": str(data_dir), **settings}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    port = free_port()
    env = newcomer_env(tmp_path_factory.mktemp("demo"), GPUCLUB_PORT=str(port))
    # `-o setup`: the venv and htmx are there already (the suite runs in them); the rest is `make demo` itself.
    with run(["make", "--no-print-directory", "-o", "setup", "demo"], env=env, cwd=ROOT) as output:
        link = output.wait_for(r"Open (http://\S+/login/\S+)", timeout=90).group(1)
        output.wait_for(r"Press Ctrl\+C to stop")
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=30) as browser:
            assert link.startswith(f"{url}/login/")
            signed_in = browser.get(link.removeprefix(url), follow_redirects=False)
            assert signed_in.status_code == 303, signed_in.text
            yield Demo(url, output, browser)
    output.drain()  # make passed SIGTERM on and the demo stopped its hub, model server and agent itself
    assert "demo stopped" in output.text, output.text


def page(demo: Demo, path: str) -> str:
    response = demo.browser.get(path)
    assert response.status_code == 200, f"{path}: {response.status_code}"
    return text_of(response.text)


def test_the_demo_serves_on_the_chosen_port_and_its_api_answers(demo: Demo) -> None:
    assert demo.browser.get("/healthz").json()["status"] == "ok"
    key = demo.output.wait_for(r"Bearer (gpc_\S+?)\"").group(1)
    assert demo.output.wait_for(r"curl (\S+)/v1/chat/completions").group(1) == demo.url

    models = httpx.get(f"{demo.url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=30)

    assert {"demo-llama-3-8b", "demo-embed"} <= {model["id"] for model in models.json()["data"]}


def test_the_demo_has_a_second_member_a_price_and_a_few_days_of_history(demo: Demo) -> None:
    assert "sam@example.org" in page(demo, "/admin/members")
    money = demo.browser.get("/admin/money").text
    price_row = text_of(money.split('data-model="demo-llama-3-8b"')[1].split("</tr>")[0])
    assert "100" in price_row and "300" in price_row
    assert "sam@example.org" in page(demo, "/admin/usage")
    assert "All good" in page(demo, "/admin/ledger")

    history = csv.DictReader(io.StringIO(demo.browser.get("/credits/history.csv").text))
    earnings = [row for row in history if "demo history" in " ".join(row.values())]
    days = {next(iter(row.values()))[:10] for row in earnings}  # the first column is the date
    assert len(earnings) >= 20 and len(days) >= 4, (len(earnings), days)


def test_the_demo_says_when_its_port_is_taken_and_starts_nothing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = newcomer_env(tmp_path, GPUCLUB_PORT=str(port))

        result = subprocess.run(
            [sys.executable, "-m", "tests.support.demo"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
        )

    assert result.returncode == 1
    assert f"Port {port} on 127.0.0.1 is in use" in result.stderr and "GPUCLUB_PORT=" in result.stderr
    assert not (tmp_path / "gpuclub.db").exists()
