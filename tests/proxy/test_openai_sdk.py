"""The official `openai` SDK against a real hub process."""

from __future__ import annotations

import openai
import pytest

from tests.support.hub import LiveHub


@pytest.fixture
def key(hub_process: LiveHub) -> str:
    added = hub_process.cli("member", "add", "sdk@lab.example.org")
    assert added.returncode == 0, added.stderr
    created = hub_process.cli("key", "create", "sdk@lab.example.org")
    assert created.returncode == 0, created.stderr
    return created.stdout.strip()


def test_the_sdk_lists_models_with_a_key(hub_process: LiveHub, key: str) -> None:
    with openai.OpenAI(base_url=f"{hub_process.url}/v1", api_key=key, max_retries=0) as sdk:
        models = sdk.models.list()

    assert models.data == []


async def test_the_async_sdk_gets_an_authentication_error_for_a_bad_key(hub_process: LiveHub) -> None:
    async with openai.AsyncOpenAI(base_url=f"{hub_process.url}/v1", api_key="gpc_wrong", max_retries=0) as sdk:
        with pytest.raises(openai.AuthenticationError) as raised:
            await sdk.models.list()

    assert raised.value.status_code == 401
    assert raised.value.code == "invalid_api_key"


def test_the_sdk_gets_model_not_found_while_no_gpu_serves_the_model(hub_process: LiveHub, key: str) -> None:
    with (
        openai.OpenAI(base_url=f"{hub_process.url}/v1", api_key=key, max_retries=0) as sdk,
        pytest.raises(openai.NotFoundError) as raised,
    ):
        sdk.chat.completions.create(model="llama-3-8b", messages=[{"role": "user", "content": "hi"}])

    assert raised.value.code == "model_not_found"
