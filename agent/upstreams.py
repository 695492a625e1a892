"""The model servers next to the agent: which models each one serves, and forwarding one request to one of them.

Servers disagree on the shape of `/v1/models`: OpenAI, vLLM and LM Studio answer `data: [{id}]`, llama.cpp adds
`models: [{name, model}]`, some proxies answer only `models`. We take the union of both lists, in order.

Which APIs a server speaks beyond LEGACY_APIS no listing says, so each path is probed with an empty JSON body: a
server without the endpoint answers 404 (405, 501), one with it refuses the body (400, 422) or answers. Some
servers log each refused probe as an error, so the agent keeps the answers (`Probes`) and probes again only when
they may be stale.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import ssl
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Protocol

import aiohttp
import httpx

from agent import protocol

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 600.0
LISTING_TIMEOUT = 10.0
PROBE_TIMEOUT = 5.0
# The longest the agent trusts a probe while the upstream stays up and keeps its models (see Probes).
PROBE_SECONDS = 600.0
# "No such endpoint"; any other answer (400 for the empty body, 401, 422, even 500) means the path exists.
NOT_SERVED = (404, 405, 501)
JSON = "application/json"
# What the hub may pass on to the client; everything else (server names, cookies, lengths) stays here.
FORWARDED_HEADERS = ("content-type", "retry-after")
_PATH = re.compile(r"^/v1/[A-Za-z0-9_\-./]+$")


def make_client(verify: ssl.SSLContext | bool = True) -> httpx.AsyncClient:
    # Concurrency is bounded by the agent's capacity, so the pool needs no limit of its own.
    return httpx.AsyncClient(
        verify=verify,
        timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
    )


class Clients:
    """The connections that forward requests: one aiohttp session, opened on first use.

    Discovery uses httpx (`make_client`); forwarding is the agent's hot path, and httpx's HTTP/1.1 parser (h11,
    pure Python) and pool bookkeeping cost more CPU per request than everything else the agent does. aiohttp parses
    HTTP in C and keeps its pool cheap however many requests are in flight.
    """

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                # Concurrency is bounded by the agent's capacity, so the pool needs no limit of its own.
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT),
                cookie_jar=aiohttp.DummyCookieJar(),  # nothing from an upstream is kept or sent back
            )
        return self._session

    async def __aenter__(self) -> Clients:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _headers(key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"} if key else {}


def model_ids(listing: object) -> list[str]:
    """Model names from a `/v1/models` answer, `data` first, then `models`, without duplicates."""
    if not isinstance(listing, dict):
        return []
    found: list[str] = []
    for key in ("data", "models"):
        entries = listing.get(key)
        if isinstance(entries, list):
            found.extend(name for entry in entries if (name := _entry_name(entry)))
    return list(dict.fromkeys(found))


def _entry_name(entry: object) -> str | None:
    if isinstance(entry, str):
        return entry.strip() or None
    if isinstance(entry, dict):
        # `id`/`model` is what a request names; `name` is sometimes only a display name, so it comes last.
        for key in ("id", "model", "name"):
            value = entry.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
    return None


@dataclass(frozen=True)
class Listing:
    """What one upstream said about its models; `problem` explains in plain words why it is not usable."""

    upstream: str
    models: tuple[str, ...] = ()
    problem: str | None = None
    apis: tuple[str, ...] = protocol.LEGACY_APIS


async def list_models(client: httpx.AsyncClient, upstream: str, key: str | None) -> Listing:
    url = f"{upstream}/v1/models"
    try:
        response = await client.get(url, headers=_headers(key), timeout=LISTING_TIMEOUT)
    except httpx.TimeoutException:
        return Listing(upstream, problem=f"did not answer {url} within {LISTING_TIMEOUT:g} s")
    except httpx.HTTPError:
        return Listing(upstream, problem="is not reachable: is the model server running and listening there?")
    if response.status_code in (401, 403):
        if key:
            return Listing(
                upstream, problem=f"rejected the API key (HTTP {response.status_code}): check --upstream-key"
            )
        return Listing(upstream, problem="needs an API key: pass --upstream-key or set GPUCLUB_UPSTREAM_KEY")
    if response.status_code == 404:
        return Listing(upstream, problem="has no /v1/models (HTTP 404): is it an OpenAI-compatible server?")
    if response.status_code != 200:
        return Listing(upstream, problem=f"answered /v1/models with HTTP {response.status_code}")
    try:
        payload: Any = response.json()
    except ValueError:
        return Listing(upstream, problem="answered /v1/models with something that is not JSON")
    models = tuple(model_ids(payload))
    if not models:
        return Listing(upstream, problem="serves no models yet: load or pull a model in the server first")
    return Listing(upstream, models)


async def serves(client: httpx.AsyncClient, upstream: str, key: str | None, api: str) -> bool:
    """Whether the upstream has `/v1/<api>`; one that cannot say within PROBE_TIMEOUT is taken not to."""
    try:
        async with (
            asyncio.timeout(PROBE_TIMEOUT),
            client.stream("POST", f"{upstream}/v1/{api}", json={}, headers=_headers(key)) as response,
        ):
            return response.status_code not in NOT_SERVED  # the body (an error about `{}`) is not worth reading
    except (httpx.HTTPError, TimeoutError):
        return False


async def probe_apis(client: httpx.AsyncClient, upstream: str, key: str | None) -> tuple[str, ...]:
    """LEGACY_APIS (always assumed, as before probing existed) and every other API the upstream answers."""
    others = [api for api in protocol.APIS if api not in protocol.LEGACY_APIS]
    found = await asyncio.gather(*(serves(client, upstream, key, api) for api in others))
    return protocol.LEGACY_APIS + tuple(api for api, served in zip(others, found, strict=True) if served)


@dataclass(frozen=True)
class _Probed:
    models: frozenset[str]
    apis: tuple[str, ...]
    at: float


class Probes:
    """The last probe of each upstream, reused while it can still be right.

    An upstream is probed again when its models change (one loaded or unloaded, perhaps by a new server version),
    after it was not usable (down, restarted, maybe upgraded), and otherwise every PROBE_SECONDS, which catches an
    upgrade that kept the same models. `now` is a monotonic clock in seconds.
    """

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._last: dict[str, _Probed] = {}

    async def apis(self, client: httpx.AsyncClient, listing: Listing, key: str | None) -> tuple[str, ...]:
        models, now = frozenset(listing.models), self._now()
        last = self._last.get(listing.upstream)
        if last is not None and last.models == models and now - last.at < PROBE_SECONDS:
            return last.apis
        apis = await probe_apis(client, listing.upstream, key)
        self._last[listing.upstream] = _Probed(models, apis, now)
        return apis

    def forget(self, upstream: str) -> None:
        self._last.pop(upstream, None)


async def _listing(
    client: httpx.AsyncClient, upstream: str, key: str | None, apis: Sequence[str] | None, probes: Probes
) -> Listing:
    listing = await list_models(client, upstream, key)
    if listing.problem:
        probes.forget(upstream)
        return listing
    return replace(listing, apis=tuple(apis) if apis is not None else await probes.apis(client, listing, key))


async def discover(
    client: httpx.AsyncClient,
    upstreams: Sequence[str],
    key: str | None,
    apis: Sequence[str] | None = None,
    probes: Probes | None = None,
) -> list[Listing]:
    """Ask every upstream at once; one that is down simply contributes no models.

    `apis`: what the owner declared every upstream serves (`--api`); None probes each upstream instead, or reuses
    what `probes` remembers of it (without `probes`, every upstream is probed).
    """
    probes = probes or Probes()
    return list(await asyncio.gather(*(_listing(client, u, key, apis, probes) for u in upstreams)))


@dataclass(frozen=True)
class Routes:
    """Which upstream serves each model: the first one, in the order given, that lists it; and the APIs it speaks."""

    table: Mapping[str, str] = field(default_factory=dict)
    speaks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # upstream → its APIs

    @classmethod
    def build(cls, listings: Iterable[Listing]) -> Routes:
        table: dict[str, str] = {}
        speaks: dict[str, tuple[str, ...]] = {}
        for listing in listings:
            for model in listing.models:
                table.setdefault(model, listing.upstream)
            speaks[listing.upstream] = listing.apis
        return cls(table, speaks)

    @property
    def models(self) -> list[str]:
        return list(self.table)

    @property
    def apis(self) -> dict[str, list[str]]:
        """{model: [api, ...]}, as the hello and models frames carry it."""
        return {model: list(self.speaks.get(up, protocol.LEGACY_APIS)) for model, up in self.table.items()}

    def upstream_for(self, model: str) -> str | None:
        return self.table.get(model)


async def discover_models(
    client: httpx.AsyncClient, upstreams: Sequence[str], key: str | None, apis: Sequence[str] | None = None
) -> Routes:
    return Routes.build(await discover(client, upstreams, key, apis))


class UpstreamFailed(Exception):
    """The upstream could not be reached or broke off; the message is plain words for the hub and its logs."""


class Sink(Protocol):
    async def start(self, status: int, headers: dict[str, str]) -> None: ...

    async def chunk(self, data: bytes) -> None: ...


def allowed_path(path: str) -> bool:
    """Only the OpenAI API: a hub cannot make the agent reach anything else on the upstream."""
    return bool(_PATH.match(path)) and ".." not in path


def requested_model(body: str) -> str | None:
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    model = payload.get("model") if isinstance(payload, dict) else None
    return model if isinstance(model, str) else None


@dataclass(frozen=True)
class Outgoing:
    """One request for an upstream, as a `request` frame describes it: the hub's bytes, unchanged."""

    path: str
    body: bytes
    model: str
    content_type: str = JSON
    headers: Mapping[str, str] = field(default_factory=dict)  # only protocol.FORWARDED_REQUEST_HEADERS


