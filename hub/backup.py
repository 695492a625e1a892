"""`gpuclub backup DIR`: a consistent copy of the database and the secret, taken while the hub runs.

SQLite is copied with SQLite's own online backup (a consistent snapshot, whatever the hub writes meanwhile);
PostgreSQL with `pg_dump --format=custom`, the password passed in its environment, never on its command line.
The secret key goes along when it lives in the data directory: agents' unconfirmed bills and sign-in state are
signed with it.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

from sqlalchemy.engine import make_url

from hub.errors import HubError
from hub.settings import Settings


def backup(settings: Settings, target: Path) -> str:
    if target.exists() and any(target.iterdir()):
        raise HubError(f"{target} is not empty: give a new directory for each backup")
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        copy = target / "gpuclub.db"
        _sqlite(Path(url.database or ""), copy)
    else:
        copy = target / "gpuclub.pgdump"
        _postgres(settings.database_url, copy)
    written = [copy]
    secret = settings.data_dir / "secret_key"
    if secret.exists():
        shutil.copy2(secret, target / "secret_key")
        written.append(target / "secret_key")
    for path in written:
        path.chmod(0o600)
    return "\n".join(str(path) for path in written)


def _sqlite(source: Path, copy: Path) -> None:
    if not source.exists():
        raise HubError(f"there is no database at {source} (run `gpuclub migrate` first)")
    with closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as live, closing(sqlite3.connect(copy)) as out:
        live.backup(out)


def _postgres(database_url: str, copy: Path) -> None:
    url = make_url(database_url).set(drivername="postgresql")
    if shutil.which("pg_dump") is None:
        raise HubError("pg_dump is not installed: install PostgreSQL's client tools (Debian: postgresql-client)")
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    plain = url.set(password=None).render_as_string(hide_password=False)
    done = subprocess.run(  # noqa: S603 - pg_dump from PATH, with the hub's own database URL
        ["pg_dump", "--format=custom", "--file", str(copy), "--dbname", plain],  # noqa: S607
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        copy.unlink(missing_ok=True)
        raise HubError(f"pg_dump failed: {(done.stderr.strip().splitlines() or ['no message'])[-1]}")
