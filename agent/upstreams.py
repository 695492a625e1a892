"""The model servers next to the agent: which models each one serves, and forwarding one request to one of them.

Servers disagree on the shape of `/v1/models`: OpenAI, vLLM and LM Studio answer `data: [{id}]`, llama.cpp adds
`models: [{name, model}]`, some proxies answer only `models`. We take the union of both lists, in order.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

import aiohttp
import httpx

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 600.0
LISTING_TIMEOUT = 10.0
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


async def discover(client: httpx.AsyncClient, upstreams: Sequence[str], key: str | None) -> list[Listing]:
    """Ask every upstream at once; one that is down simply contributes no models."""
    return list(await asyncio.gather(*(list_models(client, u, key) for u in upstreams)))


@dataclass(frozen=True)
class Routes:
    """Which upstream serves each model: the first one, in the order given, that lists it."""

    table: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, listings: Iterable[Listing]) -> Routes:
        table: dict[str, str] = {}
        for listing in listings:
            for model in listing.models:
                table.setdefault(model, listing.upstream)
        return cls(table)

    @property
    def models(self) -> list[str]:
        return list(self.table)

    def upstream_for(self, model: str) -> str | None:
        return self.table.get(model)


async def discover_models(client: httpx.AsyncClient, upstreams: Sequence[str], key: str | None) -> Routes:
    return Routes.build(await discover(client, upstreams, key))


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


async def forward(clients: Clients, upstream: str, path: str, body: str, key: str | None, sink: Sink) -> None:
    """POST the body unchanged and pass every chunk on as it arrives; raises UpstreamFailed."""
    # identity: the bytes go to the hub untouched, so they must not be compressed on the way here (a server that
    # compresses anyway is decoded by aiohttp rather than forwarded as bytes nobody can read).
    headers = {"content-type": "application/json", "accept-encoding": "identity", **_headers(key)}
    started = False
    try:
        async with clients.session().post(upstream + path, data=body.encode(), headers=headers) as response:
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
