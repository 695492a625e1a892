"""GPU health as `nvidia-smi` reports it; without the tool the agent reports no GPUs rather than guessing."""

from __future__ import annotations

import shutil
import subprocess
from typing import TypedDict

QUERY = ["--query-gpu=name,memory.total", "--format=csv,noheader,nounits"]


class Gpu(TypedDict):
    name: str
    memory_mb: int | None


def parse(output: str) -> list[Gpu]:
    gpus: list[Gpu] = []
    for line in output.splitlines():
        if not line.strip():
            continue
        name, _, memory = line.rpartition(",")
        if not name.strip():
            continue
        memory = memory.strip()
        gpus.append(Gpu(name=name.strip(), memory_mb=int(memory) if memory.isdigit() else None))
    return gpus


def detect() -> list[Gpu]:
    """The GPUs `nvidia-smi` lists; empty when it is missing or fails (e.g. no driver loaded)."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return []
    try:
        result = subprocess.run(  # noqa: S603 - a fixed binary found on PATH with fixed arguments
            [binary, *QUERY], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse(result.stdout) if result.returncode == 0 else []
