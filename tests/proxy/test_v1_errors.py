"""`/v1` speaks OpenAI's error envelope for every failure, and bad input is a 4xx, never a 500."""

from __future__ import annotations

import httpx
import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from tests.support.people import Client, api_key, person


@pytest.fixture
async def key(db: AsyncSession) -> str:
    return await api_key(db, await person(db, "alice@lab.example.org"))


def envelope(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, object] = body["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_json"),
        (b'{"messages": []}', 400, "missing_model"),
        (b'{"model": 7}', 400, "missing_model"),
        (b'{"model": "llama-3-8b", "messages": []}', 404, "model_not_found"),
    ],
    ids=["malformed", "empty", "array", "no-model", "model-not-text", "unknown-model"],
)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"])
async def test_bad_bodies_get_a_clear_error(
    client: Client, key: str, path: str, body: bytes, status: int, code: str
) -> None:
    response = await client.post(
        path, content=body, headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    )

    assert response.status_code == status
    assert envelope(response)["code"] == code


async def test_an_unknown_v1_path_is_a_404_envelope(client: Client, key: str) -> None:
    response = await client.get("/v1/nothing-here", headers={"Authorization": f"Bearer {key}"})

    assert response.status_code == 404
    assert envelope(response)["type"] == "invalid_request_error"


async def test_a_wrong_method_is_a_405_envelope(client: Client, key: str) -> None:
    response = await client.delete("/v1/models", headers={"Authorization": f"Bearer {key}"})

    assert response.status_code == 405
    envelope(response)


async def test_the_key_is_checked_before_the_body(client: Client) -> None:
    response = await client.post("/v1/chat/completions", content=b"{broken")

    assert response.status_code == 401
    assert envelope(response)["code"] == "invalid_api_key"
