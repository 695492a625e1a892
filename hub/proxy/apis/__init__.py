"""The APIs the hub passes through, one module each; the route table maps a request path to its shape."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from hub.errors import HubError
from hub.proxy.apis.audio import Transcriptions, Translations
from hub.proxy.apis.base import Api
from hub.proxy.apis.messages import CountTokens, Messages
from hub.proxy.apis.openai import ChatCompletions, Completions, Embeddings
from hub.proxy.apis.rerank import Rerank
from hub.proxy.apis.responses import Responses

SHAPES: tuple[Api, ...] = (
    ChatCompletions(),
    Completions(),
    Embeddings(),
    Responses(),
    Messages(),
    CountTokens(),
    Rerank(),
    Transcriptions(),
    Translations(),
)
BY_NAME = MappingProxyType({api.name: api for api in SHAPES})
ROUTES = MappingProxyType({f"/v1/{api.name}": api for api in SHAPES} | {"/rerank": BY_NAME["rerank"]})


def api_for(path: str) -> Api | None:
    return ROUTES.get(path.rstrip("/") or path)


def error_body(path: str, error: HubError) -> dict[str, Any]:
    """The error as the API at `path` shapes it; under /v1/messages (an unknown address too), Anthropic's."""
    api = api_for(path) or (BY_NAME["messages"] if anthropic_path(path) else BY_NAME["chat/completions"])
    return api.error_body(error)


def anthropic_path(path: str) -> bool:
    """Errors on these paths use Anthropic's envelope, whatever went wrong (an unknown address under it too)."""
    return path == "/v1/messages" or path.startswith("/v1/messages/")


__all__ = ["BY_NAME", "ROUTES", "SHAPES", "Api", "anthropic_path", "api_for", "error_body"]
