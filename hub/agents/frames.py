"""Checking what an agent sends before the hub uses it. The agent is the provider's program: any field can be
anything, so every value is validated and bounded here, and a malformed frame is a `BadFrame`, never a crash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent import protocol

MAX_HEADERS = 32
MAX_HEADER_BYTES = 8 * 1024
MAX_GPUS = 16


class BadFrame(ValueError):
    """A frame the hub cannot use; the message says why, for the log."""


@dataclass(frozen=True)
class Models:
    """The model names the hub accepted, and a notice for the agent about the ones it refused (or None)."""

    names: frozenset[str]
    notice: str | None
    apis: dict[str, frozenset[str]] = field(default_factory=dict)  # only for accepted names; the rest: legacy


def models(message: dict[str, Any]) -> Models:
    listed = message.get("models", [])
    if not isinstance(listed, list):
        return Models(frozenset(), "the hub ignored the model list: it must be a list of names")
    names = [m for m in listed if isinstance(m, str) and 0 < len(m) <= protocol.MAX_MODEL_NAME and m.isprintable()]
    problems = []
    if len(names) < len(listed):
        problems.append(
            f"{len(listed) - len(names)} model name(s) that are not text of 1 to {protocol.MAX_MODEL_NAME} "
            "printable characters"
        )
    unique = list(dict.fromkeys(names))
    if len(unique) > protocol.MAX_MODELS:
        problems.append(
            f"{len(unique) - protocol.MAX_MODELS} model(s) past the limit of {protocol.MAX_MODELS} per agent"
        )
        unique = unique[: protocol.MAX_MODELS]
    accepted = frozenset(unique)
    apis, problem = _apis(message.get("apis"), accepted)
    if problem:
        problems.append(problem)
    notice = f"the hub ignored {' and '.join(problems)}" if problems else None
    return Models(accepted, notice, apis)


def _apis(listed: Any, models: frozenset[str]) -> tuple[dict[str, frozenset[str]], str | None]:
    """Which APIs serve each model: known API names only, for models the hub accepted; the legacy three always."""
    if listed is None:
        return {}, None
    if not isinstance(listed, dict):
        return {}, "the API list (it must map model names to lists of API names)"
    known = set(protocol.APIS)
    found: dict[str, frozenset[str]] = {}
    unknown = 0
    for model, names in listed.items():
        if model not in models or not isinstance(names, list):
            continue
        valid = {name for name in names if isinstance(name, str) and name in known}
        unknown += len(names) - len(valid)
        found[model] = frozenset(valid | set(protocol.LEGACY_APIS))
    return found, f"{unknown} API name(s) it does not know" if unknown else None


def capacity(message: dict[str, Any]) -> int:
    value = message.get("capacity")
    return min(value, 1024) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def short_text(value: Any, limit: int) -> str:
    return "".join(c for c in value if c.isprintable())[:limit] if isinstance(value, str) else ""


def gpus(message: dict[str, Any]) -> list[dict[str, Any]]:
    """GPU names and memory as the agent describes them (shown on My GPUs), trimmed to plain values."""
    listed = message.get("gpus")
    found: list[dict[str, Any]] = []
    for gpu in listed[:MAX_GPUS] if isinstance(listed, list) else []:
        if not isinstance(gpu, dict):
            continue
        memory = gpu.get("memory_mb")
        valid = isinstance(memory, int) and not isinstance(memory, bool) and 0 < memory < 10_000_000
        found.append({"name": short_text(gpu.get("name"), 100), "memory_mb": memory if valid else None})
    return found


def start(message: dict[str, Any]) -> tuple[int, dict[str, str]]:
    """The status line and headers of an answer."""
    status = message.get("status")
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise BadFrame(f"the agent sent a status that is not an HTTP status ({str(status)[:20]!r})")
    headers = message.get("headers") or {}
    if not isinstance(headers, dict) or len(headers) > MAX_HEADERS:
        raise BadFrame("the agent sent headers that are not a small object of names and values")
    clean: dict[str, str] = {}
    size = 0
    for name, value in headers.items():
        if not isinstance(value, str) or not _token(name) or not value.isprintable():
            raise BadFrame("the agent sent a header that is not a name and a printable value")
        size += len(name) + len(value)
        clean[name.lower()] = value
    if size > MAX_HEADER_BYTES:
        raise BadFrame("the agent sent headers larger than the hub accepts")
    return status, clean


def error(message: dict[str, Any]) -> str | None:
    """Why a request ended badly (None: it finished)."""
    value = message.get("error")
    if value is None:
        return None
    return short_text(value, 300) or "the agent reported an error"


def _token(name: str) -> bool:
    return 0 < len(name) <= 100 and name.isascii() and all(c.isalnum() or c in "-_" for c in name)
