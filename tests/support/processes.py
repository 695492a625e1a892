"""Real child processes for the tests: started, awaited on a line they print, and always stopped."""

from __future__ import annotations

import queue
import re
import socket
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Running:
    """A started process and everything it has printed so far (stdout and stderr merged)."""

    process: subprocess.Popen[str]
    lines: queue.Queue[str | None]
    output: list[str] = field(default_factory=list)

    def mark(self) -> int:
        """A position in the output, for `wait_for(..., since=mark)`: only lines printed after it count."""
        self.drain()
        return len(self.output)

    def wait_for(self, pattern: str, timeout: float = 30.0, *, since: int = 0) -> re.Match[str]:
        """Block until a line matches `pattern`; the line arrives through the pipe, no polling."""
        regex = re.compile(pattern)
        for line in self.output[since:]:
            if match := regex.search(line):
                return match
        while True:
            try:
                got = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise RuntimeError(f"no line matching {pattern!r} within {timeout}s:\n{self.text}") from None
            if got is None:
                raise RuntimeError(f"process exited ({self.process.poll()}) before {pattern!r}:\n{self.text}")
            self.output.append(got)
            if match := regex.search(got):
                return match

    def drain(self) -> None:
        """Collect what is buffered in the queue without waiting."""
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return
            if line is None:
                return
            self.output.append(line)

    @property
    def text(self) -> str:
        return "".join(self.output)


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def stop(process: subprocess.Popen[Any], grace: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `grace` seconds."""
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def run(command: Sequence[str], *, env: Mapping[str, str], cwd: Path | None = None) -> Iterator[Running]:
    process = subprocess.Popen(
        list(command),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    pump = threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True)
    pump.start()
    try:
        yield Running(process, lines)
    finally:
        stop(process, 10)
        pump.join(timeout=10)
        process.stdout.close()
