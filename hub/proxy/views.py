"""The OpenAI-compatible API under `/v1`. Routing to agents arrives with the agents feature; until then no
model is served, so every well-formed request for a model gets OpenAI's `model_not_found`."""

from __future__ import annotations

import json
from typing import Any

from litestar import Request, get, post

from hub.accounts.models import User
from hub.errors import BadRequest, InvalidApiKey, InvalidJSON, ModelNotFound
from hub.keys import service as keys
from hub.keys.models import ApiKey
from hub.web.context import Db


async def api_caller(request: Request[Any, Any, Any], db: Db) -> tuple[User, ApiKey]:
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise InvalidApiKey(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'; create one on the API keys page."
        )
    return await keys.authenticate(db, secret.strip())


async def json_body(request: Request[Any, Any, Any]) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidJSON("We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise InvalidJSON("The request body must be a JSON object.")
    if not isinstance(body.get("model"), str) or not body["model"]:
        error = BadRequest("You must provide a model parameter.")
        error.code = "missing_model"
        raise error
    return body


@get("/v1/models", name="v1_models")
async def list_models(request: Request[Any, Any, Any], db: Db) -> dict[str, Any]:
    await api_caller(request, db)
    return {"object": "list", "data": []}


@post(["/v1/chat/completions", "/v1/completions", "/v1/embeddings"], name="v1_generate", status_code=200)
async def generate(request: Request[Any, Any, Any], db: Db) -> dict[str, Any]:
    await api_caller(request, db)
    body = await json_body(request)
    raise ModelNotFound(f"The model '{body['model']}' does not exist or no GPU in the club serves it right now.")


routes = [list_models, generate]
