"""The APIs under `/v1` (and `/rerank`): check the key, read the body once, hand it to the proxy, and turn its
`Reply` into a Litestar response. The only module of the proxy that knows Litestar."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.params import FromPath
from litestar.response import Stream

from hub.agents.live import Link
from hub.drain import Drain
from hub.errors import InvalidApiKey, ModelNotFound, NotFound, PayloadTooLarge, Unavailable
from hub.keys.cache import Caller
from hub.parsing import format_credits
from hub.pricing.service import Rate
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


def plain_credits(micro: int) -> str:
    """Credits as a decimal string for JSON ("0.5"): exact, never a float."""
    return format_credits(micro).replace(",", "")


def pricing_of(rate: Rate) -> dict[str, str]:
    """What a model costs, in credits: per million prompt and per million completion tokens, and per minute of audio
    if it is priced so."""
    price = {
        "currency": "credits",
        "prompt": plain_credits(rate.input_per_million),
        "completion": plain_credits(rate.output_per_million),
    }
    if rate.audio_per_minute:
        price["audio_minute"] = plain_credits(rate.audio_per_minute)
    return price


def _listing(model: str, links: list[Link], user_id: int, rate: Rate, status: str = "online") -> dict[str, Any]:
    apis = sorted(set().union(*(link.apis_of(model) for link in links)))
    return {
        "id": model,
        "object": "model",
        "created": 0,
        "owned_by": "gpuclub",
        "gpus": len(links),
        "own_gpus": sum(link.owner_id == user_id for link in links),
        "apis": apis,
        "status": status,
        "pricing": pricing_of(rate),
    }


@get("/v1/models", name="v1_models")
async def list_models(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """What this key may reach now, each with its price, GPUs and status (extra fields the OpenAI SDKs keep)."""
    refuse_while_draining(request)
    caller = await api_caller(request)
    scheduler = runtime_of(request).proxy.scheduler
    reachable = scheduler.registry.reachable(caller.user_id, caller.scope)  # only what this key may reach
    rates = await scheduler.catalog.prices()
    rate = scheduler.catalog.rate
    data = [_listing(m, links, caller.user_id, rate(rates, m)) for m, links in reachable.items() if caller.may_use(m)]
    return {"object": "list", "data": data}


@get("/v1/models/{model:path}", name="v1_model")
async def show_model(request: Request[Any, Any, Any], model: FromPath[str]) -> dict[str, Any]:
    """One model as the list shows it; a model the club knows that no GPU serves now has `status` paused or offline."""
    refuse_while_draining(request)
    caller = await api_caller(request)
    scheduler = runtime_of(request).proxy.scheduler
    name = model.removeprefix("/")
    if not caller.may_use(name):  # the key names the models it may use: others are not there for it
        raise ModelNotFound(f"The model '{name}' is not one this API key may use.")
    links = scheduler.registry.reachable(caller.user_id, caller.scope).get(name)
    catalog = scheduler.catalog
    if links:
        return _listing(name, links, caller.user_id, catalog.rate(await catalog.prices(), name))
    error = await scheduler.missing(name, caller.user_id, caller.scope)
    if not isinstance(error, Unavailable):
        raise ModelNotFound(f"The model '{name}' does not exist or no GPU you can use serves it right now.")
    rate = catalog.rate(await catalog.prices(), name)
    return _listing(name, [], caller.user_id, rate, catalog.status(name, caller.user_id))


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
    reply = await proxy.handle(Call.build(caller, api, parsed, passed), disconnected(request))
    return _response(reply)


def _response(reply: Reply) -> Response[Any]:
    if reply.stream is not None:
        return Stream(reply.stream, status_code=reply.status, media_type=reply.media_type, headers=reply.headers)
    return Response(reply.body, status_code=reply.status, media_type=reply.media_type, headers=reply.headers)


async def disconnected(request: Request[Any, Any, Any]) -> None:
    """Finishes when the client hangs up (the body has been read, so the next message can only be that)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


routes = [list_models, show_model, generate]
