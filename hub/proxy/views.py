"""The OpenAI-compatible API under `/v1`: parse, check the key, hand to the proxy."""

from __future__ import annotations

import json
from typing import Any

from litestar import Request, Response, get, post

from hub.agents.live import Registry
from hub.errors import BadRequest, InvalidApiKey, InvalidJSON, PayloadTooLarge
from hub.keys.cache import Caller, KeyCache
from hub.proxy.bounds import MAX_CHOICES
from hub.proxy.forward import Call, Proxy
from hub.web.context import settings_of


async def api_caller(request: Request[Any, Any, Any]) -> Caller:
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise InvalidApiKey(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'; create one on the API keys page."
        )
    cache: KeyCache = request.app.state.key_cache
    return await cache.lookup(request.app.state.db.session, secret.strip())


async def json_body(request: Request[Any, Any, Any]) -> tuple[dict[str, Any], str, int]:
    limit = settings_of(request).max_body_bytes
    if int(request.headers.get("content-length") or 0) > limit:
        raise PayloadTooLarge(f"The request body is larger than this hub's limit of {limit} bytes.")
    raw = await request.body()
    if len(raw) > limit:
        raise PayloadTooLarge(f"The request body is larger than this hub's limit of {limit} bytes.")
    try:
        text = raw.decode()
        body = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise InvalidJSON("We could not parse the JSON body of your request.") from None
    except RecursionError:
        raise InvalidJSON("The JSON body of your request is nested too deeply.") from None
    if not isinstance(body, dict):
        raise InvalidJSON("The request body must be a JSON object.")
    n = body.get("n", 1)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CHOICES:
        raise BadRequest(f"'n' must be a whole number from 1 to {MAX_CHOICES}.")
    if not isinstance(body.get("model"), str) or not body["model"]:
        error = BadRequest("You must provide a model parameter.")
        error.code = "missing_model"
        raise error
    return body, text, len(raw)


@get("/v1/models", name="v1_models")
async def list_models(request: Request[Any, Any, Any]) -> dict[str, Any]:
    caller = await api_caller(request)
    registry: Registry = request.app.state.registry
    models = registry.models_for(caller.user_id, caller.scope)  # only what this key may reach
    return {
        "object": "list",
        "data": [
            {"id": model, "object": "model", "created": 0, "owned_by": "gpuclub", "gpus": count}
            for model, count in models.items()
        ],
    }


@post(["/v1/chat/completions", "/v1/completions", "/v1/embeddings"], name="v1_generate", status_code=200)
async def generate(request: Request[Any, Any, Any]) -> Response[Any]:
    caller = await api_caller(request)
    body, raw, size = await json_body(request)
    proxy: Proxy = request.app.state.proxy
    return await proxy.handle(Call.build(caller, request.url.path, body, raw, size), _disconnected(request))


async def _disconnected(request: Request[Any, Any, Any]) -> None:
    """Finishes when the client hangs up (the body has been read, so the next message can only be that)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


routes = [list_models, generate]
