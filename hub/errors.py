"""One error hierarchy for the whole hub.

    HubError
     ├── ConfigError            a setting is wrong (start-up only)
     ├── BadRequest             400: input that cannot be used
     │    └── InvalidJSON       400 on /v1
     ├── PayloadTooLarge        413
     ├── NotSignedIn            401 on pages: sign in first
     ├── InvalidApiKey          401 on /v1
     ├── Unauthorized           401: an agent token the hub does not accept
     ├── Forbidden              403
     │    ├── NotInvited        signed in at a provider, but no invitation or rule admits them
     │    └── ModelNotAllowed   403 on /v1: the key may not use this model
     ├── NotFound               404
     │    └── ModelNotFound     404 on /v1
     ├── Conflict               409
     ├── InsufficientCredits    402 insufficient_quota: the balance cannot cover the request's hold
     │    └── KeyBudgetExceeded 402 with Retry-After: the key's budget for today or this month cannot cover it
     ├── TooManyRequests        429 with Retry-After (queue full, quotas)
     ├── Unavailable            503 with Retry-After (no free GPU in time)
     │    ├── Restarting        503 with Retry-After: the hub is draining before a restart
     │    └── DatabaseUnavailable  503 with Retry-After: the database is away and the request needs what was never read
     └── UpstreamFailed         502 (the member's server failed or timed out)

Services raise these; `hub.web.errors` translates them, in one place, into a page, an htmx fragment or OpenAI's
JSON error envelope.
"""

from __future__ import annotations


class HubError(Exception):
    status_code = 500
    openai_type = "server_error"
    code: str | None = None
    title = "Something went wrong"

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.title)
        self.message = message or self.title
        self.headers: dict[str, str] = {}


class ConfigError(HubError):
    title = "Configuration error"


class BadRequest(HubError):
    status_code = 400
    openai_type = "invalid_request_error"
    title = "That did not work"


class InvalidJSON(BadRequest):
    code = "invalid_json"


class PayloadTooLarge(HubError):
    status_code = 413
    openai_type = "invalid_request_error"
    code = "payload_too_large"
    title = "Too large"


class NotSignedIn(HubError):
    status_code = 401
    openai_type = "invalid_request_error"
    title = "Please sign in"


class InvalidApiKey(HubError):
    status_code = 401
    openai_type = "invalid_request_error"
    code = "invalid_api_key"
    title = "Invalid API key"


class Unauthorized(HubError):
    status_code = 401
    openai_type = "invalid_request_error"
    code = "invalid_token"
    title = "Not accepted"


class Forbidden(HubError):
    status_code = 403
    openai_type = "permission_error"
    title = "Not allowed"


class NotFound(HubError):
    status_code = 404
    openai_type = "invalid_request_error"
    code = "not_found"
    title = "Not found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class InsufficientCredits(HubError):
    status_code = 402
    openai_type = "insufficient_quota"
    code = "insufficient_quota"
    title = "Not enough credits"


def ask_for_credits(buy_url: str | None) -> str:
    """What a member out of credits can do: buying is offered only where the hub sells credits (Stripe)."""
    return f"Ask an admin for credits or buy some at {buy_url}." if buy_url else "Ask an admin for credits."


class TryLater(HubError):
    """Refused for now; `retry_after` seconds becomes the Retry-After header."""

    def __init__(self, message: str = "", *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooManyRequests(TryLater):
    status_code = 429
    openai_type = "rate_limit_error"
    code = "rate_limit_exceeded"
    title = "Too many requests"


class Unavailable(TryLater):
    status_code = 503
    openai_type = "server_error"
    code = "no_capacity"
    title = "Busy"


class Restarting(Unavailable):
    code = "hub_restarting"
    title = "Restarting"


class DatabaseUnavailable(Unavailable):
    code = "database_unavailable"
    title = "Database unavailable"


class UpstreamFailed(HubError):
    status_code = 502
    openai_type = "server_error"
    code = "upstream_error"
    title = "The GPU's server failed"


class Conflict(HubError):
    status_code = 409
    openai_type = "invalid_request_error"
    title = "Conflict"


class NotInvited(Forbidden):
    title = "Ask an admin for an invitation"


class KeyBudgetExceeded(InsufficientCredits):
    """402: the key's own budget for today or this month cannot cover the request's hold (OpenRouter's key limit)."""

    code = "key_budget_exceeded"
    title = "This key's budget is spent"

    def __init__(self, message: str = "", *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # seconds until the budget starts again


class ModelNotAllowed(Forbidden):
    """403 on /v1: the key names the models it may use, and this is not one of them."""

    code = "model_not_allowed"
    title = "Model not allowed for this key"
