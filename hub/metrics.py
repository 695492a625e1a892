"""Prometheus metrics, in a registry owned by the app (never the library's global one)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(
        self, agents_online: Callable[[], int], queued: Callable[[], int], in_flight: Callable[[], int]
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gpuclub_requests",
            "Requests proxied to agents, by model and HTTP status.",
            ["model", "status"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "gpuclub_tokens",
            "Tokens processed, by model and kind (prompt/completion).",
            ["model", "kind"],
            registry=self.registry,
        )
        self.ttft = Histogram(
            "gpuclub_time_to_first_token_seconds",
            "From request arrival to the first byte from the GPU.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.duration = Histogram(
            "gpuclub_request_duration_seconds",
            "Whole request duration.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        busy = Gauge("gpuclub_in_flight", "Requests being served by agents right now.", registry=self.registry)
        busy.set_function(lambda: float(in_flight()))
        online = Gauge("gpuclub_agents_online", "Agents connected to this hub process.", registry=self.registry)
        online.set_function(lambda: float(agents_online()))
        waiting = Gauge("gpuclub_queued", "Requests waiting for a free GPU.", registry=self.registry)
        waiting.set_function(lambda: float(queued()))

    def observe(
        self, *, model: str, status: int, prompt: int, completion: int, ttft: float | None, seconds: float
    ) -> None:
        """Count one finished request; numbers that make no sense count as zero rather than raise."""
        self.requests.labels(model, str(status)).inc()
        self.tokens.labels(model, "prompt").inc(_count(prompt))
        self.tokens.labels(model, "completion").inc(_count(completion))
        if ttft is not None:
            self.ttft.labels(model).observe(max(0.0, ttft))
        self.duration.labels(model).observe(max(0.0, seconds))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
