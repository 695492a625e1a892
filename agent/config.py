"""The agent's settings: one frozen object, built once from flags and the environment, then passed in."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from agent import protocol

DEFAULT_CONCURRENCY = 4
DEFAULT_REFRESH = 30.0


class ConfigError(Exception):
    """A missing or bad setting; the message is one line that names the flag or variable."""


@dataclass(frozen=True)
class Config:
    hub: str
    token: str = field(repr=False)
    upstreams: tuple[str, ...]
    upstream_key: str | None = field(default=None, repr=False)
    max_concurrency: int = DEFAULT_CONCURRENCY
    name: str = ""
    refresh: float = DEFAULT_REFRESH
    apis: tuple[str, ...] | None = None  # declared with --api (LEGACY_APIS included); None: probe the upstreams
    journal: Path | None = None  # where the hub's bills are kept (agent.journal); None: the default for hub+token

    @property
    def tunnel_url(self) -> str:
        """The WebSocket URL: http→ws, https→wss, plus the tunnel path."""
        scheme = "wss" if self.hub.startswith("https://") else "ws"
        return scheme + self.hub[self.hub.index("://") :] + protocol.PATH

    @property
    def token_travels_in_clear(self) -> bool:
        """Plain http to anything but this machine sends the token readable by anyone on the path."""
        parts = urlsplit(self.hub)
        if parts.scheme != "http":
            return False
        host = parts.hostname or ""
        if host == "localhost":
            return False
        try:
            return not ipaddress.ip_address(host).is_loopback
        except ValueError:
            return True


def hub_url(value: str, source: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{source} must be the hub's address, like https://hub.example.org (got {value!r})")
    if parts.query or parts.fragment:
        raise ConfigError(f"{source} must not have a query or fragment (got {value!r})")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ConfigError(f"{source} has a bad port (got {value!r})") from None
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def upstream_url(value: str, source: str) -> str:
    """The server's base URL without a trailing `/v1`: people paste either form."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{source} must be your model server's address, like http://127.0.0.1:8000 (got {value!r})")
    if parts.query or parts.fragment:
        raise ConfigError(f"{source} must not have a query or fragment (got {value!r})")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ConfigError(f"{source} has a bad port (got {value!r})") from None
    path = parts.path.rstrip("/")
    path = path.removesuffix("/v1")
    return f"{parts.scheme}://{parts.netloc}{path}"


def api_names(values: Sequence[str], source: str) -> tuple[str, ...]:
    """The declared APIs plus LEGACY_APIS, in protocol order; `/v1/responses` is taken for `responses`."""
    wanted = set(protocol.LEGACY_APIS)
    for value in values:
        name = value.strip().strip("/").removeprefix("v1/")
        if name not in protocol.APIS:
            raise ConfigError(f"{source} must be one of {', '.join(protocol.APIS)} (got {value!r})")
        wanted.add(name)
    return tuple(api for api in protocol.APIS if api in wanted)


def _secret(flag_value: str | None, flag: str, env: Mapping[str, str], variable: str) -> tuple[str | None, str]:
    """A secret from its flag, its variable, or the file named by `<variable>_FILE`."""
    if flag_value:
        return flag_value.strip(), flag
    if env.get(variable):
        return env[variable].strip(), variable
    if path := env.get(f"{variable}_FILE"):
        try:
            return Path(path).read_text(encoding="utf-8").strip(), f"{variable}_FILE"
        except OSError as exc:
            raise ConfigError(f"{variable}_FILE: cannot read {path} ({exc.strerror})") from None
    return None, flag


def _number(value: str, source: str, *, kind: type[int] | type[float], minimum: float) -> float:
    try:
        number = kind(value.strip())
    except ValueError:
        what = "a whole number" if kind is int else "a number of seconds"
        raise ConfigError(f"{source} must be {what} (got {value!r})") from None
    if number < minimum:
        raise ConfigError(f"{source} must be at least {minimum:g} (got {value!r})")
    return number


def build(
    *,
    env: Mapping[str, str],
    hub: str | None = None,
    token: str | None = None,
    upstreams: Sequence[str] | None = None,
    upstream_key: str | None = None,
    max_concurrency: str | None = None,
    name: str | None = None,
    refresh: str | None = None,
    apis: Sequence[str] | None = None,
    journal: str | None = None,
) -> Config:
    """Flags win over the environment; every problem names the flag or variable it came from."""
    hub_value, hub_source = (hub, "--hub") if hub else (env.get("GPUCLUB_HUB"), "GPUCLUB_HUB")
    if not hub_value:
        raise ConfigError("missing the hub address: pass --hub URL or set GPUCLUB_HUB")
    token_value, token_source = _secret(token, "--token", env, "GPUCLUB_AGENT_TOKEN")
    if not token_value:
        raise ConfigError(
            "missing the agent token: pass --token or set GPUCLUB_AGENT_TOKEN (create one on the My GPUs page)"
        )
    if any(ch.isspace() for ch in token_value):
        raise ConfigError(f"{token_source} must not contain spaces")
    if upstreams:
        raw_upstreams, upstream_source = list(upstreams), "--upstream"
    else:
        raw_upstreams = [u for u in env.get("GPUCLUB_UPSTREAM", "").split(",") if u.strip()]
        upstream_source = "GPUCLUB_UPSTREAM"
    if not raw_upstreams:
        raise ConfigError(
            "missing your model server's address: pass --upstream URL (e.g. http://127.0.0.1:8000) "
            "or set GPUCLUB_UPSTREAM"
        )
    bases = tuple(dict.fromkeys(upstream_url(u, upstream_source) for u in raw_upstreams))
    key_value, _ = _secret(upstream_key, "--upstream-key", env, "GPUCLUB_UPSTREAM_KEY")
    concurrency = _pick(max_concurrency, "--max-concurrency", env, "GPUCLUB_MAX_CONCURRENCY")
    refresh_value = _pick(refresh, "--refresh", env, "GPUCLUB_MODEL_REFRESH")
    every = _number(*refresh_value, kind=float, minimum=1) if refresh_value else DEFAULT_REFRESH
    capacity = int(_number(*concurrency, kind=int, minimum=1)) if concurrency else DEFAULT_CONCURRENCY
    if apis:
        declared: tuple[str, ...] | None = api_names(apis, "--api")
    elif env.get("GPUCLUB_APIS", "").strip():
        declared = api_names([a for a in env["GPUCLUB_APIS"].split(",") if a.strip()], "GPUCLUB_APIS")
    else:
        declared = None
    name_value = (name or env.get("GPUCLUB_AGENT_NAME") or socket.gethostname()).strip()
    if not name_value or len(name_value) > 100:
        raise ConfigError("--name must be 1 to 100 characters")
    return Config(
        hub=hub_url(hub_value, hub_source),
        token=token_value,
        upstreams=bases,
        upstream_key=key_value or None,
        max_concurrency=capacity,
        name=name_value,
        refresh=every,
        apis=declared,
        journal=Path(journal_value).expanduser() if (journal_value := journal or env.get("GPUCLUB_JOURNAL")) else None,
    )


def _pick(flag_value: str | None, flag: str, env: Mapping[str, str], variable: str) -> tuple[str, str] | None:
    if flag_value is not None:
        return flag_value, flag
    if env.get(variable):
        return env[variable], variable
    return None
