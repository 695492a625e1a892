from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.db import utcnow
from hub.keys import service as keys
from hub.keys.models import ApiKey
from tests.support.people import Client, api_key, person, post_form, sign_in, text_of


async def test_a_new_key_is_shown_once_and_stored_only_as_a_hash(client: Client, db: AsyncSession) -> None:
    alice = await person(db, "alice@lab.example.org")
    await sign_in(client, db, alice)

    created = await post_form(client, "/keys", "/keys", {"name": "laptop"})

    assert created.status_code == 200
    secret = created.text.split('id="new-secret">')[1].split("<")[0]
    assert secret.startswith("gpc_") and len(secret) > 40
    assert "will not be shown again" in created.text
    stored = (await db.exec(select(ApiKey))).one()
    assert stored.prefix == secret[:12] and secret not in stored.key_hash
    listing = await client.get("/keys")
    assert secret not in listing.text
    assert f"{secret[:12]}…" in listing.text and "laptop" in listing.text


async def test_a_key_answers_v1_models_until_revoked(client: Client, db: AsyncSession) -> None:
    alice = await person(db, "alice@lab.example.org")
    await sign_in(client, db, alice)
    secret = await api_key(db, alice)
    key = (await db.exec(select(ApiKey))).one()

    ok = await client.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})
    assert ok.status_code == 200
    assert ok.json() == {"object": "list", "data": []}

    revoked = await post_form(client, "/keys", f"/keys/{key.id}/revoke", follow_redirects=True)
    assert "revoked" in text_of(revoked.text)
    refused = await client.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"


async def test_last_used_is_shown_after_the_key_is_used(client: Client, db: AsyncSession) -> None:
    alice = await person(db, "alice@lab.example.org")
    await sign_in(client, db, alice)
    secret = await api_key(db, alice, name="script")
    assert "never" in text_of((await client.get("/keys")).text).split("script")[1][:60]

    await client.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})

    row = text_of((await client.get("/keys")).text).split("script")[1][:60]
    assert utcnow().strftime("%Y-%m-%d") in row.split("…")[1]


@pytest.mark.parametrize(
    "header",
    ["", "Bearer", "Bearer gpc_not-a-real-key", "Basic dXNlcjpwYXNz", "bearer  "],
    ids=["missing", "empty", "unknown", "wrong-scheme", "blank"],
)
async def test_a_bad_key_gets_401_in_openai_format(client: Client, header: str) -> None:
    response = await client.get("/v1/models", headers={"Authorization": header} if header else {})

    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key"
    assert error["message"]


async def test_an_expired_key_is_rejected(client: Client, db: AsyncSession) -> None:
    alice = await person(db, "alice@lab.example.org")
    _, secret = await keys.create_key(db, alice, name="short", expires_at=utcnow() + timedelta(seconds=1))
    key = (await db.exec(select(ApiKey))).one()
    key.expires_at = utcnow() - timedelta(seconds=1)
    db.add(key)
    await db.commit()

    response = await client.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})

    assert response.status_code == 401


async def test_a_key_with_an_expiry_date_in_the_past_is_refused_and_nothing_is_stored(
    client: Client, db: AsyncSession
) -> None:
    alice = await person(db, "alice@lab.example.org")
    await sign_in(client, db, alice)

    response = await post_form(client, "/keys", "/keys", {"name": "old", "expires": "2001-01-01"})

    assert response.status_code == 400
    assert "must be in the future" in response.text
    assert (await db.exec(select(ApiKey))).all() == []


async def test_a_key_needs_a_name(client: Client, db: AsyncSession) -> None:
    alice = await person(db, "alice@lab.example.org")
    await sign_in(client, db, alice)

    response = await post_form(client, "/keys", "/keys", {"name": "   "})

    assert response.status_code == 400
    assert "Please give a key name" in response.text


async def test_someone_elses_key_cannot_be_revoked(client: Client, db: AsyncSession) -> None:
    alice = await person(db, "alice@lab.example.org")
    bob = await person(db, "bob@lab.example.org")
    secret = await api_key(db, alice)
    key = (await db.exec(select(ApiKey))).one()
    await sign_in(client, db, bob)

    response = await post_form(client, "/keys", f"/keys/{key.id}/revoke")

    assert response.status_code == 404
    still = await client.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})
    assert still.status_code == 200
