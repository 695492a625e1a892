"""Bad input on each newer API gets that API's own error envelope (Anthropic's on /v1/messages*, OpenAI's
elsewhere) and changes nothing; the model list says which APIs each model speaks, and a model asked for through an
API its GPUs lack gets a message that says so."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from agent import protocol
from tests.proxy.metering import MAX_BODY, PARTIAL, Club, assert_nothing_changed, consumer, open_club, wav
from tests.support.cluster import Member

HELLO = [{"role": "user", "content": "hello"}]


@dataclass(frozen=True)
class Endpoint:
    path: str
    body: dict[str, Any]  # a good request (for audio, the form's text fields)
    anthropic: bool = False
    upload: bool = False


PATHS = [
    Endpoint("/v1/responses", {"model": "m", "input": "hello", "max_output_tokens": 2}),
    Endpoint("/v1/messages", {"model": "m", "max_tokens": 2, "messages": HELLO}, anthropic=True),
    Endpoint("/v1/messages/count_tokens", {"model": "m", "messages": HELLO}, anthropic=True),
    Endpoint("/v1/rerank", {"model": "m", "query": "apple", "documents": ["an apple", "a pear"]}),
    Endpoint("/rerank", {"model": "m", "query": "apple", "documents": ["an apple", "a pear"]}),
    Endpoint("/v1/audio/transcriptions", {"model": "whisper"}, upload=True),
    Endpoint("/v1/audio/translations", {"model": "whisper"}, upload=True),
]
# What each kind of bad input is, in each envelope: (status, OpenAI's code, Anthropic's type).
EXPECTED = {
    "malformed": (400, "invalid_json", "invalid_request_error"),
    "no-model": (400, "missing_model", "invalid_request_error"),
    "unknown-model": (404, "model_not_found", "not_found_error"),
    "too-large": (413, "payload_too_large", "request_too_large"),
    "bad-key": (401, "invalid_api_key", "authentication_error"),
    "no-key": (401, "invalid_api_key", "authentication_error"),
}


@pytest.fixture(scope="module")
def club(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Club]:
    with open_club(tmp_path_factory.mktemp("hub")) as running:
        yield running


def openai_error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"], error
    return error


def anthropic_error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert body.get("type") == "error" and set(body) <= {"type", "error", "request_id"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"type", "message"} and error["message"], error
    return error


def send(club: Club, where: Endpoint, who: Member, kind: str) -> httpx.Response:
    """The request `where` expects, spoilt the way `kind` says; the key as that API's clients send it."""
    key = {"bad-key": "gpc_wrong", "no-key": ""}.get(kind, who.key)
    headers = ({"x-api-key": key} if where.anthropic else {"Authorization": f"Bearer {key}"}) if key else {}
    fields = dict(where.body)
    if kind == "no-model":
        del fields["model"]
    if kind == "unknown-model":
        fields["model"] = "gpt-9"
    url = f"{club.hub.url}{where.path}"
    if where.upload:
        audio = bytes(MAX_BODY + 1) if kind == "too-large" else wav(1)
        if kind == "malformed":  # a body that says it is a form and is not one
            headers["content-type"] = "multipart/form-data; boundary=nothing-here"
            return httpx.post(url, headers=headers, content=b"{not a form", timeout=30)
        return httpx.post(url, headers=headers, data=fields, files={"file": ("a.wav", audio, "audio/wav")}, timeout=30)
    content = json.dumps(fields).encode()
    if kind == "malformed":
        content = content[:-1]
    if kind == "too-large":
        content = json.dumps(fields | {"padding": "x" * MAX_BODY}).encode()
    return httpx.post(url, headers=headers | {"content-type": "application/json"}, content=content, timeout=30)


@pytest.mark.parametrize("kind", list(EXPECTED))
@pytest.mark.parametrize("where", PATHS, ids=[p.path for p in PATHS])
def test_bad_input_gets_the_apis_own_error_and_changes_nothing(club: Club, where: Endpoint, kind: str) -> None:
    who = consumer(club, f"{kind}-{where.path.strip('/').replace('/', '-')}@lab.example.org")
    before = httpx.get(f"{club.full.url}/fake/stats").json()["requests"]

    response = send(club, where, who, kind)

    status, code, anthropic_type = EXPECTED[kind]
    assert response.status_code == status, response.text
    if where.anthropic:
        assert anthropic_error(response)["type"] == anthropic_type
    elif where.upload and kind == "malformed":
        assert openai_error(response)["type"] == "invalid_request_error"
    else:
        assert openai_error(response)["code"] == code
    assert httpx.get(f"{club.full.url}/fake/stats").json()["requests"] == before  # no GPU saw it
    assert_nothing_changed(club, who)


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
def test_an_anthropic_request_needs_no_more_than_its_own_fields_but_messages_needs_max_tokens(
    club: Club, path: str
) -> None:
    who = consumer(club, f"fields-{path.count('/')}@lab.example.org")

    response = httpx.post(
        f"{club.hub.url}{path}", headers={"x-api-key": who.key}, json={"model": "m", "messages": HELLO}, timeout=30
    )

    if path == "/v1/messages":
        assert response.status_code == 400
        assert anthropic_error(response)["type"] == "invalid_request_error"
        assert "max_tokens" in anthropic_error(response)["message"]
        assert_nothing_changed(club, who)
    else:
        assert response.status_code == 200 and response.json() == {"input_tokens": 1}


