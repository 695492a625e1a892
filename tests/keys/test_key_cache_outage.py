"""While the database cannot be reached, the key cache serves the keys it read, for a bounded time, and no others.

The outage is a real one: a PostgreSQL address where nothing listens (connection refused).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.db import Database
from hub.errors import DatabaseUnavailable, InvalidApiKey
from hub.keys import service as keys
from hub.keys.cache import KeyCache
from hub.outage import Outage
from tests.support.people import person

NOWHERE = "postgresql+asyncpg://nobody@127.0.0.1:1/nothing"


@pytest.fixture
async def away() -> AsyncIterator[Database]:
    """A database that refuses every connection."""
    database = Database(NOWHERE)
    yield database
    await database.dispose()


async def test_a_key_read_before_the_outage_is_still_served_after_its_entry_expired(
    db: AsyncSession, database: Database, away: Database, caplog: pytest.LogCaptureFixture
) -> None:
    alice = await person(db, "alice@lab.example.org")
    _, secret = await keys.create_key(db, alice, name="k")
    outage = Outage(seconds=60)
    cache = KeyCache(ttl_seconds=0, outage=outage)  # every entry has expired by the next lookup
    before = await cache.lookup(database.session, secret)

    during = [await cache.lookup(away.session, secret) for _ in range(3)]

    assert during == [before] * 3
    assert outage.degraded
    assert len([r for r in caplog.records if "database unreachable" in r.message]) == 1  # once, not per request


async def test_a_key_never_seen_gets_503_with_retry_after_during_the_outage(db: AsyncSession, away: Database) -> None:
    alice = await person(db, "alice@lab.example.org")
    _, secret = await keys.create_key(db, alice, name="k")
    cache = KeyCache(outage=Outage(seconds=60))

    with pytest.raises(DatabaseUnavailable) as refused:
        await cache.lookup(away.session, secret)

    assert refused.value.status_code == 503 and refused.value.retry_after > 0
    assert "database" in refused.value.message


async def test_what_was_read_longer_ago_than_the_outage_allows_is_not_served(
    db: AsyncSession, database: Database, away: Database
) -> None:
    alice = await person(db, "alice@lab.example.org")
    _, secret = await keys.create_key(db, alice, name="k")
    cache = KeyCache(ttl_seconds=0, outage=Outage(seconds=0))
    await cache.lookup(database.session, secret)

    with pytest.raises(DatabaseUnavailable):
        await cache.lookup(away.session, secret)


async def test_a_key_revoked_before_the_outage_is_not_served_from_memory(
    db: AsyncSession, database: Database, away: Database
) -> None:
    alice = await person(db, "alice@lab.example.org")
    key, secret = await keys.create_key(db, alice, name="k")
    cache = KeyCache(ttl_seconds=0, outage=Outage(seconds=60))
    await cache.lookup(database.session, secret)
    await keys.revoke(db, alice, key.id or 0)
    cache.clear()  # what the notifier does on KeysChanged

    with pytest.raises(DatabaseUnavailable):
        await cache.lookup(away.session, secret)


async def test_after_the_outage_the_key_is_read_again(db: AsyncSession, database: Database, away: Database) -> None:
    alice = await person(db, "alice@lab.example.org")
    _, secret = await keys.create_key(db, alice, name="k")
    outage = Outage(seconds=60)
    cache = KeyCache(ttl_seconds=0, outage=outage)
    await cache.lookup(database.session, secret)
    await cache.lookup(away.session, secret)
    await keys.revoke(db, alice, (await keys.list_keys(db, alice))[0].id or 0)

    outage.recovered()

    with pytest.raises(InvalidApiKey):  # read again, and revoked meanwhile
        await cache.lookup(database.session, secret)