def outgoing(frame: Mapping[str, Any]) -> Outgoing:
    """The request a `request` frame asks for; raises ValueError, in words for the hub, for one not to send."""
    path, body = frame.get("path"), frame.get("body")
    if not isinstance(path, str) or not isinstance(body, str) or not allowed_path(path):
        raise ValueError("the agent forwards only POST requests to /v1/ paths with a body")
    content_type = frame.get("content_type") or JSON
    if not _header_value(content_type):
        raise ValueError("the request's content type is not a valid header value")
    encoding = frame.get("encoding")
    if encoding is None:
        raw = body.encode()
    elif encoding == "base64":
        try:
            raw = base64.b64decode(body, validate=True)
        except ValueError:  # binascii.Error, or text that is not ASCII
            raise ValueError("the request body is not valid base64") from None
    else:
        raise ValueError(f"the agent does not know the body encoding {str(encoding)[:20]!r}")
    # The hub names the model when the body is not JSON (a multipart form); the JSON body's field otherwise.
    model = frame.get("model")
    if not isinstance(model, str) or not model:
        model = requested_model(body) if encoding is None else None
    if model is None:
        raise ValueError("the request body names no model")
    return Outgoing(path, raw, model, content_type, _forwarded(frame.get("headers")))


def _header_value(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 1000 and value.isascii() and value.isprintable()


def _forwarded(headers: object) -> dict[str, str]:
    """The headers the protocol lets through; anything else the hub sent is dropped."""
    if not isinstance(headers, dict):
        return {}
    return {
        name.lower(): value
        for name, value in headers.items()
        if isinstance(name, str) and name.lower() in protocol.FORWARDED_REQUEST_HEADERS and _header_value(value)
    }


async def forward(clients: Clients, upstream: str, request: Outgoing, key: str | None, sink: Sink) -> None:
    """POST the body unchanged and pass every chunk on as it arrives; raises UpstreamFailed."""
    # identity: the bytes go to the hub untouched, so they must not be compressed on the way here (a server that
    # compresses anyway is decoded by aiohttp rather than forwarded as bytes nobody can read).
    headers = {
        **request.headers,
        "content-type": request.content_type,
        "accept-encoding": "identity",
        **_headers(key),
    }
    started = False
    try:
        url = upstream + request.path
        async with clients.session().post(url, data=request.body, headers=headers) as response:
            started = True
            await sink.start(
                response.status, {h: response.headers[h] for h in FORWARDED_HEADERS if h in response.headers}
            )
            async for data in response.content.iter_any():
                if data:
                    await sink.chunk(data)
    except TimeoutError as exc:
        if started:
            raise UpstreamFailed(f"the model server stopped sending for {READ_TIMEOUT:g} s") from exc
        raise UpstreamFailed("the model server did not answer in time") from exc
    except aiohttp.ClientError as exc:
        if started:
            raise UpstreamFailed(f"the model server broke off the response ({type(exc).__name__})") from exc
        raise UpstreamFailed(f"the model server could not be reached ({type(exc).__name__})") from exc