@pytest.mark.parametrize(
    ("method", "path", "anthropic"),
    [
        ("GET", "/v1/nothing-here", False),
        ("POST", "/v1/assistants", False),
        ("POST", "/v1/audio/speech", False),
        ("POST", "/v1/messages/batches", True),
    ],
)
def test_an_unknown_v1_address_is_a_404_in_the_envelope_of_its_api(
    club: Club, method: str, path: str, anthropic: bool
) -> None:
    who = consumer(club, "lost@lab.example.org")
    headers = {"x-api-key": who.key} if anthropic else {"Authorization": f"Bearer {who.key}"}

    response = httpx.request(method, f"{club.hub.url}{path}", headers=headers, json={"model": "m"}, timeout=30)

    assert response.status_code == 404
    if anthropic:
        assert anthropic_error(response)["type"] in ("not_found_error", "invalid_request_error")
    else:
        assert openai_error(response)["type"] == "invalid_request_error"


def test_the_model_list_says_which_apis_each_model_speaks(club: Club) -> None:
    who = consumer(club, "lister@lab.example.org")

    with openai.OpenAI(base_url=f"{club.hub.url}/v1", api_key=who.key, max_retries=0) as client:
        listed = {model.id: (model.model_extra or {}) for model in client.models.list().data}

    assert sorted(listed) == sorted(["m", "whisper", "org/tiny", PARTIAL])
    assert set(listed["m"]["apis"]) == set(protocol.APIS)
    assert set(listed[PARTIAL]["apis"]) == {*protocol.LEGACY_APIS, "messages"}
    assert listed[PARTIAL]["gpus"] == 1


@pytest.mark.parametrize("model", ["m", "org/tiny"])
def test_one_model_can_be_looked_up_by_name(club: Club, model: str) -> None:
    who = consumer(club, "looker@lab.example.org")

    with openai.OpenAI(base_url=f"{club.hub.url}/v1", api_key=who.key, max_retries=0) as client:
        found = client.models.retrieve(model)  # the SDK sends a slash in a name as %2F
    plain = httpx.get(f"{club.hub.url}/v1/models/{model}", headers={"Authorization": f"Bearer {who.key}"})

    assert (found.id, found.object, found.created, found.owned_by) == (model, "model", 0, "gpuclub")
    assert plain.status_code == 200
    assert plain.json() == {
        "id": model,
        "object": "model",
        "created": 0,
        "owned_by": "gpuclub",
        "gpus": 1,
        "own_gpus": 0,
        "apis": plain.json()["apis"],
        "status": "online",
        "pricing": {
            "currency": "credits",
            "prompt": "1000000",
            "completion": "1000000",
            "audio_minute": "60",
        },
    }
    assert set(plain.json()["apis"]) == set(protocol.APIS)


def test_a_model_no_gpu_serves_is_a_404_in_openais_envelope(club: Club) -> None:
    who = consumer(club, "seeker@lab.example.org")

    with (
        openai.OpenAI(base_url=f"{club.hub.url}/v1", api_key=who.key, max_retries=0) as client,
        pytest.raises(openai.NotFoundError) as missing,
    ):
        client.models.retrieve("gpt-9")

    assert missing.value.code == "model_not_found"
    assert "gpt-9" in missing.value.message


def test_a_model_whose_gpus_lack_the_responses_api_gets_a_404_that_says_so(club: Club) -> None:
    who = consumer(club, "codex@lab.example.org")
    before = httpx.get(f"{club.partial.url}/fake/stats").json()["requests"]

    with (
        openai.OpenAI(base_url=f"{club.hub.url}/v1", api_key=who.key, max_retries=0) as client,
        pytest.raises(openai.NotFoundError) as missing,
    ):
        client.responses.create(model=PARTIAL, input="hello", max_output_tokens=2)

    assert missing.value.code == "model_not_found"
    message = missing.value.message
    assert "Responses API" in message and PARTIAL in message
    assert "Messages" in message or "messages" in message  # what the model can be reached through instead
    assert httpx.get(f"{club.partial.url}/fake/stats").json()["requests"] == before
    assert_nothing_changed(club, who)


def test_the_same_model_is_served_through_the_apis_its_gpu_does_speak(club: Club) -> None:
    who = consumer(club, "claude@lab.example.org")

    response = httpx.post(
        f"{club.hub.url}/v1/messages",
        headers={"x-api-key": who.key},
        json={"model": PARTIAL, "max_tokens": 2, "messages": HELLO},
        timeout=30,
    )
    missing = httpx.post(
        f"{club.hub.url}/v1/messages/count_tokens",
        headers={"x-api-key": who.key},
        json={"model": PARTIAL, "messages": HELLO},
        timeout=30,
    )

    assert response.status_code == 200 and response.json()["content"][0]["text"] == "tok0 tok1"
    assert missing.status_code == 404
    assert anthropic_error(missing)["type"] == "not_found_error"
