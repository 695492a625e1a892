"""A big history for the pages benchmark: members, keys, agents and grants through the hub's own services, then
usage rows with their ledger transactions in bulk (executemany on SQLite, COPY on PostgreSQL), in the shapes the
recorder writes them (`hub.proxy.recorder`, `hub.ledger.batch`): a usage row per request with its cost and what the
GPU's owner earned, and for a request on someone else's GPU one `usage` transaction (`request:<id>`, the model as
memo) whose entries move the cost from the consumer to the provider and the club's fee to the club.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import make_url

from hub.accounts import service as accounts
from hub.accounts.models import Role, User
from hub.agents import service as agents
from hub.db import Database, utcnow
from hub.keys import service as keys
from hub.ledger.grants import grant
from hub.ledger.models import Account, Entry, Kind, LedgerTransaction
from hub.ledger.service import account_for, system_account
from hub.usage.models import UsageRecord

MODELS = ("llama-3.1-8b-instruct", "qwen2.5-72b-instruct", "mistral-small-24b", "gemma-2-27b", "bge-m3")
CHUNK = 50_000
FEE_BPS = 1_000  # the club keeps 10%


@dataclass
class Club:
    owner: User  # an admin, a provider with two agents and a consumer: every page has something to show
    members: list[User]
    keys: dict[int, list[int]]  # user id -> key ids
    agents: list[tuple[int, int]]  # (agent id, owner's user id)
    accounts: dict[int, int] = field(default_factory=dict)  # user id -> account id
    club_account: int = 0


async def people(database: Database, members: int = 20, providers: int = 5) -> Club:
    """Members (the first is the owner), two keys each, six agents on `providers` members, credits to spend."""
    async with database.session() as db:
        owner = await accounts.add_member(db, "owner@bench.example.org", role=Role.OWNER, name="Owner")
        everyone = [owner] + [
            await accounts.add_member(db, f"member{n:02d}@bench.example.org", name=f"Member {n:02d}")
            for n in range(1, members)
        ]
        club = Club(owner, everyone, {}, [])
        for user in everyone:
            club.keys[user.pk] = [(await keys.create_key(db, user, name=name))[0].id or 0 for name in ("laptop", "ci")]
            await grant(db, None, user, 10_000_000 * 1_000_000, reason="bench credits")
            club.accounts[user.pk] = (await account_for(db, user.pk)).id or 0
        for n, user in enumerate([owner, owner, *everyone[1:providers]]):
            agent, _ = await agents.create_agent(db, user, name=f"gpu-{n}")
            club.agents.append((agent.id or 0, user.pk))
        club.club_account = (await system_account(db, Kind.CLUB)).id or 0
        await db.commit()
    return club


def _defaults(table: Table) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for column in table.columns:
        default: Any = column.default
        if default is not None and getattr(default, "is_scalar", False):
            values[column.name] = default.arg
        else:
            values[column.name] = None
    return values


def history(club: Club, rows: int, days: int, seed: int = 7) -> Iterator[tuple[list[dict[str, Any]], ...]]:
    """Chunks of (usage rows, transactions, entries), oldest first, ids given, over `days` days up to now."""
    rng = random.Random(seed)
    usage_defaults = _defaults(UsageRecord.__table__)  # type: ignore[attr-defined]
    start = utcnow() - timedelta(days=days - 1, hours=12)
    span = (utcnow() - timedelta(minutes=5) - start).total_seconds()
    weights = [3 if n < 5 else 1 for n in range(len(club.members))]
    transaction_id = entry_id = 10_000  # above what the services wrote
    used: list[dict[str, Any]] = []
    transactions: list[dict[str, Any]] = []
    entries: list[dict[str, Any]] = []
    for n in range(rows):
        at = start + timedelta(seconds=span * n / rows)
        consumer = rng.choices(club.members, weights)[0].pk
        agent_id, provider = club.agents[rng.randrange(len(club.agents))]
        model = MODELS[rng.randrange(len(MODELS))]
        prompt, completion = rng.randrange(20, 4000), rng.randrange(1, 800)
        status = 200 if rng.random() > 0.01 else 502
        cost = 0 if provider == consumer or status != 200 else prompt * 2 + completion * 6
        fee = cost * FEE_BPS // 10_000
        request_id = f"{n:032x}"
        used.append(
            usage_defaults
            | {
                "id": n + 1,
                "request_id": request_id,
                "user_id": consumer,
                "key_id": rng.choice(club.keys[consumer]),
                "agent_id": agent_id,
                "model": model,
                "endpoint": "chat/completions" if model != "bge-m3" else "embeddings",
                "stream": rng.random() < 0.6,
                "status": status,
                "prompt_tokens": prompt,
                "completion_tokens": completion if status == 200 else 0,
                "estimated": False,
                "disputed": rng.random() < 0.001,
                "ttft_ms": rng.randrange(20, 900),
                "duration_ms": rng.randrange(100, 9000),
                "error": "" if status == 200 else "the upstream failed",
                "cost": cost,
                "earned": cost - fee,
                "created_at": at,
            }
        )
        if cost:
            transaction_id += 1
            transactions.append(
                {"id": transaction_id, "key": f"request:{request_id}", "kind": "usage", "memo": model, "created_at": at}
            )
            for account, amount in ((club.accounts[consumer], -cost), (club.accounts[provider], cost - fee)):
                entry_id += 1
                entries.append(
                    {"id": entry_id, "transaction_id": transaction_id, "account_id": account, "amount": amount}
                )
            if fee:
                entry_id += 1
                entries.append(
                    {"id": entry_id, "transaction_id": transaction_id, "account_id": club.club_account, "amount": fee}
                )
        if len(used) == CHUNK or n == rows - 1:
            yield used, transactions, entries
            used, transactions, entries = [], [], []


def bulk_write(url: str, club: Club, rows: int, days: int) -> None:
    """Write the history straight into the database, then set every cached balance to the sum of its entries."""
    tables = [
        UsageRecord.__table__,  # type: ignore[attr-defined]
        LedgerTransaction.__table__,  # type: ignore[attr-defined]
        Entry.__table__,  # type: ignore[attr-defined]
    ]
    defaults = [_defaults(table) for table in tables]
    balances = (
        f"UPDATE {Account.__tablename__} SET balance = (SELECT COALESCE(SUM(amount), 0) FROM ledger_entries "  # noqa: S608
        "WHERE ledger_entries.account_id = accounts.id)"
    )
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        connection = sqlite3.connect(str(parsed.database))
        with connection:
            for chunk in history(club, rows, days):
                for table, base, found in zip(tables, defaults, chunk, strict=True):
                    names = list(table.columns.keys())
                    marks = ", ".join("?" for _ in names)
                    connection.executemany(
                        f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({marks})",  # noqa: S608
                        [tuple(_sqlite(base | row, name) for name in names) for row in found],
                    )
            connection.execute(balances)
        connection.close()
        return
    import psycopg

    with psycopg.connect(parsed.set(drivername="postgresql").render_as_string(hide_password=False)) as pg:
        with pg.cursor() as cursor:
            for chunk in history(club, rows, days):
                for table, base, found in zip(tables, defaults, chunk, strict=True):
                    names = list(table.columns.keys())
                    quoted = ", ".join(f'"{name}"' for name in names)
                    with cursor.copy(f'COPY "{table.name}" ({quoted}) FROM STDIN') as copy:
                        for row in found:
                            full = base | row
                            copy.write_row([full[name] for name in names])
            cursor.execute(balances)
            for table in tables:
                cursor.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), (SELECT MAX(id) FROM {table.name}))"  # noqa: S608
                )
        pg.commit()
    # What autovacuum does to a table that has been around for a while (visibility map, statistics): without it,
    # the first reads after a bulk load visit every heap page.
    url_pg = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url_pg, autocommit=True) as pg:
        pg.execute("VACUUM ANALYZE")


def _sqlite(row: dict[str, Any], name: str) -> Any:
    value = row[name]
    if isinstance(value, datetime):  # how SQLAlchemy keeps a UTC datetime in SQLite
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, bool):
        return int(value)
    return value
