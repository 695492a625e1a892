"""A key's settings on the API keys page: budget, models, limits, name and expiry; shown on the key's row."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import timedelta
from html import unescape

import pytest
from litestar import Litestar
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.db import utcnow
from hub.errors import NotFound
from hub.keys import service as keys
from hub.keys.models import ApiKey, KeyModel
from hub.quotas.models import KeyPolicy
from hub.runtime import runtime_of
from hub.usage.models import UsageRecord
from tests.conftest import BASE_URL
from tests.support.people import Client, csrf_from, person, post_form, sign_in, text_of

CREDIT = 1_000_000
FULL = {
    "name": "ci",
    "budget_day": "2.5",
    "budget_month": "40",
    "models": "qwen3-coder\nllama-3-8b, qwen3-coder",
    "rpm": "30",
    "tokens_per_day": "100000",
    "concurrency": "2",
}


def settings_of(html: str, name: str) -> str:
    """What the key's row says of its settings (the text before its Settings form)."""
    row = re.search(rf'<tr class="key-settings [^"]*" data-key="{re.escape(name)}">(.*?)</tr>', html, re.S)
    assert row, f"no settings row for the key {name}"
    return text_of(row.group(1).split("<details")[0])


async def policy_of(db: AsyncSession, key_id: int) -> tuple[dict[str, int | None] | None, list[str]]:
    db.expire_all()
    models = (await db.exec(select(KeyModel.model).where(KeyModel.key_id == key_id))).all()
    policy = await db.get(KeyPolicy, key_id)
    return (policy.model_dump() if policy else None), sorted(models)


async def test_settings_saved_from_the_form_show_on_the_keys_row(client: Client, db: AsyncSession) -> None:
    alice = await person(db, "alice@lab.example.org")
    key, _ = await keys.create_key(db, alice, name="script")
    key_id = key.id or 0
    await sign_in(client, db, alice)

    saved = await post_form(client, "/keys", f"/keys/{key_id}/settings", FULL)
    page = await client.get("/keys")

    assert (saved.status_code, saved.headers["location"]) == (303, "/keys")
    assert settings_of(page.text, "ci") == (
        "Budget: 2.5 a day (2.5 left today), 40 a month (40 left this month) · Models: llama-3-8b, qwen3-coder · "
        "30 requests per minute, 100,000 tokens per day, 2 requests at once"
    )
    policy, models = await policy_of(db, key_id)
    assert policy == {
        "key_id": key_id,
        "budget_day": 2_500_000,
        "budget_month": 40 * CREDIT,
        "rpm": 30,
        "tokens_per_day": 100_000,
        "concurrency": 2,
    }
    assert models == ["llama-3-8b", "qwen3-coder"]
    form = page.text.split(f'action="/keys/{key_id}/settings"')[1].split("</form>")[0]
    assert 'name="budget_day" inputmode="decimal" size="10" maxlength="24"\n      value="2.5"' in form


async def test_emptied_fields_take_the_settings_away(client: Client, db: AsyncSession) -> None:
    alice = await person(db, "alice@lab.example.org")
    key, _ = await keys.create_key(db, alice, name="ci")
    key_id = key.id or 0
    await sign_in(client, db, alice)
    await post_form(client, "/keys", f"/keys/{key_id}/settings", FULL)

    await post_form(client, "/keys", f"/keys/{key_id}/settings", {"name": "ci"})

    assert settings_of((await client.get("/keys")).text, "ci") == (
        "No budget of its own · Every model · your own limits only"
    )
    policy, models = await policy_of(db, key_id)
    assert policy is not None and policy["budget_day"] is None and policy["rpm"] is None and models == []


async def test_saving_with_htmx_answers_with_the_key_list_and_says_so(client: Client, db: AsyncSession) -> None:
    alice = await person(db, "alice@lab.example.org")
    key, _ = await keys.create_key(db, alice, name="ci")
    key_id = key.id or 0
    await sign_in(client, db, alice)
    token = csrf_from((await client.get("/keys")).text)

    response = await client.post(
        f"/keys/{key_id}/settings",
        data={"_csrf_token": token, "name": "nightly", "budget_day": "1"},
        headers={"HX-Request": "true", "X-CSRFToken": token},
    )

    assert response.status_code == 200
    assert response.text.lstrip().startswith('<section id="keys"')
    assert "Saved the settings of nightly." in text_of(response.text)
    assert settings_of(response.text, "nightly").startswith("Budget: 1 a day (1 left today) ·")


