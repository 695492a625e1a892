"""The load generator: one process, one event loop (uvloop), bounded in requests and in time.

    python -m bench.load SPEC_JSON      → prints one JSON object with the results of every phase

It runs in its own process so it never shares an event loop with what it measures, and reports its own CPU use
per phase (`gen_cpu`, in cores) so a reader can tell whether the generator was the limit.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop

from bench.client import Answer, Connection, request_bytes

PROMPT = [{"role": "user", "content": "Say hello to the benchmark."}]
# What each API streamed here is asked: the prompt's field, and the field that bounds the answer.
FIELDS = {"chat/completions": ("messages", "max_tokens"), "responses": ("input", "max_output_tokens")}
Result = dict[str, Any]


def percentiles(samples: Sequence[float]) -> dict[str, float | int]:
    """Nearest-rank p50/p95/p99 (and mean, max) of seconds, in milliseconds."""
    if not samples:
        return {"n": 0}
    ordered = sorted(samples)

    def rank(p: float) -> float:
        return round(ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] * 1000, 3)

    mean = round(sum(ordered) / len(ordered) * 1000, 3)
    return {"n": len(ordered), "p50": rank(50), "p95": rank(95), "p99": rank(99), "mean": mean, "max": rank(100)}


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process and all its descendants, in MiB; (0, 0) if it is gone."""
    current = peak = 0
    for each in [pid, *_descendants(pid)]:
        try:
            status = Path(f"/proc/{each}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        current += int(fields.get("VmRSS", "0 kB").split()[0])
        peak += int(fields.get("VmHWM", "0 kB").split()[0])
    return round(current / 1024, 1), round(peak / 1024, 1)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by a process and all its descendants."""
    ticks = 0
    for each in [pid, *_descendants(pid)]:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat(5))
    return ticks / os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
        for child in children:
            found += [child, *_descendants(child)]
    return found


@dataclass
class Failures:
    """Why requests failed, counted by reason, with the first answer of each kind as an example."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, reason: str, example: bytes | str = b"") -> None:
        self.counts[reason] += 1
        if reason not in self.examples and example:
            text = example.decode(errors="replace") if isinstance(example, bytes) else example
            self.examples[reason] = text[:300]

    def answer(self, answer: Answer) -> None:
        self.add(f"HTTP {answer.status}", bytes(answer.body))

    def error(self, exc: BaseException) -> None:
        self.add(type(exc).__name__, str(exc))

    def result(self) -> Result:
        return {"errors": sum(self.counts.values()), "failures": dict(self.counts), "failure_examples": self.examples}


@dataclass
class Target:
    host: str
    port: int
    key: str | None
    timeout: float

    def request(self, model: str, *, stream: bool, api: str = "chat/completions") -> bytes:
        prompt, bound = FIELDS[api]
        body: dict[str, Any] = {"model": model, prompt: PROMPT, bound: 8}
        if stream:
            # Room for every token the upstream streams (10, or 20 for the slow model): a server that sent more
            # than max_tokens allows would be over-reporting, and the hub pauses agents that keep doing that.
            body.update({"stream": True, bound: 32})
        return request_bytes(self.host, self.port, f"/v1/{api}", json.dumps(body).encode(), self.key)

    async def connect(self) -> Connection:
        return await asyncio.wait_for(Connection.open(self.host, self.port), self.timeout)

    async def send(self, connection: Connection, request: bytes, **options: Any) -> Answer:
        return await asyncio.wait_for(connection.send(request, **options), self.timeout)

    async def ready(self, connection: Connection) -> Connection:
        """The same connection, or a new one if the server closed it while it was idle (keep-alive timeout)."""
        return connection if not connection.closed else await self.connect()


async def measured(work: Callable[[], Awaitable[Result]], watch: dict[str, int]) -> Result:
    """Run a phase; add its wall time, the generator's own CPU use (1.0 = one whole core) and the CPU time each
    watched process spent per completed request (steadier than req/s on a machine that others share)."""
    before = {name: cpu_seconds(pid) for name, pid in watch.items()}
    cpu, wall = time.process_time(), time.perf_counter()
    result = await work()
    elapsed = time.perf_counter() - wall
    counted: dict[str, Any] = result.get("latency_ms") or result.get("ttft_ms") or {}
    done = max(int(counted.get("n", 0)), 1)
    spent = {name: round((cpu_seconds(pid) - before[name]) * 1000 / done, 3) for name, pid in watch.items()}
    return {
        **result,
        "seconds": round(elapsed, 3),
        "gen_cpu": round((time.process_time() - cpu) / elapsed, 2),
        "cpu_ms_per_request": spent,
    }


async def sequential(target: Target, count: int) -> Result:
    request = target.request("bench", stream=False)
    connection = await target.connect()
    latencies: list[float] = []
    failures = Failures()
    for _ in range(count):
        connection = await target.ready(connection)
        start = time.perf_counter()
        try:
            answer = await target.send(connection, request)
        except (ConnectionError, TimeoutError) as exc:
            failures.error(exc)
            connection.close()
            connection = await target.connect()
            continue
        if answer.status == 200:
            latencies.append(time.perf_counter() - start)
        else:
            failures.answer(answer)
    connection.close()
    return {"latency_ms": percentiles(latencies), **failures.result()}


async def concurrent(target: Target, concurrency: int, duration: float, warmup: float) -> Result:
    """`concurrency` clients, each on its own connection, sending back to back; warm-up first, then measure."""
    request = target.request("bench", stream=False)
    connections = list(await asyncio.gather(*(target.connect() for _ in range(concurrency))))
    latencies: list[float] = []
    failures = Failures()

    async def client(slot: int, until: float, record: bool) -> None:
        while time.perf_counter() < until:
            connections[slot] = await target.ready(connections[slot])
            start = time.perf_counter()
            try:
                answer = await target.send(connections[slot], request)
            except (ConnectionError, TimeoutError) as exc:
                if record:
                    failures.error(exc)
                connections[slot].close()
                connections[slot] = await target.connect()
                continue
            if answer.status != 200:
                if record:
                    failures.answer(answer)
            elif record:
                latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(client(slot, time.perf_counter() + warmup, False) for slot in range(concurrency)))
    start = time.perf_counter()
    await asyncio.gather(*(client(slot, start + duration, True) for slot in range(concurrency)))
    elapsed = time.perf_counter() - start
    for connection in connections:
        connection.close()
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "rps": round(len(latencies) / elapsed, 1),
        "latency_ms": percentiles(latencies),
        **failures.result(),
    }


