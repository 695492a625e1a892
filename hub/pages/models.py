"""The Models page: every model the club knows, with its price, where it runs and whether it is online; and the
"try it" box, which sends one prompt through the proxy like any request (streamed in with JavaScript, the whole
answer on a new page without)."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

from litestar import Request, Response, get, post
from litestar.response import Stream, Template
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import User
from hub.errors import HubError
from hub.pricing import service as pricing
from hub.pricing.models import DEFAULT
from hub.pricing.service import Rate
from hub.proxy import tryit
from hub.proxy.tryit import Piece, Question
from hub.proxy.views import disconnected
from hub.runtime import runtime_of
from hub.web.context import Db, Viewer, signed_in
from hub.web.render import page

STATUS_ORDER = {"online": 0, "paused": 1, "offline": 2}
STREAM_HEADER = "x-tryit"  # app.js asks for the answer as it streams (one JSON object a line)


@dataclass(frozen=True)
class ModelRow:
    name: str
    status: str  # online, paused or offline
    gpus: int  # online GPUs this member may use
    own: int  # of which the member's own (free for them)
    rate: Rate
    default_price: bool  # the club's default price applies (no price of its own)

    @property
    def free(self) -> bool:
        return not (self.rate.input_per_million or self.rate.output_per_million or self.rate.audio_per_minute)


async def model_rows(request: Request[Any, Any, Any], db: AsyncSession, user: User) -> list[ModelRow]:
    """What the page lists: models served now, offered by an agent that is paused or gone, or priced."""
    catalog = runtime_of(request).proxy.scheduler.catalog
    await catalog.prices()  # after a restart, also reads once what agents that are away last offered
    live = runtime_of(request).registry.reachable(user.pk)  # any GPU this member may use, whatever a key allows
    prices = {price.model: price for price in await pricing.list_prices(db)}
    statuses = catalog.offered(user.pk) | {model: "online" for model in live}
    for model in prices:
        if model != DEFAULT:
            statuses.setdefault(model, "offline")
    rows = []
    for model, status in statuses.items():
        price = prices.get(model) or prices.get(DEFAULT)
        rate = (
            Rate(price.input_per_million, price.output_per_million, price.default_max_tokens, price.audio_per_minute)
            if price
            else Rate(0, 0)
        )
        links = live.get(model, [])
        own = sum(link.owner_id == user.pk for link in links)
        rows.append(ModelRow(model, status, len(links), own, rate, model not in prices))
    return sorted(rows, key=lambda row: (STATUS_ORDER[row.status], row.name))


async def _page(
    request: Request[Any, Any, Any],
    db: AsyncSession,
    user: User,
    *,
    asked: Question | None = None,
    answer: str = "",
    error: str = "",
    status_code: int = 200,
) -> Template:
    rows = await model_rows(request, db, user)
    return page(
        request,
        "models.html",
        block="model_list",
        rows=rows,
        online=_chat_first(request, user, [row.name for row in rows if row.status == "online"]),
        asked=asked,
        answer=answer,
        error=error,
        max_prompt=tryit.MAX_PROMPT_CHARS,
        max_tokens=tryit.MAX_TOKENS,
        default_tokens=tryit.DEFAULT_MAX_TOKENS,
        status_code=status_code,
    )


def _chat_first(request: Request[Any, Any, Any], user: User, names: list[str]) -> list[str]:
    """The try box's choices: models some reachable GPU serves as chat first (the box asks chat/completions)."""
    live = runtime_of(request).registry.reachable(user.pk)
    chat = {name for name in names if any("chat/completions" in link.apis_of(name) for link in live.get(name, []))}
    return sorted(names, key=lambda name: (name not in chat, name))


@get("/models", name="models")
async def models(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Template:
    user = signed_in(viewer)
    return await _page(request, db, user)


@post("/models/try", name="models_try", status_code=200)
async def try_model(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Template | Response[Any]:
    """Send the box's prompt as this member; charged and recorded like a request with an API key."""
    user = signed_in(viewer)
    form = await request.form()
    streaming = request.headers.get(STREAM_HEADER) == "stream"
    asked = None
    try:
        asked = tryit.question(form)
        pieces = await tryit.ask(runtime_of(request).proxy, user.pk, asked, disconnected(request))
    except HubError as exc:
        if streaming:
            return Response(_line(error=exc.message), status_code=exc.status_code, media_type="application/x-ndjson")
        return await _page(request, db, user, asked=asked, error=exc.message, status_code=exc.status_code)
    if streaming:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return Stream(_lines(pieces), media_type="application/x-ndjson", headers=headers)
    answer, error = await tryit.whole(pieces)
    return await _page(request, db, user, asked=asked, answer=answer, error=error)


def _line(**item: Any) -> bytes:
    return json.dumps(item).encode() + b"\n"


async def _lines(pieces: AsyncGenerator[Piece, None]) -> AsyncIterator[bytes]:
    """One JSON object a line: {"text": …} as the answer arrives, {"error": …} if it stops early, {"done": true}."""
    try:
        async for piece in pieces:
            yield _line(error=piece.error) if piece.error else _line(text=piece.text)
            if piece.error:
                return
        yield _line(done=True)
    finally:
        await pieces.aclose()  # the browser went away: the request ends at the GPU too


routes = [models, try_model]
