"""Build llama.cpp's `llama-server` once per machine, from the llama.cpp that the `llama-cpp-python` sdist vendors.

    python -m tests.support.llama_build      # prints the binary's path; builds it first if the cache lacks it

The binary lands in a cache outside the repository, keyed by version
(`$GPUCLUB_CACHE` or `~/.cache/gpuclub`, then `llama-server/<version>/llama-server`), so CI builds it once.
Nothing but the sdist comes from the network: the web UI is not built and nothing is fetched at build time.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import IO

VERSION = "0.3.36"
BUILD_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
    "-DGGML_OPENMP=OFF",
)


def cache_dir() -> Path:
    root = os.environ.get("GPUCLUB_CACHE") or str(Path.home() / ".cache" / "gpuclub")
    return Path(root) / "llama-server" / VERSION


def binary() -> Path:
    return cache_dir() / "llama-server"


def ensure_built(log: Path | None = None) -> Path:
    """The path of a built `llama-server`; builds it under a lock if it is not there yet."""
    target = binary()
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            _build(target, log or target.parent / "build.log")
    return target


def _build(target: Path, log: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="llama-build-") as scratch, open(log, "w") as out:
        work = Path(scratch)
        _run(out, sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
            f"llama-cpp-python=={VERSION}", "-d", str(work))  # fmt: skip
        (sdist,) = work.glob("llama_cpp_python-*.tar.gz")
        with tarfile.open(sdist) as archive:
            archive.extractall(work, filter="data")
        source = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"))
        build = work / "build"
        _run(out, "cmake", "-S", str(source), "-B", str(build), *BUILD_FLAGS)
        _run(out, "cmake", "--build", str(build), "--target", "llama-server", "-j", str(os.cpu_count() or 2))
        built = next(build.rglob("bin/llama-server"))
        partial = target.with_suffix(".partial")
        shutil.copy2(built, partial)
        partial.replace(target)


def _run(log: IO[str], *argv: str) -> None:
    result = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        raise SystemExit(f"llama-server build failed at `{' '.join(argv[:3])} …`; see {log.name}")


if __name__ == "__main__":
    print(ensure_built())
