"""`gpuclub-agent` and `gpuclub-agent doctor` as a GPU owner runs them."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from agent import protocol
from agent.config import ConfigError, build
from tests.agent.conftest import TOKEN, StandInHub, agent, agent_env, receive, stub_upstream
from tests.support.fake_upstream import RunningFake
from tests.support.processes import free_port


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_an_unknown_flag_is_one_line_and_exit_2() -> None:
    assert "unrecognized arguments: --gpus" in one_error_line(agent("--gpus"))


def test_a_missing_token_names_the_flag_and_the_variable() -> None:
    line = one_error_line(agent("--hub", "https://hub.example.org", "--upstream", "http://127.0.0.1:8000"))

    assert "--token" in line and "GPUCLUB_AGENT_TOKEN" in line


def test_a_bad_value_from_the_environment_names_the_variable() -> None:
    env = agent_env(
        GPUCLUB_HUB="https://hub.example.org",
        GPUCLUB_AGENT_TOKEN=TOKEN,
        GPUCLUB_UPSTREAM="http://127.0.0.1:8000",
        GPUCLUB_MAX_CONCURRENCY="lots",
    )

    line = one_error_line(agent(env=env))

    assert "GPUCLUB_MAX_CONCURRENCY" in line and TOKEN not in line


def test_flags_win_over_the_environment_and_upstreams_lose_their_v1() -> None:
    env = {
        "GPUCLUB_HUB": "http://hub.lan:8000/",
        "GPUCLUB_AGENT_TOKEN": TOKEN,
        "GPUCLUB_UPSTREAM": "http://127.0.0.1:8000/v1/, http://127.0.0.1:11434",
        "GPUCLUB_MAX_CONCURRENCY": "2",
    }

    config = build(env=env, max_concurrency="8", name="rig")

    assert config.tunnel_url == "ws://hub.lan:8000/agent/connect"
    assert config.upstreams == ("http://127.0.0.1:8000", "http://127.0.0.1:11434")
    assert (config.max_concurrency, config.name, config.refresh) == (8, "rig", 30.0)
    assert config.token_travels_in_clear
    assert TOKEN not in repr(config)
    assert build(env=env, hub="https://hub.example.org").tunnel_url == "wss://hub.example.org/agent/connect"


def test_declared_apis_come_from_the_flag_or_the_environment_and_always_include_the_legacy_ones() -> None:
    env = {"GPUCLUB_HUB": "https://hub.example.org", "GPUCLUB_AGENT_TOKEN": TOKEN, "GPUCLUB_UPSTREAM": "http://h:1"}
    legacy = protocol.LEGACY_APIS

    assert build(env=env).apis is None  # probe the upstreams
    assert build(env=env, apis=["messages", "/v1/responses"]).apis == (*legacy, "responses", "messages")
    with_variable = {**env, "GPUCLUB_APIS": "rerank, audio/transcriptions,"}
    assert build(env=with_variable).apis == (*legacy, "rerank", "audio/transcriptions")
    assert build(env=with_variable, apis=["messages"]).apis == (*legacy, "messages")


def test_an_unknown_api_is_one_line_and_exit_2() -> None:
    flags = ("--hub", "https://hub.example.org", "--token", TOKEN, "--upstream", "http://127.0.0.1:8000")

    line = one_error_line(agent(*flags, "--api", "responses", "--api", "images/generations"))

    assert line.startswith("gpuclub-agent: --api must be one of chat/completions, completions, embeddings, responses")
    assert line.endswith("(got 'images/generations')")


def test_an_unknown_api_in_the_environment_names_the_variable() -> None:
    env = agent_env(
        GPUCLUB_HUB="https://hub.example.org",
        GPUCLUB_AGENT_TOKEN=TOKEN,
        GPUCLUB_UPSTREAM="http://127.0.0.1:8000",
        GPUCLUB_APIS="responses,chat",
    )

    line = one_error_line(agent(env=env))

    assert "GPUCLUB_APIS must be one of" in line and "(got 'chat')" in line


def test_a_hub_address_without_a_scheme_is_refused() -> None:
    with pytest.raises(ConfigError, match="--hub"):
        build(env={}, hub="hub.example.org", token=TOKEN, upstreams=["http://127.0.0.1:8000"])


def test_doctor_says_the_upstream_works_and_the_hub_is_not_reachable(upstream: RunningFake) -> None:
    hub = f"http://127.0.0.1:{free_port()}"

    result = agent("doctor", "--hub", hub, "--token", TOKEN, "--upstream", upstream.url + "/v1")

    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert f"✓ upstream {upstream.url} serves 2 model(s): llama-3-8b, qwen2.5-7b" in lines
    assert f"✗ the hub at {hub} is not reachable: check --hub and that the hub is running" in lines
    assert TOKEN not in result.stdout + result.stderr


def test_doctor_says_the_upstream_needs_a_key(keyed: RunningFake) -> None:
    hub = f"http://127.0.0.1:{free_port()}"

    result = agent("doctor", "--hub", hub, "--token", TOKEN, "--upstream", keyed.url)

    assert result.returncode == 1
    assert (
        f"✗ upstream {keyed.url} needs an API key: pass --upstream-key or set GPUCLUB_UPSTREAM_KEY"
        in result.stdout.splitlines()
    )


def test_doctor_accepts_the_key_from_the_environment(keyed: RunningFake) -> None:
    env = agent_env(GPUCLUB_UPSTREAM_KEY="up-key")

    result = agent("doctor", "--hub", "http://127.0.0.1:1", "--token", TOKEN, "--upstream", keyed.url, env=env)

    assert f"✓ upstream {keyed.url} serves 1 model(s): phi-3" in result.stdout.splitlines()


async def test_doctor_shows_the_apis_each_upstream_speaks() -> None:
    flags = ("doctor", "--hub", f"http://127.0.0.1:{free_port()}", "--token", TOKEN)
    async with (
        stub_upstream(["llama-3-8b"], answers={"/v1/responses": 400, "/v1/rerank": 422}) as probed,
        stub_upstream(["phi-3"]) as declared,
    ):
        # In threads, so that this event loop keeps serving the stub upstreams meanwhile.
        found = await asyncio.to_thread(agent, *flags, "--upstream", probed.url)
        given = await asyncio.to_thread(agent, *flags, "--upstream", declared.url, "--api", "messages")

    legacy = "chat/completions, completions, embeddings"
    assert (
        f"· upstream {probed.url} speaks {legacy}, responses, rerank (found by probing each path; --api declares them)"
    ) in found.stdout.splitlines()
    assert f"· upstream {declared.url} speaks {legacy}, messages (as declared with --api)" in given.stdout.splitlines()


def test_doctor_says_an_upstream_that_is_down_is_not_reachable() -> None:
    down = f"http://127.0.0.1:{free_port()}"

    result = agent("doctor", "--hub", "http://127.0.0.1:1", "--token", TOKEN, "--upstream", down)

    assert result.returncode == 1
    assert f"✗ upstream {down} is not reachable: is the model server running and listening there?" in result.stdout


async def run_doctor(hub: StandInHub, upstream: RunningFake) -> subprocess.CompletedProcess[str]:
    """In a thread, so that this event loop keeps serving the stand-in hub meanwhile."""
    return await asyncio.to_thread(agent, "doctor", "--hub", hub.url, "--token", TOKEN, "--upstream", upstream.url)


async def test_doctor_is_happy_when_the_hub_welcomes_the_token(hub: StandInHub, upstream: RunningFake) -> None:
    doctor = asyncio.create_task(run_doctor(hub, upstream))
    ws, hello = await hub.welcome()
    result = await doctor

    assert result.returncode == 0, result.stdout
    assert f"✓ the hub at {hub.url} is up" in result.stdout.splitlines()
    assert "✓ the hub accepted the agent token" in result.stdout
    # The doctor shows the hub its models, so the hub can check them, but with capacity 0: it gets no work.
    assert (hello["capacity"], sorted(hello["models"])) == (0, ["llama-3-8b", "qwen2.5-7b"])
    assert sorted(hello["apis"]) == ["llama-3-8b", "qwen2.5-7b"]
    await ws.wait_closed()


async def test_doctor_explains_a_rejected_token(hub: StandInHub, upstream: RunningFake) -> None:
    doctor = asyncio.create_task(run_doctor(hub, upstream))
    ws = await hub.accept()
    await receive(ws)
    await ws.close(protocol.CLOSE_UNAUTHORIZED, "bad token")
    result = await doctor

    assert result.returncode == 1
    assert "✗ the hub rejected the agent token: create a new one on the My GPUs page" in result.stdout.splitlines()
