"""The processes under test, all on 127.0.0.1: the fake upstream, the hub and one agent, and LiteLLM's proxy.

Each runs as its operators would run it (`gpuclub serve` with its usual settings and SQLite, `gpuclub-agent`,
`litellm --config`), logs to a file in the work folder, and is waited for by polling a health URL for a bounded
time. LiteLLM lives in its own venv (bench/.venv-litellm, git-ignored), installed here on first use.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LITELLM_VERSION = "1.108.7"
LITELLM_VENV = ROOT / "bench" / ".venv-litellm"
LITELLM_MARKER = LITELLM_VENV / f".installed-{LITELLM_VERSION}"
MASTER_KEY = "sk-bench-master-key"
PROVIDER = "gpu-owner@bench.example.org"
CONSUMER = "member@bench.example.org"
MODELS = ("bench", "bench-slow")


class StackError(Exception):
    """A process under test did not start; the message ends with the tail of its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without any gpuclub or LiteLLM settings that could leak into a measurement."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPUCLUB_", "LITELLM_", "DATABASE_URL"))}
    return env | extra


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Stack:
    """Starts processes and stops every one of them, whatever happens."""

    workdir: Path
    servers: list[Server] = field(default_factory=list)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *_: object) -> None:
        for server in reversed(self.servers):
            self.stop(server)

    def start(self, name: str, command: Sequence[str], env: Mapping[str, str], url: str) -> Server:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(  # noqa: S603 - fixed command lines, no shell
                list(command), env=dict(env), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        server = Server(name, url, process, log)
        self.servers.append(server)
        return server

    def stop(self, server: Server) -> None:
        if server.process.poll() is None:
            server.process.terminate()
            try:
                server.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()
        if server in self.servers:
            self.servers.remove(server)


def wait_until(server: Server, check: Callable[[httpx.Client], bool], timeout: float) -> None:
    """Poll `check` until it holds; fail early if the process exits, and after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=server.url, timeout=5) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise StackError(f"{server.name} exited with {server.process.returncode}:\n{server.tail()}")
            try:
                if check(client):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
    raise StackError(f"{server.name} was not ready within {timeout:g} s:\n{server.tail()}")


def upstream(stack: Stack, *, chunks: int, chunk_gap: float, slow_chunks: int, slow_gap: float) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "bench.upstream", "--port", str(port), "--chunks", str(chunks)]
    command += ["--chunk-gap", str(chunk_gap), "--slow-chunks", str(slow_chunks), "--slow-gap", str(slow_gap)]
    server = stack.start("upstream", command, clean_env(), f"http://127.0.0.1:{port}")
    wait_until(server, lambda client: client.get("/health").status_code == 200, 20)
    return server


@dataclass
class Hub:
    server: Server
    env: dict[str, str]
    key: str
    agent_token: str
    ledger: bool  # prices, credits and quotas are on (the hub has them)


def _gpuclub(env: Mapping[str, str], *args: str) -> str:
    done = subprocess.run(  # noqa: S603 - the gpuclub CLI, no shell
        [str(BIN / "gpuclub"), *args], env=dict(env), cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise StackError(f"gpuclub {args[0]} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def hub(stack: Stack, *, ledger: bool = True) -> Hub:
    """`gpuclub migrate`, set up through the CLI as an admin would, then `gpuclub serve`.

    One member shares a GPU (the agent), another calls the API with a key. Where the hub has prices, credits and
    quotas, they are on: both models cost credits, the caller has plenty, and generous limits are checked on every
    request, so the benchmark pays for the holds, the settlements and the quota counters like a real club does.
    `ledger=False` leaves them off (a club that charges nothing), to tell their cost from the proxy's.
    """
    port = free_port()
    env = clean_env(
        GPUCLUB_DATA_DIR=str(stack.workdir / "hub-data"),
        GPUCLUB_PORT=str(port),
        GPUCLUB_PUBLIC_URL=f"http://127.0.0.1:{port}",
        GPUCLUB_SECRET_KEY="bench-secret-" + "b" * 32,
    )
    _gpuclub(env, "migrate")
    _gpuclub(env, "member", "add", PROVIDER, "--role", "owner")
    _gpuclub(env, "member", "add", CONSUMER)
    key = _gpuclub(env, "key", "create", CONSUMER, "--name", "bench")
    token = _gpuclub(env, "agent-token", "create", PROVIDER, "--name", "bench-gpu")
    ledger = ledger and "credits" in _gpuclub(env, "--help")
    if ledger:
        _gpuclub(env, "price", "set", "*", "--input", "10", "--output", "30")
        _gpuclub(env, "credits", "grant", CONSUMER, "1000000", "--reason", "benchmark")
        limits = ("--rpm", "100000000", "--tokens-per-day", "1000000000", "--concurrency", "100000")
        _gpuclub(env, "quota", "set", CONSUMER, *limits)
    server = stack.start("hub", [str(BIN / "gpuclub"), "serve"], env, f"http://127.0.0.1:{port}")
    wait_until(server, lambda client: client.get("/healthz").status_code == 200, 30)
    return Hub(server, env, key, token, ledger)


def ledger_check(hub: Hub) -> str:
    """`gpuclub ledger check` after the run: every transaction balances and no hold is left behind."""
    return _gpuclub(hub.env, "ledger", "check") if hub.ledger else "no ledger in this hub"


def agent(stack: Stack, hub: Hub, upstream: Server, *, capacity: int) -> Server:
    """One `gpuclub-agent` next to the upstream; ready once the hub lists both bench models."""
    env = clean_env(GPUCLUB_AGENT_TOKEN=hub.agent_token, GPUCLUB_JOURNAL=str(stack.workdir / "bills.jsonl"))
    command = [str(BIN / "gpuclub-agent"), "--hub", hub.server.url, "--upstream", f"{upstream.url}/v1"]
    command += ["--max-concurrency", str(capacity), "--name", "bench-gpu"]
    server = stack.start("agent", command, env, hub.server.url)

    def listed(client: httpx.Client) -> bool:
        answer = client.get("/v1/models", headers={"authorization": f"Bearer {hub.key}"})
        served = {model["id"] for model in answer.json().get("data", [])} if answer.status_code == 200 else set()
        return served >= set(MODELS)

    wait_until(server, listed, 30)
    return server


def litellm_installed() -> bool:
    return LITELLM_MARKER.exists()


def install_litellm() -> float:
    """Create bench/.venv-litellm with exactly litellm[proxy]==LITELLM_VERSION; returns the seconds it took."""
    start = time.monotonic()
    venv = [sys.executable, "-m", "venv", "--clear", str(LITELLM_VENV)]
    pip = [str(LITELLM_VENV / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check"]
    for command in (venv, [*pip, f"litellm[proxy]=={LITELLM_VERSION}"]):
        subprocess.run(command, check=True)  # noqa: S603 - fixed command lines, no shell
    LITELLM_MARKER.touch()
    return time.monotonic() - start


def litellm_config(upstream: Server) -> str:
    models = "".join(
        f"  - model_name: {name}\n    litellm_params:\n      model: openai/{name}\n"
        f"      api_base: {upstream.url}/v1\n      api_key: sk-dummy\n"
        for name in MODELS
    )
    return f"model_list:\n{models}general_settings:\n  master_key: {MASTER_KEY}\n  disable_spend_logs: true\n"


def litellm(stack: Stack, upstream: Server) -> Server:
    """LiteLLM's proxy, one worker, no database, the local cost map (no network)."""
    config = stack.workdir / "litellm.yaml"
    config.write_text(litellm_config(upstream))
    port = free_port()
    command = [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--num_workers", "1"]
    env = clean_env(LITELLM_LOCAL_MODEL_COST_MAP="True")
    server = stack.start("litellm", command, env, f"http://127.0.0.1:{port}")
    wait_until(server, lambda client: client.get("/health/readiness").status_code == 200, 120)
    return server
