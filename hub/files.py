"""Files only the hub's own user may read: the data directory (0700) and the SQLite database (0600).

They hold the session secret (whoever reads it can sign in as anyone) and the database (key hashes, the ledger).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("gpuclub")

DIR_MODE = 0o700
FILE_MODE = 0o600


def guard_data_dir(path: Path) -> None:
    """Tighten an existing data directory to 0700. A missing one is left for whoever first writes there (the
    session secret, the SQLite file), which creates it 0700: an operator on PostgreSQL needs no data dir at all."""
    if path.is_dir():
        _tighten(path, DIR_MODE)


def private_file(path: Path) -> None:
    """Create `path` empty with mode 0600 before anything opens it, or tighten it if it exists.

    SQLite gives its -wal and -shm files the database file's mode, so securing this one file secures all three.
    A missing parent is created 0700; an existing one is left alone (a database at /srv/gpuclub.db must not make
    us chmod /srv).
    """
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        _tighten(path, FILE_MODE)


def _tighten(path: Path, mode: int) -> None:
    # Someone who left the data dir group- or world-readable almost never meant others to read the session secret,
    # so what we own is tightened, with a warning in case a backup job relied on group access. What we do not own
    # (a volume mounted by root) is not ours to change: the warning says what to do. Neither stops the hub.
    current = stat.S_IMODE(path.stat().st_mode)
    if not current & ~mode:
        return
    try:
        path.chmod(current & mode)
    except OSError:
        log.warning("%s is readable by others (mode %o) and cannot be changed by us: chmod %o it", path, current, mode)
    else:
        log.warning("%s was readable by others (mode %o): tightened it to %o", path, current, current & mode)
