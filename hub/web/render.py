"""Pages and their htmx fragments: one template per page, named blocks for the parts htmx swaps."""

from __future__ import annotations

from typing import Any

from jinja2_fragments.litestar import HTMXBlockTemplate
from litestar import Request

from hub.parsing import format_credits
from hub.runtime import runtime_of
from hub.web.context import settings_of


def is_htmx(request: Request[Any, Any, Any]) -> bool:
    return request.headers.get("hx-request") == "true"


def page(
    request: Request[Any, Any, Any],
    template: str,
    *,
    block: str | None = None,
    status_code: int = 200,
    **context: Any,
) -> HTMXBlockTemplate:
    """The whole page, or only `block` when htmx asked for it."""
    settings = settings_of(request)
    state = request.state
    base = {
        "viewer": state.get("viewer"),
        "club_name": state.get("club_name") or settings.club_name,
        "providers": runtime_of(request).providers,
        "email_signin": settings.email_enabled,
        "public_url": settings.public_url,
        "credits": format_credits,
        "standing": state.get("standing"),  # the viewer's balance and limits (hub.club.standing), or None
        "can_buy": settings.stripe_enabled,  # copy mentions buying credits only when it is possible
    }
    return HTMXBlockTemplate(
        template_name=template,
        block_name=block if block and is_htmx(request) else None,
        context=base | context,
        status_code=status_code,
    )
