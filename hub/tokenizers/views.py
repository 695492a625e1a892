"""Admin → Tokenizers: attach a tokenizer.json to a model name, or remove it."""

from __future__ import annotations

from typing import Any

from litestar import Request, get, post
from litestar.datastructures import UploadFile
from litestar.response import Redirect, Template
from litestar.types import ASGIApp, Receive, Scope, Send
from litestar.utils.empty import value_or_default
from litestar.utils.scope.state import ScopeState

from hub.accounts.models import User
from hub.errors import BadRequest
from hub.runtime import runtime_of
from hub.tokenizers import service
from hub.tokenizers.counting import Tokenizers
from hub.web.context import Db, Viewer, admin
from hub.web.render import is_htmx, page

TOKENIZERS = "/admin/tokenizers"


async def _tokenizers(request: Request[Any, Any, Any], db: Db, user: User, **extra: Any) -> Template:
    return page(
        request,
        "admin/tokenizers.html",
        block="tokenizers",
        attached=await service.list_attached(db, user),
        max_mb=service.MAX_BYTES // (1024 * 1024),
        size=service.format_size,
        **extra,
    )


async def _changed(request: Request[Any, Any, Any], db: Db, user: User, message: str) -> Template | Redirect:
    # Load (or drop) it in this process now, so the next request is counted with it; other hub processes notice
    # within REFRESH_SECONDS.
    tokenizers: Tokenizers = runtime_of(request).tokenizers
    await tokenizers.refresh()
    return (
        await _tokenizers(request, db, user, flash=message)
        if is_htmx(request)
        else Redirect(TOKENIZERS, status_code=303)
    )


def closing_uploads(app: ASGIApp) -> ASGIApp:
    """Close the uploaded files of a form whatever happens: Litestar's CSRF check parses the form, and when it or
    the admin check refuses the request, nobody else would close them."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await app(scope, receive, send)
        finally:
            form: dict[str, Any] = value_or_default(ScopeState.from_scope(scope).form, {})
            for values in form.values():
                for value in values if isinstance(values, list) else [values]:
                    if isinstance(value, UploadFile):
                        await value.close()

    return middleware


@get(TOKENIZERS, name="admin_tokenizers")
async def tokenizers_page(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Template:
    user = admin(viewer)
    return await _tokenizers(request, db, user)


# The app's body limit is sized for API requests; a tokenizer file may be larger.
@post(TOKENIZERS, request_max_body_size=service.MAX_BYTES + 64 * 1024, middleware=[closing_uploads])
async def tokenizer_attach(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Template | Redirect:
    user = admin(viewer)
    form = await request.form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise BadRequest("Please choose a tokenizer.json file to upload.")
    raw = await upload.read(service.MAX_BYTES + 1)
    row = await service.attach(db, user, str(form.get("model", "")), raw)
    return await _changed(request, db, user, f"The hub now counts the tokens of {row.model} itself.")


@post(f"{TOKENIZERS}/remove")
async def tokenizer_detach(request: Request[Any, Any, Any], db: Db, viewer: Viewer) -> Template | Redirect:
    user = admin(viewer)
    form = await request.form()
    model = str(form.get("model", "")).strip()
    if not model:
        raise BadRequest("Please say which model's tokenizer to remove.")
    removed = await service.detach(db, user, model)
    message = f"The tokenizer of {model} is removed." if removed else f"{model} had no tokenizer."
    return await _changed(request, db, user, message)


routes = [tokenizers_page, tokenizer_attach, tokenizer_detach]
