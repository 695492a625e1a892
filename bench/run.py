"""`make bench` / `python -m bench`: path A (straight to the upstream), B (hub + agent) and C (LiteLLM), one run.

    python -m bench [--smoke] [--out FILE] [--paths ABC] [--no-install] [--no-ledger] [--logs DIR]

The full run takes under five minutes and writes bench/results.json; `--smoke` runs the same harness with tiny
numbers (and skips LiteLLM unless its venv is already there) so the test suite keeps it working.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report, stack

RESULTS = stack.ROOT / "bench" / "results.json"


@dataclass(frozen=True)
class Sizes:
    warmup: int  # sequential requests before measuring (lazy imports, connection set-up)
    sequential: int
    concurrency: tuple[int, ...]
    duration: float  # seconds per concurrency level, after warmup_seconds at that level
    warmup_seconds: float
    streams: int
    chunks: int
    chunk_gap: float
    hold_streams: int
    slow_chunks: int
    slow_gap: float


FULL = Sizes(100, 1000, (32, 128), 10.0, 2.0, 100, 10, 0.005, 1000, 20, 1.0)
SMOKE = Sizes(5, 20, (32, 128), 0.5, 0.2, 5, 3, 0.002, 20, 3, 0.3)
# The agent must take all held streams at once (the hub caps an agent's capacity at 1024).
AGENT_CAPACITY = 1100


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**30
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def raise_open_files(wanted: int = 8192) -> None:
    """A thousand streams need a thousand sockets in every process on the path; children inherit this."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def load(server: stack.Server, key: str | None, sizes: Sizes, watch: dict[str, int]) -> dict[str, Any]:
    """Run the load generator in its own process against one path."""
    spec: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": int(server.url.rsplit(":", 1)[1]),
        "key": key,
        "warmup": sizes.warmup,
        "sequential": sizes.sequential,
        "concurrency": list(sizes.concurrency),
        "duration": sizes.duration,
        "warmup_seconds": sizes.warmup_seconds,
        "streams": sizes.streams,
        "chunks": sizes.chunks,
        "watch": watch,
        "hold": {"streams": sizes.hold_streams, "chunks": sizes.slow_chunks, "gap": sizes.slow_gap},
    }
    # A generous bound (a proxy at 0.2 s a request would still finish), so a wedged run ends on its own.
    phases = len(sizes.concurrency) * (sizes.duration + sizes.warmup_seconds + 60)
    requests = sizes.warmup + sizes.sequential + 2 * sizes.streams + 1  # streams for chat, for Responses, a probe
    budget = 120 + 0.2 * requests + phases + 2 * sizes.slow_chunks * sizes.slow_gap
    done = subprocess.run(  # noqa: S603 - our own command line, no shell
        [sys.executable, "-m", "bench.load", json.dumps(spec)],
        cwd=stack.ROOT,
        capture_output=True,
        text=True,
        timeout=budget,
        check=False,
    )
    if done.returncode != 0:
        raise stack.StackError(f"the load generator failed against {server.name}:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def run(sizes: Sizes, paths: str, workdir: Path, log: Any, *, ledger: bool) -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {}
    versions: dict[str, str] = {}
    with stack.Stack(workdir) as running:
        upstream = stack.upstream(
            running,
            chunks=sizes.chunks,
            chunk_gap=sizes.chunk_gap,
            slow_chunks=sizes.slow_chunks,
            slow_gap=sizes.slow_gap,
        )
        if "A" in paths:
            log("path A: straight to the upstream")
            results["A"] = load(upstream, None, sizes, {})
        if "B" in paths:
            log("path B: starting the hub and one agent")
            hub = stack.hub(running, ledger=ledger)
            agent = stack.agent(running, hub, upstream, capacity=AGENT_CAPACITY)
            log("path B: through the hub and the agent")
            results["B"] = load(hub.server, hub.key, sizes, {"hub": hub.server.pid, "agent": agent.pid})
            running.stop(agent)
            running.stop(hub.server)  # a clean stop finishes the settlements still in the background
            results["B"]["ledger"] = {"on": hub.ledger, "check": stack.ledger_check(hub)}
        if "C" in paths:
            log("path C: starting LiteLLM's proxy")
            litellm = stack.litellm(running, upstream)
            versions["litellm"] = stack.LITELLM_VERSION
            log("path C: through LiteLLM")
            results["C"] = load(litellm, stack.MASTER_KEY, sizes, {"litellm": litellm.pid})
    return {"paths": results, "versions": versions}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny numbers, a few seconds; skips C without its venv")
    parser.add_argument("--out", type=Path, help=f"where the JSON goes (default {RESULTS}; none with --smoke)")
    parser.add_argument("--paths", default="ABC", help="which paths to run, e.g. AB (default ABC)")
    parser.add_argument("--no-install", action="store_true", help="skip path C rather than install LiteLLM")
    parser.add_argument("--no-ledger", action="store_true", help="path B without prices, credits and quotas")
    parser.add_argument("--logs", type=Path, help="keep the logs of the hub, agent, upstream and LiteLLM here")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    paths = "".join(p for p in "ABC" if p in args.paths.upper())
    out: Path | None = args.out or (None if args.smoke else RESULTS)

    def log(message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    installed: float | None = None
    if "C" in paths and not stack.litellm_installed():
        if args.smoke or args.no_install:
            log("path C skipped: LiteLLM is not installed in bench/.venv-litellm (`make bench` installs it)")
            paths = paths.replace("C", "")
        else:
            log(f"installing litellm[proxy]=={stack.LITELLM_VERSION} into {stack.LITELLM_VENV} (once)")
            installed = round(stack.install_litellm(), 1)
    raise_open_files()
    # A stop signal unwinds normally, so every process the run started is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gpuclub-bench-") as workdir:
        try:
            outcome = run(sizes, paths, Path(workdir), log, ledger=not args.no_ledger)
        finally:
            if args.logs is not None:
                args.logs.mkdir(parents=True, exist_ok=True)
                for kept in Path(workdir).glob("*.log"):
                    shutil.copy(kept, args.logs / kept.name)
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "smoke": args.smoke,
        "sizes": asdict(sizes),
        "seconds": round(time.monotonic() - started, 1),
        "litellm_install_seconds": installed,
        "versions": outcome["versions"],
    }
    document = report.document(meta, outcome["paths"])
    print(report.table(document), flush=True)
    if out is not None:
        out.write_text(json.dumps(document, indent=2) + "\n")
        log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
