"""The hub's container image, built from this checkout and run under a real dockerd as an operator would.

The container keeps its data in a named volume and shares the host's network (dockerd runs here without a
bridge), so an agent on the host dials it on 127.0.0.1 in front of the fake upstream, as a GPU owner's would.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML comes with litestar; no stubs pinned

from agent import __version__
from tests.conftest import missing_service
from tests.slow import images
from tests.slow.images import docker
from tests.support.cluster import AGENT, ROOT
from tests.support.fake_apis import token
from tests.support.fake_upstream import RunningFake, fake_upstream
from tests.support.processes import Running, free_port, run

pytestmark = pytest.mark.slow

MODEL = "club-llm"
EMAIL = "ines@lab.example.org"


@dataclass
class Container:
    """A hub started from the image: its container (name or id) and URL."""

    name: str
    url: str

    def cli(self, *args: str) -> str:
        """`docker exec <container> gpuclub ...`, as an operator administers the hub; its output."""
        return docker("exec", self.name, "gpuclub", *args).stdout.strip()

    def wait_healthy(self, timeout: float = 60) -> dict[str, str]:
        """Poll /healthz until it answers 200 (the container's own start-up prints to its log, not to us)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                response = httpx.get(f"{self.url}/healthz", timeout=2)
                if response.status_code == 200:
                    health: dict[str, str] = response.json()
                    return health
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not healthy within {timeout}s:\n{self.logs()}")
            if docker("inspect", "--format", "{{.State.Running}}", self.name).stdout.strip() != "true":
                raise AssertionError(f"{self.name} stopped:\n{self.logs()}")
            time.sleep(0.2)

    def logs(self) -> str:
        result = docker("logs", self.name, check=False)
        return result.stdout + result.stderr


@pytest.fixture(scope="module")
def hub_image(base_images: dict[str, str]) -> str:
    return images.build("gpuclub-test/hub:latest", args=base_images)


@contextmanager
def data_volume() -> Iterator[str]:
    name = f"gpuclub-test-data-{uuid.uuid4().hex[:8]}"
    docker("volume", "create", name)
    try:
        yield name
    finally:
        docker("volume", "rm", "--force", name, check=False)


@contextmanager
def hub_container(image: str, volume: str, port: int) -> Iterator[Container]:
    """The image run as the docs run it, on `volume`; the container is removed afterwards, the volume kept."""
    container = Container(f"gpuclub-test-{uuid.uuid4().hex[:8]}", f"http://127.0.0.1:{port}")
    env = {"GPUCLUB_PORT": str(port), "GPUCLUB_PUBLIC_URL": container.url, "GPUCLUB_DRAIN_SECONDS": "5"}
    flags = [f"--env={name}={value}" for name, value in env.items()]
    try:
        flags += ["--network=host", f"--volume={volume}:/data", "--health-interval=1s"]  # the image's check, sooner
        docker("run", "--detach", f"--name={container.name}", *flags, image)
        container.wait_healthy()
        yield container
    finally:
        docker("rm", "--force", container.name, check=False)


@pytest.fixture(scope="module")
def hub(hub_image: str) -> Iterator[Container]:
    with data_volume() as volume, hub_container(hub_image, volume, free_port()) as container:
        yield container


@pytest.fixture(scope="module")
def upstream() -> Iterator[RunningFake]:
    with fake_upstream([MODEL]) as fake:
        yield fake


@contextmanager
def host_agent(hub: Container, agent_token: str, upstream: RunningFake) -> Iterator[Running]:
    """This repository's `gpuclub-agent` on the host, started as a GPU owner would; waits until it is welcomed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCLUB_")}
    env["GPUCLUB_AGENT_TOKEN"] = agent_token
    command = [AGENT, "--hub", hub.url, "--name", "desk-4090", "--upstream", upstream.url]
    with run(command, env=env, cwd=ROOT) as agent:
        agent.wait_for(r"connected to the hub", timeout=30)
        yield agent


def assert_answers(hub: Container, key: str) -> None:
    """A client with `key` asks the hub and gets the fake model's whole answer."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 3}
    headers = {"Authorization": f"Bearer {key}"}
    response = httpx.post(f"{hub.url}/v1/chat/completions", json=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "".join(token(i) for i in range(3))


def test_the_image_migrates_serves_through_a_host_agent_and_keeps_its_data_across_restarts(
    hub_image: str, upstream: RunningFake
) -> None:
    port = free_port()
    with data_volume() as volume:
        with hub_container(hub_image, volume, port) as hub:
            # The CMD migrated the empty volume before serving; the operator adds members with docker exec.
            assert hub.cli("member", "add", EMAIL, "--name", "Ines") == EMAIL
            key = hub.cli("key", "create", EMAIL)
            agent_token = hub.cli("agent-token", "create", EMAIL, "--name", "desk-4090")
            assert "No owner yet" in hub.logs()  # a fresh club prints its one-time setup link for the operator

            with host_agent(hub, agent_token, upstream) as agent:
                assert_answers(hub, key)

                since = agent.mark()
                docker("restart", "--time", "30", hub.name, timeout=90)
                hub.wait_healthy()
                agent.wait_for(r"connected to the hub", timeout=60, since=since)  # it reconnects by itself
                assert_answers(hub, key)

        # An upgrade: the container is replaced and only the volume carries the club over.
        with hub_container(hub_image, volume, port) as replaced, host_agent(replaced, agent_token, upstream):
            assert_answers(replaced, key)
            assert replaced.cli("credits", "balance", EMAIL)  # the CLI finds the member too (unknown: an error)
            assert "No owner yet" in replaced.logs()  # still no owner: nobody used the setup link


def test_the_hub_in_the_image_does_not_run_as_root(hub: Container) -> None:
    assert docker("exec", hub.name, "id", "-u").stdout.strip() != "0"
    top = docker("top", hub.name, "-o", "pid,user,args").stdout
    assert "gpuclub serve" in top and "root" not in top


def test_a_backup_taken_in_the_running_container_restores_the_club(hub_image: str, tmp_path: Path) -> None:
    """As the operations docs do it: `gpuclub backup` into the volume, `docker cp` out, copy back while stopped."""
    with data_volume() as volume, hub_container(hub_image, volume, free_port()) as hub:
        hub.cli("member", "add", EMAIL)
        hub.cli("backup", "/data/backups/before")
        docker("cp", f"{hub.name}:/data/backups/before", str(tmp_path / "before"))
        hub.cli("member", "add", "late@lab.example.org")  # after the backup: gone once it is restored

        docker("stop", hub.name)
        restore = "rm -f /data/gpuclub.db-wal /data/gpuclub.db-shm && cp /backup/* /data/ && chown 10001:10001 /data/*"
        mounts = [f"--volume={volume}:/data", f"--volume={tmp_path / 'before'}:/backup:ro"]
        docker("run", "--rm", "--user=0", "--network=host", *mounts, "--entrypoint=sh", hub_image, "-c", restore)
        docker("start", hub.name)
        hub.wait_healthy()

        assert hub.cli("key", "create", EMAIL).startswith("gpc_")
        late = docker("exec", hub.name, "gpuclub", "key", "create", "late@lab.example.org", check=False)
        assert late.returncode != 0 and "No member" in late.stderr


def test_the_hub_serves_the_agent_wheel_it_builds_into_the_volume(hub: Container) -> None:
    wheel = f"gpuclub_agent-{__version__}-py3-none-any.whl"
    response = httpx.get(f"{hub.url}/agent/{wheel}", timeout=30)

    assert response.status_code == 200
    assert response.content[:2] == b"PK"
    assert wheel in docker("exec", hub.name, "ls", "/data/wheels").stdout


def test_the_build_secret_and_the_checkouts_clutter_stay_out_of_the_image(hub_image: str) -> None:
    listing = docker(
        "run",
        "--rm",
        "--network=host",
        "--entrypoint",
        "sh",
        hub_image,
        "-c",
        "ls /run/secrets 2>/dev/null; ls -a /app; ls /app/agent",
    ).stdout.split()

    environment = docker("inspect", "--format", "{{json .Config.Env}}", hub_image).stdout
    # The CA bundle was a build secret, mounted only during the RUNs that used it: no file, no setting left.
    assert "ca" not in listing
    assert "PIP_CERT" not in environment and "cafile" not in environment
    assert {"hub", "agent", "migrations", "templates", "static"} <= set(listing)
    assert not {".venv", ".git", "data", "node_modules", "tests", "build", "secrets"} & set(listing)
    assert "pyproject.toml" in listing  # what the hub builds the agent's wheel from


def test_docker_sees_the_hub_healthy_through_the_images_own_check(hub: Container) -> None:
    deadline = time.monotonic() + 60
    while (status := docker("inspect", "--format", "{{.State.Health.Status}}", hub.name).stdout.strip()) != "healthy":
        assert status == "starting" and time.monotonic() < deadline, f"health: {status}\n{hub.logs()}"
        time.sleep(0.5)


def compose_command() -> list[str]:
    if found := shutil.which("docker-compose"):  # Debian's docker-compose package (1.29)
        return [found]
    if docker("compose", "version", check=False).returncode == 0:
        return [images.docker_cli(), "compose"]
    missing_service("neither docker-compose nor `docker compose` is installed (apt-get install docker-compose)")


def compose(
    project: Path, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """compose.yaml as an operator runs it from `project` (its secrets/ beside it), images named by `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GPUCLUB_", "POSTGRES_"))}
    command = [*compose_command(), "--project-directory", str(project), "--file", str(ROOT / "compose.yaml")]
    done = subprocess.run(
        [*command, "--project-name", project.name, *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0 or not check, f"compose {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done


@pytest.fixture(scope="module")
def postgres_image(docker_daemon: None, tmp_path_factory: pytest.TempPathFactory) -> str:
    try:
        return images.base_image(images.POSTGRES, tmp_path_factory.mktemp("rootfs"))
    except images.DockerMissing as missing:
        missing_service(str(missing))


def club_secrets(project: Path) -> None:
    """The secret files as the docs have an operator make them, readable by the hub's uid 10001."""
    folder = project / "secrets"
    folder.mkdir()
    password = secrets.token_hex(16)
    (folder / "postgres_password").write_text(password)
    (folder / "database_url").write_text(f"postgresql://gpuclub:{password}@postgres:5432/gpuclub\n")
    (folder / "secret_key").write_text(secrets.token_hex(32))
    for name in ("database_url", "secret_key"):
        (folder / name).chmod(0o600)
        os.chown(folder / name, 10001, 10001)


def test_compose_runs_the_hub_on_postgres_with_file_secrets_and_keeps_the_club_in_its_volumes(
    hub_image: str, postgres_image: str, upstream: RunningFake, tmp_path: Path
) -> None:
    project = tmp_path / f"gpuclubtest{uuid.uuid4().hex[:8]}"
    project.mkdir()
    club_secrets(project)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"GPUCLUB_IMAGE": hub_image, "POSTGRES_IMAGE": postgres_image, "GPUCLUB_PORT": str(port)}
    env["GPUCLUB_PUBLIC_URL"] = url

    def started() -> Container:
        compose(project, "up", "--detach", "--no-build", env=env)
        hub = Container(compose(project, "ps", "-q", "hub", env=env).stdout.strip(), url)
        health = hub.wait_healthy(timeout=120)
        assert health["database"] == "ok", health
        return hub

    try:
        hub = started()
        assert hub.cli("member", "add", EMAIL) == EMAIL
        key = hub.cli("key", "create", EMAIL)
        agent_token = hub.cli("agent-token", "create", EMAIL, "--name", "desk-4090")
        assert "gpuclub.db" not in docker("exec", hub.name, "ls", "/data").stdout  # the club lives in PostgreSQL
        with host_agent(hub, agent_token, upstream):
            assert_answers(hub, key)

        compose(project, "down", env=env)  # both containers go; the named volumes stay
        hub = started()
        with host_agent(hub, agent_token, upstream):
            assert_answers(hub, key)
    finally:
        compose(project, "down", "--volumes", "--remove-orphans", check=False, env=env)


def test_compose_file_gives_the_hub_postgres_volumes_file_secrets_and_time_to_drain(tmp_path: Path) -> None:
    """What compose itself makes of the file, with no variable set: the defaults an operator starts from."""
    done = compose(tmp_path, "config")
    config = yaml.safe_load(done.stdout)
    hub, postgres = config["services"]["hub"], config["services"]["postgres"]

    assert hub["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert {"hub-data", "postgres-data"} <= set(config["volumes"])
    assert any(volume.startswith("hub-data:/data") for volume in hub["volumes"])
    assert any(volume.startswith("postgres-data:/var/lib/postgresql/data") for volume in postgres["volumes"])
    # Secrets only as files: no secret value in the environment, where `docker inspect` would show it.
    assert hub["environment"]["GPUCLUB_DATABASE_URL_FILE"] == "/run/secrets/database_url"
    assert hub["environment"]["GPUCLUB_SECRET_KEY_FILE"] == "/run/secrets/secret_key"
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert {"GPUCLUB_DATABASE_URL", "GPUCLUB_SECRET_KEY", "POSTGRES_PASSWORD"}.isdisjoint(
        {*hub["environment"], *postgres["environment"]}
    )
    assert all(Path(secret["file"]).parent == tmp_path / "secrets" for secret in config["secrets"].values())
    # Docker's stop waits longer than the hub's drain, so an upgrade lets streams finish and usage be written.
    drain = float(hub["environment"]["GPUCLUB_DRAIN_SECONDS"])
    assert seconds(hub["stop_grace_period"]) > drain
    assert all(port.startswith("127.0.0.1:") for port in hub["ports"])  # HTTPS comes from a proxy in front


def seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1}
    return sum(float(amount) * units[unit] for amount, unit in re.findall(r"(\d+(?:\.\d+)?)([hms])", duration))


@pytest.fixture(scope="module")
def agent_image(base_images: dict[str, str]) -> str:
    return images.build("gpuclub-test/agent:latest", dockerfile="agent/Dockerfile", args=base_images)


def test_the_agent_image_runs_as_non_root_without_the_hub_and_brings_a_gpu_online(
    agent_image: str, hub: Container, upstream: RunningFake
) -> None:
    email = "oskar@lab.example.org"
    hub.cli("member", "add", email)
    key = hub.cli("key", "create", email)
    agent_token = hub.cli("agent-token", "create", email, "--name", "rack-a100")
    name = f"gpuclub-test-agent-{uuid.uuid4().hex[:8]}"
    try:
        docker(
            "run",
            "--detach",
            "--name",
            name,
            "--network=host",
            "--env",
            f"GPUCLUB_HUB={hub.url}",
            "--env",
            f"GPUCLUB_AGENT_TOKEN={agent_token}",
            "--env",
            f"GPUCLUB_UPSTREAM={upstream.url}",
            agent_image,
        )
        with run([images.docker_cli(), "logs", "--follow", name], env=os.environ) as logs:
            logs.wait_for(r"connected to the hub", timeout=60)
        assert_answers(hub, key)

        assert docker("exec", name, "id", "-u").stdout.strip() != "0"
        installed = docker("exec", name, "pip", "list", "--format=freeze").stdout.lower().splitlines()
        names = {line.split("==")[0] for line in installed}
        assert {"gpuclub-agent", "httpx", "websockets"} <= names
        assert not {"gpuclub", "litestar", "sqlmodel", "stripe", "uvicorn"} & names
    finally:
        docker("rm", "--force", "--volumes", name, check=False)
