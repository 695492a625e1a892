"""The one place where errors become responses: a page, an htmx fragment, or the API's JSON error envelope."""

from __future__ import annotations

import logging
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from litestar.exceptions import NotFoundException as RouteNotFound
from litestar.response import Redirect

from hub.errors import BadRequest, DatabaseUnavailable, Forbidden, HubError, NotFound, NotSignedIn, PayloadTooLarge
from hub.logs import redact_path
from hub.outage import RETRY_AFTER, is_outage
from hub.proxy.apis import ROUTES, error_body
from hub.runtime import runtime_of
from hub.web.render import is_htmx, page

log = logging.getLogger("gpuclub")


def api_envelope(path: str, error: HubError) -> Response[Any]:
    """The error as the API at `path` shapes it (`hub.proxy.apis`): Anthropic's on /v1/messages*, else OpenAI's."""
    body = error_body(path, error)
    retry_after = getattr(error, "retry_after", None)
    headers = dict(error.headers) | ({"Retry-After": str(retry_after)} if retry_after is not None else {})
    return Response(body, status_code=error.status_code, media_type=MediaType.JSON, headers=headers)


def _from_litestar(exc: HTTPException) -> HubError:
    if isinstance(exc, RouteNotFound) or exc.status_code == 404:
        return NotFound("There is nothing at this address.")
    if isinstance(exc, PermissionDeniedException) and "CSRF" in str(exc.detail):
        return Forbidden("This form has expired or did not come from this site. Reload the page and try again.")
    if isinstance(exc, PermissionDeniedException | NotAuthorizedException):
        return Forbidden()
    if exc.status_code == 413:
        return PayloadTooLarge("The request body is too large.")
    if exc.status_code == 405:
        error = BadRequest("This address does not accept that method.")
        error.status_code = 405
        return error
    return BadRequest(str(exc.detail) if exc.status_code < 500 else "The request could not be handled.")


def handle(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if isinstance(exc, HubError):
        error = exc
    elif isinstance(exc, HTTPException):
        error = _from_litestar(exc)
    elif is_outage(exc):  # a page, or a read no cache covers: said once per outage, not a traceback each time
        runtime_of(request).outage.noticed(exc)
        error = DatabaseUnavailable(
            "The hub's database cannot be reached right now, so this cannot be done. Please try again in a minute.",
            retry_after=RETRY_AFTER,
        )
    else:
        # The path may hold a live token (/login/…, /invite/…): logged redacted, like the access log.
        where = redact_path(request.scope["path"])
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, where, exc_info=exc)
        error = HubError("Something went wrong on our side. It has been logged; please try again.")

    path = request.scope["path"]
    if path.startswith("/v1") or path in ROUTES:
        return api_envelope(path, error)
    if isinstance(error, NotSignedIn):
        if is_htmx(request):
            return Response(b"", status_code=204, headers={"HX-Redirect": "/"})
        return Redirect("/", status_code=303)
    if is_htmx(request):
        response = page(request, "_flash.html", message=error.message, kind="error", status_code=error.status_code)
        response.headers.update({"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"})
        return response
    response = page(request, "error.html", error=error, status_code=error.status_code)
    if (retry_after := getattr(error, "retry_after", None)) is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response
