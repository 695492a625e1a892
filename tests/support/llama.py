"""A real llama.cpp `llama-server` on a loopback port, serving the tiny model (tests/support/tiny_gguf.py).

The binary comes from tests/support/llama_build.py (`make test-llama` builds it). Prompt caching is off, so a
request sent twice is computed the same way twice: the tests compare text from the server with text through the hub.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support import llama_build, tiny_gguf
from tests.support.processes import Running, free_port, run

MODEL = tiny_gguf.MODEL_NAME
RERANKER = "tiny-rerank"  # the same file served with `--reranking`: a model that ranks documents, and also chats
LOADING_TIMEOUT = 60.0


@dataclass(frozen=True)
class LlamaServer:
    url: str  # without /v1, as a GPU owner would pass it to `gpuclub-agent --upstream`
    model: str
    process: Running


def built() -> Path | None:
    """The cached `llama-server`, or None while nobody has built it on this machine."""
    binary = llama_build.binary()
    return binary if binary.exists() else None


@contextmanager
def llama_server(
    binary: Path, model: Path, *, name: str = MODEL, extra: Sequence[str] = (), parallel: int = 2, context: int = 2048
) -> Iterator[LlamaServer]:
    """Start `llama-server` serving `model` as `name`, wait until /health says ok, and stop it afterwards."""
    port = free_port()
    command = [
        str(binary),
        *("--model", str(model), "--alias", name),
        *("--host", "127.0.0.1", "--port", str(port)),
        *("--ctx-size", str(context), "--parallel", str(parallel), "--threads", "1"),
        *("--jinja", "--no-webui", "--no-cache-prompt", "--no-warmup"),
        *extra,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMA_")}
    url = f"http://127.0.0.1:{port}"
    with run(command, env=env) as process:
        process.wait_for(r"listening on", timeout=LOADING_TIMEOUT)
        health = httpx.get(f"{url}/health", timeout=10)
        assert health.status_code == 200 and health.json() == {"status": "ok"}, health.text
        yield LlamaServer(url, name, process)
