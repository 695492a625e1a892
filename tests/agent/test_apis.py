"""APIs beyond chat completions through the tunnel: advertised per model, and requests of every shape forwarded.

The agent is the real `gpuclub-agent` process, the hub end of the tunnel is played by the test (conftest.py), and
the upstream is a stub HTTP server in the test that records exactly what reached it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from typing import Any

from websockets.asyncio.server import ServerConnection

from agent import protocol
from tests.agent.conftest import StandInHub, receive, response, running_agent, stub_upstream

LEGACY = list(protocol.LEGACY_APIS)
PROBED = [api for api in protocol.APIS if api not in protocol.LEGACY_APIS]
WHISPER = "whisper-1"
TRANSCRIPTIONS = "/v1/audio/transcriptions"


def multipart(audio: bytes) -> tuple[str, bytes]:
    """(content type, body) of the form an OpenAI client uploads to /v1/audio/transcriptions."""
    boundary = "gpuclub-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\n{WHISPER}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    )
    return f"multipart/form-data; boundary={boundary}", head.encode() + audio + f"\r\n--{boundary}--\r\n".encode()


async def upload(ws: ServerConnection, body: str, content_type: str, **extra: Any) -> str:
    request_id = uuid.uuid4().hex
    fields = {"content_type": content_type, "encoding": "base64", "model": WHISPER, **extra}
    await ws.send(protocol.text("request", id=request_id, path=TRANSCRIPTIONS, body=body, **fields))
    return request_id


async def test_the_hello_says_which_apis_each_model_has(hub: StandInHub) -> None:
    answers = {"/v1/responses": 400, TRANSCRIPTIONS: 400}
    async with stub_upstream(["llama-3-8b", WHISPER], answers=answers) as stub, running_agent(hub, stub):
        _, hello = await hub.welcome()

    served = [*LEGACY, "responses", "audio/transcriptions"]
    assert hello["models"] == ["llama-3-8b", WHISPER]
    assert hello["apis"] == {"llama-3-8b": served, WHISPER: served}


async def test_apis_declared_with_the_flag_replace_the_probes(hub: StandInHub) -> None:
    flags = ("--api", "messages", "--api", "messages/count_tokens")
    async with stub_upstream(["llama-3-8b"], answers={"/v1/responses": 400}) as stub, running_agent(hub, stub, *flags):
        _, hello = await hub.welcome()
        probes = stub.posted()

    assert hello["apis"] == {"llama-3-8b": [*LEGACY, "messages", "messages/count_tokens"]}
    assert probes == []


async def test_a_model_loaded_with_a_new_api_is_probed_and_told_to_the_hub(hub: StandInHub) -> None:
    async with stub_upstream(["llama-3-8b"]) as stub, running_agent(hub, stub, "--refresh", "1"):
        ws, hello = await hub.welcome()
        stub.answers["/v1/rerank"] = 422
        stub.models.append("bge-reranker")  # loaded into a server that now has /v1/rerank

        changed = await receive(ws)
        probes = stub.posted()

    served = [*LEGACY, "rerank"]
    assert hello["apis"] == {"llama-3-8b": LEGACY}
    assert changed == {
        "type": "models",
        "models": ["llama-3-8b", "bge-reranker"],
        "apis": {"llama-3-8b": served, "bge-reranker": served},
    }
    # Once at start and once when the models changed: refreshes that found the same models sent none.
    assert len(probes) == 2 * len(PROBED)


async def test_a_multipart_upload_reaches_the_upstream_byte_for_byte(hub: StandInHub) -> None:
    content_type, body = multipart(bytes(range(256)) * 64)  # not UTF-8: it only travels as base64
    answers = {TRANSCRIPTIONS: 200}
    async with stub_upstream([WHISPER], answers=answers, reply={"text": "hello"}) as stub, running_agent(hub, stub):
        ws, _ = await hub.welcome()

        start, chunks, end = await response(ws, await upload(ws, base64.b64encode(body).decode(), content_type))

    got = stub.seen[-1]
    assert (got.method, got.path, got.headers["content-type"], got.body) == ("POST", TRANSCRIPTIONS, content_type, body)
    assert start is not None and start["status"] == 200
    assert json.loads(b"".join(chunks)) == {"text": "hello"} and end["error"] is None


async def test_a_16_mib_upload_fits_in_one_request_frame(hub: StandInHub) -> None:
    _, wrapper = multipart(b"")
    content_type, body = multipart(bytes(range(256)) * ((16 * 1024 * 1024 - len(wrapper)) // 256))
    answers = {TRANSCRIPTIONS: 200}
    async with stub_upstream([WHISPER], answers=answers, reply={"text": "long"}) as stub, running_agent(hub, stub):
        ws, _ = await hub.welcome()

        start, _, end = await response(ws, await upload(ws, base64.b64encode(body).decode(), content_type))

    assert start is not None and start["status"] == 200 and end["error"] is None
    assert hashlib.sha256(stub.seen[-1].body).hexdigest() == hashlib.sha256(body).hexdigest()


async def test_a_body_that_is_not_base64_ends_its_request_with_an_error(hub: StandInHub) -> None:
    content_type, _ = multipart(b"")
    async with stub_upstream([WHISPER], answers={TRANSCRIPTIONS: 200}) as stub, running_agent(hub, stub):
        ws, _ = await hub.welcome()
        request_id = await upload(ws, "this is not base64!", content_type)

        refused = await response(ws, request_id)

    assert refused == (None, [], {"type": "end", "id": request_id, "error": "the request body is not valid base64"})
    assert [s for s in stub.posted() if s.path == TRANSCRIPTIONS and s.body != b"{}"] == []


async def test_only_the_anthropic_headers_go_on_to_the_upstream(hub: StandInHub) -> None:
    body = {"model": "claude-local", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    headers = {
        "anthropic-version": "2023-06-01",
        "Anthropic-Beta": "tools-2024-04-04",
        "x-api-key": "member-key",
        "authorization": "Bearer member-key",
        "cookie": "session=abc",
    }
    answers = {"/v1/messages": 200}
    flags = ("--upstream-key", "up-key")
    async with (
        stub_upstream(["claude-local"], answers=answers, reply={"type": "message"}) as stub,
        running_agent(hub, stub, *flags),
    ):
        ws, _ = await hub.welcome()
        request_id = uuid.uuid4().hex
        frame = protocol.text("request", id=request_id, path="/v1/messages", body=json.dumps(body), headers=headers)
        await ws.send(frame)

        start, _, _ = await response(ws, request_id)

    got = stub.seen[-1]
    assert start is not None and start["status"] == 200 and json.loads(got.body) == body
    assert got.headers["anthropic-version"] == "2023-06-01"
    assert got.headers["anthropic-beta"] == "tools-2024-04-04"
    assert got.headers["authorization"] == "Bearer up-key"  # the upstream's key, never the member's
    assert got.headers["content-type"] == "application/json"
    assert "x-api-key" not in got.headers and "cookie" not in got.headers
