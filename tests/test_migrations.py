"""Migrations: an empty database upgrades to head, and the models have not drifted from the migrations."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from hub.migrate import pending, upgrade
from hub.models import metadata
from tests.conftest import fresh_postgres


def _sync(url: str) -> str:
    driver = "sqlite" if url.startswith("sqlite") else "postgresql+psycopg"
    return str(make_url(url).set(drivername=driver))


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    with fresh_postgres("gpuclub_migrate") as url:
        yield url


def test_an_empty_database_upgrades_to_head_with_every_table(empty_database: str) -> None:
    assert pending(empty_database)

    upgrade(empty_database)

    assert not pending(empty_database)
    engine = create_engine(_sync(empty_database))
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert set(metadata.tables) <= tables


def test_upgrading_twice_changes_nothing(empty_database: str) -> None:
    upgrade(empty_database)
    upgrade(empty_database)

    assert not pending(empty_database)


def test_the_models_match_the_migrations(empty_database: str) -> None:
    upgrade(empty_database)

    engine = create_engine(_sync(empty_database))
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        drift = compare_metadata(context, metadata)
    engine.dispose()

    assert drift == [], f"models and migrations differ; write a migration: {drift}"


def test_a_database_with_data_upgrades_from_the_first_release(empty_database: str) -> None:
    upgrade(empty_database, "0002")
    engine = create_engine(_sync(empty_database))
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO invitations (token_hash, role, note, max_uses, uses, created_at) "
                "VALUES ('h', 'member', 'old one', 1, 0, CURRENT_TIMESTAMP)"
            )
        )
    engine.dispose()

    upgrade(empty_database)

    engine = create_engine(_sync(empty_database))
    with engine.connect() as connection:
        credits = connection.execute(text("SELECT credits FROM invitations WHERE note = 'old one'")).scalar_one()
    engine.dispose()
    assert credits == 0 and not pending(empty_database)


def test_keys_made_before_trust_scopes_reach_any_gpu_and_the_scopes_can_be_rolled_back(empty_database: str) -> None:
    from alembic import command

    from hub.migrate import alembic_config

    upgrade(empty_database, "0006")
    engine = create_engine(_sync(empty_database))
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO users (email, name, role, status, created_at) "
                "VALUES ('old@lab.example.org', 'Old', 'member', 'active', CURRENT_TIMESTAMP)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO api_keys (user_id, name, prefix, key_hash, created_at) "
                "SELECT id, 'old key', 'gpc_old', 'hash', CURRENT_TIMESTAMP FROM users"
            )
        )
    engine.dispose()

    upgrade(empty_database, "0007")
    engine = create_engine(_sync(empty_database))
    with engine.connect() as connection:
        trust = connection.execute(text("SELECT trust FROM api_keys WHERE name = 'old key'")).scalar_one()
    engine.dispose()
    command.downgrade(alembic_config(empty_database), "0006")
    engine = create_engine(_sync(empty_database))
    inspector = inspect(engine)
    key_columns = {column["name"] for column in inspector.get_columns("api_keys")}
    tables = set(inspector.get_table_names())
    engine.dispose()

    assert trust == "any"
    assert "trust" not in key_columns and "key_trusted_providers" not in tables


def test_prices_and_usage_from_before_audio_cost_nothing_for_audio_and_audio_can_be_rolled_back(
    empty_database: str,
) -> None:
    from alembic import command

    from hub.migrate import alembic_config

    upgrade(empty_database, "0010")
    engine = create_engine(_sync(empty_database))
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO prices (model, input_per_million, output_per_million, default_max_tokens) "
                "VALUES ('old', 1, 2, 1024)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO users (email, name, role, status, created_at) "
                "VALUES ('old@lab.example.org', 'Old', 'member', 'active', CURRENT_TIMESTAMP)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO usage (request_id, user_id, model, endpoint, stream, status, prompt_tokens, "
                "completion_tokens, estimated, disputed, duration_ms, error, created_at) "
                "SELECT 'r1', id, 'old', 'chat/completions', false, 200, 3, 4, false, false, 10, '', CURRENT_TIMESTAMP "
                "FROM users"
            )
        )
    engine.dispose()

    upgrade(empty_database, "0011")
    engine = create_engine(_sync(empty_database))
    with engine.connect() as connection:
        audio_price = connection.execute(text("SELECT audio_per_minute FROM prices WHERE model = 'old'")).scalar_one()
        audio_ms = connection.execute(text("SELECT audio_ms FROM usage WHERE request_id = 'r1'")).scalar_one()
    engine.dispose()
    command.downgrade(alembic_config(empty_database), "0010")
    engine = create_engine(_sync(empty_database))
    inspector = inspect(engine)
    price_columns = {column["name"] for column in inspector.get_columns("prices")}
    usage_columns = {column["name"] for column in inspector.get_columns("usage")}
    with engine.connect() as connection:
        kept = connection.execute(text("SELECT input_per_million, output_per_million FROM prices")).one()
    engine.dispose()

    assert (audio_price, audio_ms) == (0, None)
    assert "audio_per_minute" not in price_columns and "audio_ms" not in usage_columns
    assert tuple(kept) == (1, 2)
