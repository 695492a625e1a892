"""The APIs under `/v1` (and `/rerank`): check the key, read the body once, hand it to the proxy, and turn its
`Reply` into a Litestar response. The only module of the proxy that knows Litestar."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.params import FromPath
from litestar.response import Stream

from hub.drain import Drain
from hub.errors import InvalidApiKey, ModelNotFound, NotFound, PayloadTooLarge
from hub.keys.cache import Caller
from hub.proxy.apis import ROUTES, anthropic_path, api_for
from hub.proxy.flight import Call
from hub.proxy.relay import Proxy, Reply
from hub.runtime import runtime_of
from hub.web.context import settings_of

# Headers an Anthropic client sends that a server may act on (a beta feature); nothing else of the client's.
PASSED_HEADERS = ("anthropic-version", "anthropic-beta")


async def api_caller(request: Request[Any, Any, Any]) -> Caller:
    """The key's owner: `Authorization: Bearer <key>`, or `x-api-key: <key>` as Anthropic's clients send it."""
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    secret = secret.strip() if scheme.lower() == "bearer" else ""
    secret = secret or request.headers.get("x-api-key", "").strip()
    if not secret:
        raise InvalidApiKey(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>' (or 'x-api-key: <key>'); "
            "create one on the API keys page."
        )
    cache = runtime_of(request).keys
    return await cache.lookup(runtime_of(request).database.session, secret)


def refuse_while_draining(request: Request[Any, Any, Any]) -> None:
    """While the hub drains before a restart, no new /v1 request starts (503 with Retry-After)."""
    drain: Drain = runtime_of(request).drain
    drain.refuse()


async def read_body(request: Request[Any, Any, Any]) -> bytes:
    limit = settings_of(request).max_body_bytes
    if int(request.headers.get("content-length") or 0) > limit:
        raise PayloadTooLarge(f"The request body is larger than this hub's limit of {limit} bytes.")
    raw = await request.body()
    if len(raw) > limit:
        raise PayloadTooLarge(f"The request body is larger than this hub's limit of {limit} bytes.")
    return raw


def _listing(model: str, links: list[Any]) -> dict[str, Any]:
    apis = sorted(set().union(*(link.apis_of(model) for link in links)))
    return {"id": model, "object": "model", "created": 0, "owned_by": "gpuclub", "gpus": len(links), "apis": apis}


@get("/v1/models", name="v1_models")
async def list_models(request: Request[Any, Any, Any]) -> dict[str, Any]:
    refuse_while_draining(request)
    caller = await api_caller(request)
    registry = runtime_of(request).registry
    reachable = registry.reachable(caller.user_id, caller.scope)  # only what this key may reach
    return {"object": "list", "data": [_listing(model, links) for model, links in reachable.items()]}


@get("/v1/models/{model:path}", name="v1_model")
async def show_model(request: Request[Any, Any, Any], model: FromPath[str]) -> dict[str, Any]:
    refuse_while_draining(request)
    caller = await api_caller(request)
    registry = runtime_of(request).registry
    name = model.removeprefix("/")
    links = registry.reachable(caller.user_id, caller.scope).get(name)
    if not links:
        raise ModelNotFound(f"The model '{name}' does not exist or no GPU you can use serves it right now.")
    return _listing(name, links)


@post(list(ROUTES), name="v1_generate", status_code=200)
async def generate(request: Request[Any, Any, Any]) -> Response[Any]:
    refuse_while_draining(request)
    path = request.scope["path"]
    api = api_for(path)
    if api is None:  # the route table and the paths above are the same list
        raise NotFound("There is nothing at this address.")
    caller = await api_caller(request)
    parsed = api.parse(await read_body(request), request.headers.get("content-type", "application/json"))
    passed = {}
    if anthropic_path(path):
        passed = {h: v[:200] for h in PASSED_HEADERS if (v := request.headers.get(h, "")) and v.isprintable()}
    proxy: Proxy = runtime_of(request).proxy
    reply = await proxy.handle(Call.build(caller, api, parsed, passed), _disconnected(request))
    return _response(reply)


def _response(reply: Reply) -> Response[Any]:
    if reply.stream is not None:
        return Stream(reply.stream, status_code=reply.status, media_type=reply.media_type, headers=reply.headers)
    return Response(reply.body, status_code=reply.status, media_type=reply.media_type, headers=reply.headers)


async def _disconnected(request: Request[Any, Any, Any]) -> None:
    """Finishes when the client hangs up (the body has been read, so the next message can only be that)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


routes = [list_models, show_model, generate]
