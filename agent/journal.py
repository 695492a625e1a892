"""The bills this agent keeps for the hub until the hub says they are written (agent.protocol, "Bills").

A bill is the hub's signed record of what one finished request cost and used; the agent cannot read or change
it, only keep it and send it back. They live in a small append-only file: a line per bill, a line per `written`,
rewritten compactly from time to time. Each line is written (not fsynced) before the next frame is read, so a
crash of the hub, or of this agent, loses none; a power cut of this machine may lose the last few seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import IO

log = logging.getLogger("gpuclub.agent")
COMPACT_AFTER = 1000  # lines in the file beyond the bills still kept
MAX_KEPT = 100_000  # the oldest go first beyond this (a hub that never confirms must not fill the disk)


def default_path(hub: str, token: str, environ: dict[str, str] | None = None) -> Path:
    """Where the bills for this hub and token live: under $XDG_STATE_HOME (~/.local/state), one file per token."""
    env = os.environ if environ is None else environ
    state = Path(env.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    name = hashlib.sha256(f"{hub}\n{token}".encode()).hexdigest()[:16]
    return state / "gpuclub-agent" / f"bills-{name}.jsonl"


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.kept: dict[str, str] = {}  # request id → bill, oldest first
        self.lines = 0
        self.file: IO[str] | None = None

    def open(self) -> None:
        """Read what an earlier run kept, then keep appending; a torn last line (a crash) is skipped."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError), self.path.open(encoding="utf-8") as old:
            for line in old:
                self.lines += 1
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and isinstance(entry.get("id"), str) and isinstance(entry.get("bill"), str):
                    self.kept[entry["id"]] = entry["bill"]
                elif isinstance(entry, dict) and isinstance(entry.get("written"), list):
                    for done in entry["written"]:
                        self.kept.pop(str(done), None)
        self._rewrite()
        if self.kept:
            log.info("%d bills from an earlier run wait for the hub's confirmation", len(self.kept))

    def keep(self, request_id: str, bill: str) -> None:
        if request_id in self.kept:
            return
        self.kept[request_id] = bill
        while len(self.kept) > MAX_KEPT:
            dropped = next(iter(self.kept))
            del self.kept[dropped]
            log.warning("more than %d bills unconfirmed: dropped the oldest (%s)", MAX_KEPT, dropped[:8])
        self._append({"id": request_id, "bill": bill})

    def written(self, ids: list[str]) -> None:
        gone = [request_id for request_id in ids if self.kept.pop(request_id, None) is not None]
        if gone:
            self._append({"written": gone})
        if self.lines > len(self.kept) + COMPACT_AFTER:
            self._rewrite()

    def pending(self) -> list[tuple[str, str]]:
        return list(self.kept.items())

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def _append(self, entry: dict[str, object]) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps(entry, separators=(",", ":")) + "\n")
        self.file.flush()
        self.lines += 1

    def _rewrite(self) -> None:
        """The file again with only the bills still kept (written aside, then renamed over it)."""
        self.close()
        fresh = self.path.with_suffix(".tmp")
        fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for request_id, bill in self.kept.items():
                out.write(json.dumps({"id": request_id, "bill": bill}, separators=(",", ":")) + "\n")
        os.replace(fresh, self.path)
        self.lines = len(self.kept)
        self.file = self.path.open("a", encoding="utf-8")