BAD = [
    ("budget_day", "-5", "The budget per day must be a number of credits such as 10 or 2.5, got '-5'."),
    ("budget_month", "lots", "The budget per month must be a number of credits such as 10 or 2.5, got 'lots'."),
    ("rpm", "ten", "The requests per minute limit must be a whole number, got 'ten'."),
    ("concurrency", "0", "The concurrent requests limit must be between 1 and 1000000000."),
    ("expires", "2001-01-01", "The expiry date must be in the future."),
    ("expires", "soon", "The expiry must be a date like 2027-01-31, got 'soon'."),
    ("models", "x" * 201, "A model name must be at most 200 printable characters"),
    ("models", ",".join(f"m{i}" for i in range(101)), "A key may name at most 100 models"),
    ("name", "  ", "Please give a key name."),
]


async def test_bad_settings_get_a_readable_message_and_change_nothing(client: Client, db: AsyncSession) -> None:
    alice = await person(db, "alice@lab.example.org")
    key, _ = await keys.create_key(db, alice, name="ci")
    key_id = key.id or 0
    await sign_in(client, db, alice)
    await post_form(client, "/keys", f"/keys/{key_id}/settings", FULL)
    before = await policy_of(db, key_id)

    for field, value, message in BAD:
        response = await post_form(client, "/keys", f"/keys/{key_id}/settings", FULL | {field: value})

        assert response.status_code == 400, field
        assert message in unescape(text_of(response.text))
        assert await policy_of(db, key_id) == before
        assert (await db.get(ApiKey, key_id)).name == "ci"  # type: ignore[union-attr]


async def test_a_new_key_with_bad_settings_is_not_created(client: Client, db: AsyncSession) -> None:
    alice = await person(db, "alice@lab.example.org")
    await sign_in(client, db, alice)

    response = await post_form(client, "/keys", "/keys", {"name": "ci", "budget_day": "-1"})

    assert response.status_code == 400 and "budget per day" in text_of(response.text)
    assert (await db.exec(select(ApiKey))).all() == []


async def test_someone_elses_key_settings_cannot_be_changed(client: Client, db: AsyncSession) -> None:
    alice = await person(db, "alice@lab.example.org")
    bob = await person(db, "bob@lab.example.org")
    key, _ = await keys.create_key(db, alice, name="alices")
    key_id = key.id or 0
    await sign_in(client, db, bob)

    response = await post_form(client, "/keys", f"/keys/{key_id}/settings", FULL)

    assert response.status_code == 404 and "No such API key." in text_of(response.text)
    with pytest.raises(NotFound):
        await keys.get_owned(db, bob, key_id)
    assert await policy_of(db, key_id) == (None, [])
    assert (await db.get(ApiKey, key_id)).name == "alices"  # type: ignore[union-attr]


async def test_a_revoked_keys_settings_cannot_be_changed(client: Client, db: AsyncSession) -> None:
    alice = await person(db, "alice@lab.example.org")
    key, _ = await keys.create_key(db, alice, name="old")
    key_id = key.id or 0
    await keys.revoke(db, alice, key_id)
    await sign_in(client, db, alice)

    response = await post_form(client, "/keys", f"/keys/{key_id}/settings", FULL)

    assert response.status_code == 400 and "revoked" in text_of(response.text)
    assert await policy_of(db, key_id) == (None, [])


