"""Rerank (`/v1/rerank`, also `/rerank`): a query scored against documents, as llama.cpp, vLLM, Jina and Cohere
clients speak it. Input tokens only, `usage.prompt_tokens` (vLLM reports `total_tokens` alone).

The server reads the query once per document, so the prompt bound counts the query's bytes once per document.
"""

from __future__ import annotations

from typing import Any

from hub.proxy.apis.base import Api, Parsed
from hub.proxy.bounds import PROMPT_BASE_ALLOWANCE, PROMPT_PER_MESSAGE, Limits
from hub.proxy.meter import Relayed, Report, prompt_chars, whole


class Rerank(Api):
    name = "rerank"
    title = "the rerank API"
    generates = False

    def limits(self, parsed: Parsed, body_bytes: int, default_max_tokens: int) -> Limits:
        body = parsed.body
        documents = body.get("documents")
        count = max(len(documents), 1) if isinstance(documents, list) else 1
        query = body.get("query")
        query_bytes = len(query.encode("utf-8", "surrogatepass")) if isinstance(query, str) else 0
        prompt = body_bytes + PROMPT_BASE_ALLOWANCE + (query_bytes + PROMPT_PER_MESSAGE) * count
        return Limits(prompt, 0, prompt_chars(body) + query_bytes * (count - 1), 1, explicit=True)

    def answer(self, payload: Any, relayed: Relayed) -> Report | None:
        usage = payload.get("usage") if isinstance(payload, dict) else None
        if not isinstance(usage, dict):
            return None
        prompt = usage.get("prompt_tokens", usage.get("total_tokens"))
        return Report(whole(prompt), 0)