async def streaming(target: Target, count: int, chunks: int, api: str = "chat/completions") -> Result:
    """Streams one after another: time to first token, and the gaps between tokens as the client sees them.

    For an API a path may not serve (anything but chat completions), one stream goes first and is not counted:
    if it fails, the phase says `served: false` and why, rather than fail `count` times."""
    request = target.request("bench", stream=True, api=api)
    connection = await target.connect()
    ttft: list[float] = []
    gaps: list[float] = []
    failures = Failures()

    async def one() -> list[float] | None:
        """The times of the stream's tokens from when it was sent, or None if it failed."""
        nonlocal connection
        connection = await target.ready(connection)
        start = time.perf_counter()
        try:
            answer = await target.send(connection, request, stream=True)
        except (ConnectionError, TimeoutError) as exc:
            failures.error(exc)
            connection.close()
            connection = await target.connect()
            return None
        if answer.status != 200:
            failures.answer(answer)
            return None
        if answer.error_event or len(answer.tokens) != chunks or not answer.done:
            failures.add("stream ended early or with an error event", answer.last_event)
            return None
        return [t - start for t in answer.tokens]

    served = api == "chat/completions" or await one() is not None
    for _ in range(count if served else 0):
        if (tokens := await one()) is not None:
            ttft.append(tokens[0])
            gaps += [b - a for a, b in itertools.pairwise(tokens)]
    connection.close()
    return {"served": served, "ttft_ms": percentiles(ttft), "gap_ms": percentiles(gaps), **failures.result()}


