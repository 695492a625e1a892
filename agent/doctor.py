"""`gpuclub-agent doctor`: check every upstream and the hub, and say what is wrong in plain words."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from agent import __version__, gpu, protocol
from agent.config import Config
from agent.upstreams import Routes, discover, make_client

OK, BAD, INFO = "✓", "✗", "·"
HUB_TIMEOUT = 10.0


async def run(config: Config, say: Callable[[str], None]) -> int:
    """Print one line per finding; 0 when everything works, 1 otherwise."""
    async with make_client() as client:
        good, routes = await _check_upstreams(config, client, say)
        _report_gpus(say)
        if config.token_travels_in_clear:
            say(f"{INFO} the hub address uses http://, so the agent token travels unencrypted: prefer https://")
        hub_up = await _check_hub(config, client, say)
        token_ok = hub_up and await _check_token(config, routes, say)
    return 0 if good and token_ok else 1


async def _check_upstreams(
    config: Config, client: httpx.AsyncClient, say: Callable[[str], None]
) -> tuple[bool, Routes]:
    good = True
    seen: dict[str, None] = {}
    how = "as declared with --api" if config.apis is not None else "found by probing each path; --api declares them"
    listings = await discover(client, config.upstreams, config.upstream_key, config.apis)
    for listing in listings:
        if listing.problem:
            say(f"{BAD} upstream {listing.upstream} {listing.problem}")
            good = False
            continue
        say(f"{OK} upstream {listing.upstream} serves {len(listing.models)} model(s): {', '.join(listing.models)}")
        say(f"{INFO} upstream {listing.upstream} speaks {', '.join(listing.apis)} ({how})")
        if shadowed := [m for m in listing.models if m in seen]:
            say(f"{INFO} requests for {', '.join(shadowed)} go to the upstream listed first")
        seen.update(dict.fromkeys(listing.models))
    return good, Routes.build(listings)


def _report_gpus(say: Callable[[str], None]) -> None:
    gpus = gpu.detect()
    if not gpus:
        say(f"{INFO} no NVIDIA GPU detected (nvidia-smi is missing or failed); the agent works without it")
    for card in gpus:
        memory = f" ({card['memory_mb']} MB)" if card["memory_mb"] is not None else ""
        say(f"{OK} GPU {card['name']}{memory}")


async def _check_hub(config: Config, client: httpx.AsyncClient, say: Callable[[str], None]) -> bool:
    try:
        response = await client.get(f"{config.hub}/healthz", timeout=HUB_TIMEOUT)
    except httpx.TimeoutException:
        say(f"{BAD} the hub at {config.hub} did not answer within {HUB_TIMEOUT:g} s: check --hub and your network")
        return False
    except httpx.HTTPError:
        say(f"{BAD} the hub at {config.hub} is not reachable: check --hub and that the hub is running")
        return False
    if response.status_code != 200:
        say(
            f"{BAD} the hub at {config.hub} answered /healthz with HTTP {response.status_code}: "
            "is that the address of your club's gpuclub hub?"
        )
        return False
    say(f"{OK} the hub at {config.hub} is up")
    return True


async def _check_token(config: Config, routes: Routes, say: Callable[[str], None]) -> bool:
    """Open the tunnel the way the agent does, with capacity 0, so the hub checks the models but sends no work."""
    rejected = f"{BAD} the hub rejected the agent token: create a new one on the My GPUs page"
    refusal = ""
    try:
        async with (
            asyncio.timeout(HUB_TIMEOUT),
            connect(
                config.tunnel_url,
                additional_headers={"Authorization": f"Bearer {config.token}"},
                user_agent_header=f"gpuclub-agent/{__version__} (doctor)",
                max_size=protocol.MAX_FRAME,
                ping_interval=None,
            ) as ws,
        ):
            hello = protocol.text(
                "hello",
                version=__version__,
                name=config.name,
                capacity=0,
                models=routes.models,
                gpus=[],
                window=True,
                apis=routes.apis,
            )
            await ws.send(hello)
            while True:
                frame = await ws.recv()
                message = protocol.parse(frame) if isinstance(frame, str) else {"type": ""}
                if message["type"] == "welcome":
                    say(f"{OK} the hub accepted the agent token (this agent is {message.get('name', config.name)!r})")
                    await ws.close(1000, "doctor done")
                    if isinstance(notice := message.get("notice"), str) and notice:
                        say(f"{BAD} {notice}")
                        return False
                    return True
                if message["type"] == "error":
                    # The hub explains, then closes; the close code says whether the token itself is the problem.
                    refusal = str(message.get("message"))
    except TimeoutError:
        if refusal:
            say(f"{BAD} the hub refused the agent: {refusal}")
        else:
            say(f"{BAD} the hub did not welcome the agent within {HUB_TIMEOUT:g} s")
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status in (401, 403):
            say(rejected)
        else:
            say(f"{BAD} the hub answered HTTP {status} at {protocol.PATH}: is the hub up to date?")
    except ConnectionClosed as exc:
        if exc.rcvd is not None and exc.rcvd.code == protocol.CLOSE_UNAUTHORIZED:
            say(rejected)
        elif refusal:
            say(f"{BAD} the hub refused the agent: {refusal}")
        else:
            say(f"{BAD} the hub closed the tunnel before welcoming the agent ({exc})")
    except ValueError:
        say(f"{BAD} the hub answered the agent's hello with something that is not a gpuclub message")
    except (OSError, WebSocketException) as exc:
        say(f"{BAD} could not open the tunnel to {config.tunnel_url}: {exc}")
    return False
