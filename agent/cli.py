"""`gpuclub-agent`: share the model server on this machine with the club's hub.

Every flag can also come from the environment (flags win). A missing or bad value is one line on stderr and
exit status 2; the agent token is never printed or logged.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Coroutine, Sequence
from typing import Any, NoReturn

from agent import __version__, doctor, protocol, runner
from agent.config import Config, ConfigError, build
from agent.upstreams import PROBE_SECONDS

USAGE_ERROR = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"gpuclub-agent: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gpuclub-agent",
        description="Connects the OpenAI-compatible server on this machine to your club's gpuclub hub.",
        epilog="Run `gpuclub-agent doctor` with the same flags to check the set-up.",
    )
    parser.add_argument("command", nargs="?", choices=["run", "doctor"], default="run", help="default: run")
    parser.add_argument("--hub", help="the hub's address, e.g. https://hub.example.org [GPUCLUB_HUB]")
    parser.add_argument("--token", help="the agent token from the My GPUs page [GPUCLUB_AGENT_TOKEN]")
    parser.add_argument(
        "--upstream",
        action="append",
        help="your model server, e.g. http://127.0.0.1:8000; repeat for several [GPUCLUB_UPSTREAM, comma-separated]",
    )
    parser.add_argument("--upstream-key", help="API key your model server expects, if any [GPUCLUB_UPSTREAM_KEY]")
    parser.add_argument("--max-concurrency", help="requests served at once (default 4) [GPUCLUB_MAX_CONCURRENCY]")
    parser.add_argument("--name", help="how this machine appears on the hub (default: hostname) [GPUCLUB_AGENT_NAME]")
    parser.add_argument(
        "--refresh",
        help="seconds between model checks (default 30); APIs are probed again only when the models change, when "
        f"the server answers again after being unreachable, and every {PROBE_SECONDS / 60:g} minutes "
        "[GPUCLUB_MODEL_REFRESH]",
    )
    parser.add_argument(
        "--api",
        action="append",
        metavar="NAME",
        help="an API your model server serves besides chat/completions, completions and embeddings: "
        f"one of {', '.join(a for a in protocol.APIS if a not in protocol.LEGACY_APIS)}; repeat for several. "
        "Without it the agent probes each upstream for them [GPUCLUB_APIS, comma-separated]",
    )
    parser.add_argument(
        "--journal",
        metavar="PATH",
        help="where the agent keeps the hub's bills until the hub confirms them (default: a file under "
        "$XDG_STATE_HOME/gpuclub-agent, i.e. ~/.local/state/gpuclub-agent) [GPUCLUB_JOURNAL]",
    )
    parser.add_argument("--version", action="version", version=f"gpuclub-agent {__version__}")
    return parser


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every URL it calls at INFO; the agent logs what matters itself.
    for noisy in ("httpx", "httpcore", "websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config: Config = build(
            env=os.environ,
            hub=args.hub,
            token=args.token,
            upstreams=args.upstream,
            upstream_key=args.upstream_key,
            max_concurrency=args.max_concurrency,
            name=args.name,
            refresh=args.refresh,
            apis=args.api,
            journal=args.journal,
        )
    except ConfigError as exc:
        print(f"gpuclub-agent: {exc}", file=sys.stderr)
        return USAGE_ERROR
    if args.command == "doctor":
        return asyncio.run(doctor.run(config, lambda line: print(line, flush=True)))
    _configure_logging()
    return _run(runner.serve(config))


def _run(main: Coroutine[Any, Any, int]) -> int:
    """uvloop where it is installed (the hub's dependencies bring it): about a quarter less CPU per request."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


if __name__ == "__main__":
    sys.exit(main())
