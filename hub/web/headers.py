"""Security headers on every answer: a script-tight Content-Security-Policy on pages, `nosniff` everywhere.

Providers are untrusted and their text reaches our pages and `/v1` answers, so the browser is told to run only our
own scripts and styles, never to guess a content type, and never to frame us.
"""

from __future__ import annotations

from litestar.types import Message, Scope

from hub.settings import Settings

Headers = list[tuple[bytes, bytes]]

# Stripe Checkout is reached by a form POST that the hub answers with a redirect; browsers apply form-action to
# that redirect, so the checkout origin must be allowed when purchases are on.
STRIPE_CHECKOUT = "https://checkout.stripe.com"


def page_policy(settings: Settings) -> str:
    form_action = "'self'" + (f" {STRIPE_CHECKOUT}" if settings.stripe_enabled else "")
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "connect-src 'self'",
            f"form-action {form_action}",
            "base-uri 'none'",
            "object-src 'none'",
            "frame-ancestors 'none'",
        ]
    )


def _encode(headers: dict[str, str]) -> Headers:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


class SecurityHeaders:
    """A before-send hook: it sees every response Litestar sends, the router's own 404 and 405 included (route
    middleware never sees those), and touches only the `http.response.start` message, so streams pass unbuffered.
    The header lists are built once; per response the cost is one list concatenation."""

    def __init__(self, settings: Settings) -> None:
        self.pages = _encode(
            {
                "Content-Security-Policy": page_policy(settings),
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "same-origin",  # sign-in and invitation links carry secrets in their path
                "X-Frame-Options": "DENY",
            }
        )
        # An agent chooses the content type of a /v1 answer; if it says text/html, nothing in it may run.
        self.api = _encode(
            {
                "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
                "X-Content-Type-Options": "nosniff",
            }
        )

    async def __call__(self, message: Message, scope: Scope) -> None:
        if message["type"] != "http.response.start":
            return
        api = scope["path"].startswith("/v1") or scope["path"] == "/rerank"
        extra = self.api if api else self.pages
        message["headers"] = [*message.get("headers", ()), *extra]
