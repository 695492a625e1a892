"""`python -m bench pages`: how long every signed-in page takes with a big history, on SQLite and PostgreSQL.

Each database is made fresh (a SQLite file in a temporary folder; a PostgreSQL database on 127.0.0.1:5432 that is
created and dropped), migrated, and filled (`bench/pages_fill.py`). Housekeeping's fold runs once, as it would
within a minute of a real hub's start, and a few thousand rows arrive after it (pages read those live). Then the
app is built as `gpuclub serve` builds it and every page a signed-in owner can open (found in the route table, plus
a few heavier variants) is asked for in-process: one request to warm up, then the median of `--repeats`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench import pages_fill
from hub.accounts import service as accounts
from hub.app import create_app
from hub.db import Database
from hub.ledger.models import Entry, LedgerTransaction
from hub.migrate import upgrade
from hub.settings import Settings
from hub.usage.models import UsageRecord

POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
BASE = "http://bench.local"
TARGET_MS = 300.0
SKIP = re.compile(r"^/($|v1|agent|static|auth|login|logout|setup|invite|stripe|healthz|metrics|rerank)|\.csv$|/buy$")
EXTRA = ("/usage?days=90", "/earnings?days=90", "/admin/usage?days=90", "/credits?kind=grant")
LATE = 2_000  # rows written after the fold: what a page reads live


def page_paths(app: Any) -> list[str]:
    paths = set()
    for route in app.routes:
        methods: set[str] = getattr(route, "methods", set())
        if "GET" in methods and "{" not in route.path and not SKIP.search(route.path):
            paths.add(route.path)
    return sorted(paths) + list(EXTRA)


async def _fold(database: Database) -> bool:
    try:
        from hub.usage.rollup import fold
    except ImportError:  # a hub from before the rollups
        return False
    async with database.session() as db:
        await fold(db)
    return True


def run(url: str, rows: int, days: int, repeats: int, folder: Path) -> dict[str, Any]:
    upgrade(url)  # Alembic runs its own event loop
    return asyncio.run(measure(url, rows, days, repeats, folder))


async def measure(url: str, rows: int, days: int, repeats: int, folder: Path) -> dict[str, Any]:
    database = Database(url)
    club = await pages_fill.people(database)
    began = time.perf_counter()
    pages_fill.bulk_write(url, club, rows - LATE if rows > LATE * 10 else rows, days)
    filled = time.perf_counter() - began
    began = time.perf_counter()
    rolled = await _fold(database)
    folded = time.perf_counter() - began
    if rows > LATE * 10:  # a few thousand newer rows above the watermark, as between two folds
        await _late_rows(database, url, club, rows)
    settings = Settings(secret_key="bench-secret-" + "x" * 32, database_url=url, data_dir=folder, public_url=BASE)
    app = create_app(settings, database)
    times: dict[str, float | str] = {}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:  # type: ignore[arg-type]
        async with database.session() as db:
            token = await accounts.create_login_link(db, club.owner, minutes=5)
        signed = await client.get(f"/login/{token}", follow_redirects=False)
        assert signed.status_code == 303, signed.text[:300]
        paths = page_paths(app)
        first = await client.get("/credits")
        older = re.search(r'href="(/credits\?[^"]*)"[^>]*rel="next"', first.text)
        if older:
            paths.append(older.group(1).replace("&amp;", "&"))
        for path in paths:
            times[path] = await _time(client, path, repeats)
    await database.dispose()
    return {"filled_s": round(filled, 1), "folded_s": round(folded, 1), "rolled_up": rolled, "pages_ms": times}


async def _late_rows(database: Database, url: str, club: pages_fill.Club, rows: int) -> None:
    chunks = pages_fill.history(club, LATE, 1, seed=11)
    offset = rows - LATE
    engine = create_engine(_sync(url))
    with engine.begin() as connection:
        for used, transactions, entries in chunks:
            for row in used:
                row["id"] += offset
                row["request_id"] = uuid.uuid4().hex
            for row in transactions:
                row["id"] += 10 * rows
                row["key"] = f"late:{uuid.uuid4().hex}"
            for row in entries:
                row["id"] += 30 * rows
                row["transaction_id"] += 10 * rows
            tables: list[Any] = [UsageRecord.__table__, LedgerTransaction.__table__, Entry.__table__]  # type: ignore[attr-defined]
            for table, found in zip(tables, (used, transactions, entries), strict=True):
                if found:
                    connection.execute(table.insert(), found)
        connection.execute(
            text(
                "UPDATE accounts SET balance = (SELECT COALESCE(SUM(amount), 0) FROM ledger_entries "
                "WHERE ledger_entries.account_id = accounts.id)"
            )
        )
        if engine.dialect.name == "postgresql":
            for table in ("usage", "ledger_transactions", "ledger_entries"):
                connection.execute(
                    text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))")  # noqa: S608
                )
    engine.dispose()


async def _time(client: httpx.AsyncClient, path: str, repeats: int) -> float | str:
    warm = await client.get(path)
    if warm.status_code != 200 or "text/html" not in warm.headers.get("content-type", ""):
        return f"HTTP {warm.status_code}"  # a redirect (/admin) or not a page
    samples = []
    for _ in range(repeats):
        began = time.perf_counter()
        response = await client.get(path)
        samples.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200, (path, response.status_code)
    return round(statistics.median(samples), 1)


def _sync(url: str) -> str:
    parsed = make_url(url)
    driver = "sqlite" if parsed.get_backend_name() == "sqlite" else "postgresql+psycopg"
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def run_postgres(rows: int, days: int, repeats: int, folder: Path) -> dict[str, Any]:
    name = f"gpuclub_bench_pages_{uuid.uuid4().hex[:8]}"
    admin = create_engine(_sync(POSTGRES), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(POSTGRES).set(database=name, drivername="postgresql+asyncpg").render_as_string(False)
        return run(url, rows, days, repeats, folder)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def table(results: dict[str, dict[str, Any]]) -> str:
    names = list(results)
    paths: list[str] = []
    for result in results.values():
        paths += [path for path in result["pages_ms"] if path not in paths]
    width = max(len(path) for path in paths) + 2
    lines = [f"{'page':<{width}}" + "".join(f"{name + ' ms':>16}" for name in names) + "  under 300 ms"]
    lines.append("-" * len(lines[0]))
    for path in paths:
        cells = [results[name]["pages_ms"].get(path, "-") for name in names]
        numbers = [cell for cell in cells if isinstance(cell, float)]
        ok = "yes" if numbers and max(numbers) < TARGET_MS else ("no" if numbers else "")
        lines.append(f"{path:<{width}}" + "".join(f"{cell!s:>16}" for cell in cells) + f"  {ok}")
    for name, result in results.items():
        lines.append(
            f"{name}: filled in {result['filled_s']} s, folded in {result['folded_s']} s"
            + ("" if result["rolled_up"] else " (no rollups in this hub)")
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench pages", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--smoke", action="store_true", help="2,000 rows, one repeat: checks the harness in seconds")
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON here")
    args = parser.parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    rows, repeats = (2_000, 1) if args.smoke else (args.rows, args.repeats)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="gpuclub-bench-pages-") as folder:
        for name in args.databases.split(","):
            began = time.perf_counter()
            if name == "sqlite":
                url = f"sqlite+aiosqlite:///{Path(folder) / 'pages.db'}"
                results[name] = run(url, rows, args.days, repeats, Path(folder))
            elif name == "postgres":
                results[name] = run_postgres(rows, args.days, repeats, Path(folder))
            else:
                parser.error(f"unknown database {name!r}: choose sqlite and/or postgres")
            print(f"{name}: done in {time.perf_counter() - began:.0f} s", file=sys.stderr)
    print(f"pages with {rows:,} usage rows over {args.days} days (median of {repeats}, ms)\n")
    print(table(results))
    if args.out:
        args.out.write_text(
            json.dumps({"rows": rows, "days": args.days, "smoke": args.smoke, "results": results}, indent=2)
        )
    return 0