async def test_an_expiry_that_has_passed_may_be_sent_back_unchanged(client: Client, db: AsyncSession) -> None:
    alice = await person(db, "alice@lab.example.org")
    key, _ = await keys.create_key(db, alice, name="ci", expires_at=utcnow() + timedelta(days=1))
    key_id = key.id or 0
    key.expires_at = utcnow() - timedelta(days=3)
    db.add(key)
    await db.commit()
    await sign_in(client, db, alice)
    page = (await client.get("/keys")).text
    shown = page.split(f'action="/keys/{key_id}/settings"')[1].split('name="expires" type="date"')[1]
    expires = re.search(r'value="([0-9-]+)"', shown)
    assert expires is not None

    saved = await post_form(client, "/keys", f"/keys/{key_id}/settings", {"name": "ci", "expires": expires.group(1)})

    assert saved.status_code == 303
    assert "expired" in text_of((await client.get("/keys")).text)


async def test_a_new_key_is_made_with_its_settings_and_a_snippet_that_is_ready_to_run(
    client: Client, db: AsyncSession
) -> None:
    alice = await person(db, "alice@lab.example.org")
    await sign_in(client, db, alice)

    created = await post_form(client, "/keys", "/keys", FULL | {"models": "qwen3-coder"})

    secret = created.text.split('id="new-secret">')[1].split("<")[0]
    curl = unescape(text_of(created.text.split('id="new-curl">')[1].split("</pre>")[0]))
    python = unescape(created.text.split('id="new-python">')[1].split("</pre>")[0])
    assert curl.startswith(f'curl {BASE_URL}/v1/chat/completions \\ -H "Authorization: Bearer {secret}"')
    assert '"model": "qwen3-coder"' in curl
    assert f'client = OpenAI(base_url="{BASE_URL}/v1", api_key="{secret}")' in python
    assert settings_of(created.text, "ci").startswith("Budget: 2.5 a day")
    key_id = (await db.exec(select(ApiKey))).one().id or 0
    assert (await policy_of(db, key_id))[1] == ["qwen3-coder"]
    assert secret not in (await client.get("/keys")).text


async def test_what_is_left_of_a_budget_counts_what_the_key_spent(client: Client, db: AsyncSession) -> None:
    alice = await person(db, "alice@lab.example.org")
    key, _ = await keys.create_key(db, alice, name="ci")
    key_id = key.id or 0
    other, _ = await keys.create_key(db, alice, name="other")
    now = utcnow()
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=1)
    for when, cost, spender in [
        (now, 1_250_000, key_id),
        (month_start, 3 * CREDIT, key_id),  # today too, on the first of the month
        (month_start - timedelta(seconds=2), 50 * CREDIT, key_id),  # last month
        (now, 7 * CREDIT, other.id),
    ]:
        db.add(
            UsageRecord(
                request_id=uuid.uuid4().hex, user_id=alice.pk, key_id=spender, model="m", endpoint="chat/completions",
                status=200, cost=cost, created_at=when,
            )
        )  # fmt: skip
    await db.commit()
    await sign_in(client, db, alice)
    await post_form(client, "/keys", f"/keys/{key_id}/settings", {"name": "ci", "budget_day": "5", "budget_month": "5"})

    shown = settings_of((await client.get("/keys")).text, "ci")

    today = 5 - 1.25 - (3 if now.day == 1 else 0)
    assert shown.startswith(f"Budget: 5 a day ({today:g} left today), 5 a month (0.75 left this month) ·")


async def test_saving_a_keys_settings_reads_only_that_keys_limits_again(
    app: Litestar, client: Client, db: AsyncSession
) -> None:
    alice = await person(db, "alice@lab.example.org")
    bob = await person(db, "bob@lab.example.org")
    key, _ = await keys.create_key(db, alice, name="ci")
    other, _ = await keys.create_key(db, bob, name="bobs")
    admission = runtime_of(app).admission
    for load in [("limits", (alice.pk, key.id)), ("limits", (bob.pk, other.id)), ("rate", "m")]:
        await admission._cached(load, lambda _db: asyncio.sleep(0, "read"))
    await sign_in(client, db, alice)

    await post_form(client, "/keys", f"/keys/{key.id}/settings", {"name": "ci", "budget_day": "5"})

    assert set(admission.cache) == {("limits", (bob.pk, other.id)), ("rate", "m")}  # other members' stay cached
