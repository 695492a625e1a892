"""`gpuclub-agent doctor` against a real hub process: what a GPU owner sees when checking their set-up."""

from __future__ import annotations

import re
from collections.abc import Iterator

import openai
import pytest

from tests.agent.conftest import MODELS, agent
from tests.support.cluster import agent_process, agent_token, member, signed_in, submit
from tests.support.fake_upstream import RunningFake, fake_upstream
from tests.support.hub import LiveHub, hub_env, live_hub
from tests.support.processes import free_port

REJECTED = "✗ the hub rejected the agent token: create a new one on the My GPUs page"


@pytest.fixture(scope="module")
def real_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveHub]:
    """A real `gpuclub serve`; each test has its own GPU owner, so the tests do not see each other's agents."""
    with live_hub(hub_env(tmp_path_factory.mktemp("hub"), port=free_port())) as hub:
        yield hub


def doctor(hub: LiveHub, token: str, upstream: RunningFake) -> list[str]:
    result = agent("doctor", "--hub", hub.url, "--token", token, "--upstream", f"{upstream.url}/v1")
    return [f"exit {result.returncode}", *result.stdout.splitlines()]


def test_doctor_is_all_ticks_with_a_valid_token_and_a_working_server(real_hub: LiveHub, upstream: RunningFake) -> None:
    owner = member(real_hub, "dora@lab.example.org")

    lines = doctor(real_hub, agent_token(real_hub, owner.email, "desk-4090"), upstream)

    assert lines[0] == "exit 0", lines
    assert f"✓ upstream {upstream.url} serves 2 model(s): {', '.join(MODELS)}" in lines
    assert f"✓ the hub at {real_hub.url} is up" in lines
    assert "✓ the hub accepted the agent token (this agent is 'desk-4090')" in lines
    assert not [line for line in lines if line.startswith("✗")]


def test_doctor_says_in_plain_words_that_a_revoked_token_is_rejected(real_hub: LiveHub, upstream: RunningFake) -> None:
    owner = member(real_hub, "rex@lab.example.org")
    token = agent_token(real_hub, owner.email, "old-box")
    with signed_in(real_hub, owner.email) as browser:
        agent_id = re.search(r"/gpus/(\d+)/revoke", browser.get("/gpus").text)
        assert agent_id
        revoked = submit(browser, "/gpus", f"/gpus/{agent_id.group(1)}/revoke")
    assert revoked.status_code == 200 and "No agents yet" in revoked.text

    lines = doctor(real_hub, token, upstream)

    assert lines[0] == "exit 1", lines
    assert REJECTED in lines
    assert f"✓ the hub at {real_hub.url} is up" in lines


def test_doctor_leaves_the_running_agent_with_the_same_token_connected(
    real_hub: LiveHub, upstream: RunningFake
) -> None:
    owner = member(real_hub, "gus@lab.example.org")
    alice = member(real_hub, "alice@lab.example.org")
    token = agent_token(real_hub, owner.email, "desk")
    with agent_process(real_hub, token, f"{upstream.url}/v1", name="desk") as running:
        since = running.mark()
        lines = doctor(real_hub, token, upstream)
        with openai.OpenAI(base_url=f"{real_hub.url}/v1", api_key=alice.key, max_retries=0) as client:
            answer = client.chat.completions.create(
                model=MODELS[0], messages=[{"role": "user", "content": "still there?"}], max_tokens=2
            )
        running.drain()
        after_doctor = running.output[since:]

    assert lines[0] == "exit 0", lines
    assert answer.choices[0].message.content == "tok0 tok1"
    assert not [line for line in after_doctor if "disconnected" in line or "took over" in line], after_doctor


def test_doctor_shows_which_models_the_hub_refuses(real_hub: LiveHub) -> None:
    owner = member(real_hub, "milo@lab.example.org")
    many = [f"model-{n}" for n in range(1001)] + ["x" * 201]
    with fake_upstream(many) as crowded:
        lines = doctor(real_hub, agent_token(real_hub, owner.email, "crowded"), crowded)

    assert lines[0] == "exit 1", lines
    assert "✓ the hub accepted the agent token (this agent is 'crowded')" in lines
    assert (
        "✗ the hub ignored 1 model name(s) that are not text of 1 to 200 printable characters "
        "and 1 model(s) past the limit of 1000 per agent"
    ) in lines