async def hold(target: Target, count: int, chunks: int, watch: dict[str, int]) -> Result:
    """Open `count` slow streams at once and watch the proxy's memory while they are all open.

    `target.timeout` bounds each stream: a proxy that cannot keep up fails streams rather than stall the run."""
    request = target.request("bench-slow", stream=True)
    baseline = {name: rss_mb(pid)[0] for name, pid in watch.items()}
    peak = dict.fromkeys(watch, 0.0)
    opening = asyncio.Semaphore(100)  # do not flood the listen backlog with a thousand SYNs at once
    state = {"open": 0, "max_open": 0}
    failures = Failures()
    all_open = asyncio.Event()
    start = time.perf_counter()
    opened_at: list[float] = []

    def first_token() -> None:
        state["open"] += 1
        state["max_open"] = max(state["max_open"], state["open"])
        if state["open"] == count:
            opened_at.append(time.perf_counter() - start)
            all_open.set()

    async def one() -> None:
        connection: Connection | None = None
        try:
            async with opening:
                connection = await target.connect()
            answer = await target.send(connection, request, stream=True, on_token=first_token)
            state["open"] -= bool(answer.tokens)
            if answer.status != 200:
                failures.answer(answer)
            elif answer.error_event or len(answer.tokens) != chunks or not answer.done:
                failures.add("stream ended early or with an error event")
        except (ConnectionError, TimeoutError, OSError) as exc:
            failures.error(exc)
        finally:
            if connection is not None:
                connection.close()

    async def sample() -> None:
        while True:
            for name, pid in watch.items():
                peak[name] = max(peak[name], rss_mb(pid)[0])
            await asyncio.sleep(0.1)

    sampler = asyncio.create_task(sample())
    await asyncio.gather(*(one() for _ in range(count)))
    sampler.cancel()
    return {
        "streams": count,
        "max_open_at_once": state["max_open"],
        "all_open_after_s": round(opened_at[0], 2) if opened_at else None,
        **failures.result(),
        "rss_mb_before": baseline,
        "rss_mb_peak": peak,
        "rss_mb_high_water": {name: rss_mb(pid)[1] for name, pid in watch.items()},
    }


async def run(spec: dict[str, Any]) -> Result:
    target = Target(spec["host"], spec["port"], spec.get("key"), 60.0)
    watch: dict[str, int] = spec.get("watch") or {}
    results: Result = {}
    await sequential(target, spec["warmup"])  # first requests pay for lazy imports and connection set-up
    results["sequential"] = await measured(lambda: sequential(target, spec["sequential"]), watch)
    for level in spec["concurrency"]:

        def at(level: int = level) -> Awaitable[Result]:
            return concurrent(target, level, spec["duration"], spec["warmup_seconds"])

        results[f"c{level}"] = await measured(at, watch)
    results["streaming"] = await measured(lambda: streaming(target, spec["streams"], spec["chunks"]), watch)
    results["streaming_responses"] = await measured(
        lambda: streaming(target, spec["streams"], spec["chunks"], "responses"), watch
    )
    if spec.get("hold") and watch:
        held = spec["hold"]
        patient = Target(target.host, target.port, target.key, held["chunks"] * held["gap"] + 20)
        results["hold"] = await measured(lambda: hold(patient, held["streams"], held["chunks"], watch), {})
    return results


def main(argv: Sequence[str] | None = None) -> None:
    spec = json.loads((argv if argv is not None else sys.argv[1:])[0])
    print(json.dumps(uvloop.run(run(spec))), flush=True)


if __name__ == "__main__":
    main()
