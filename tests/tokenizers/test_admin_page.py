"""Admin → Tokenizers: upload a tokenizer.json for a model, see it listed, remove it; with and without htmx."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest
from litestar import Litestar
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import Role, User
from hub.runtime import runtime_of
from hub.tokenizers import service
from hub.tokenizers.models import ModelTokenizer
from tests.support.people import Client, csrf_from, person, post_form, sign_in, text_of
from tests.tokenizers.making import tokenizer_json, word_level

PAGE = "/admin/tokenizers"


async def upload(client: Client, model: str, raw: bytes, **kwargs: Any) -> httpx.Response:
    """Choose a file and press Attach, as a browser sends it (multipart/form-data)."""
    opened = await client.get(PAGE)
    form = {"_csrf_token": csrf_from(opened.text), "model": model}
    return await client.post(PAGE, data=form, files={"file": ("tokenizer.json", raw, "application/json")}, **kwargs)


def rows(html: str) -> list[str]:
    return [text_of(row.split(">", 1)[1].split("</tr>")[0]) for row in html.split('<tr class="tokenizer"')[1:]]


async def stored(db: AsyncSession) -> list[Any]:
    return list((await db.exec(select(ModelTokenizer.model, ModelTokenizer.sha256))).all())


@pytest.fixture
async def adam(client: Client, db: AsyncSession) -> User:
    """An admin, signed in."""
    user = await person(db, "adam@lab.example.org", Role.ADMIN)
    await sign_in(client, db, user)
    return user


async def test_an_uploaded_tokenizer_is_listed_and_the_hub_counts_with_it_at_once(
    client: Client, app: Litestar, adam: User
) -> None:
    raw = tokenizer_json(word_level(["hub", "counts"]))

    response = await upload(client, "llama-3-8b", raw)

    assert (response.status_code, response.headers["location"]) == (303, PAGE)
    [row] = rows((await client.get(PAGE)).text)
    assert row.startswith(f"llama-3-8b 1 KB {hashlib.sha256(raw).hexdigest()[:12]} ")
    assert "by Adam" in row
    counter = runtime_of(app).tokenizers.counter("llama-3-8b")
    assert counter is not None and counter.count("hub counts") == 2


async def test_with_htmx_the_upload_answers_with_the_list_and_a_message(client: Client, adam: User) -> None:
    response = await upload(client, "llama-3-8b", tokenizer_json(), headers={"HX-Request": "true"})

    assert response.status_code == 200
    assert 'id="tokenizers"' in response.text and "<html" not in response.text
    assert "The hub now counts the tokens of llama-3-8b itself." in text_of(response.text)
    assert [row.split()[0] for row in rows(response.text)] == ["llama-3-8b"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"<html>not it</html>", "That is not a tokenizer.json the tokenizers library can load"),
        (tokenizer_json(word_level(["hub"], unknown=False)), "This tokenizer cannot encode ordinary text"),
    ],
    ids=["not-a-tokenizer", "cannot-encode"],
)
async def test_a_bad_file_is_refused_with_a_readable_message_and_writes_nothing(
    client: Client, app: Litestar, db: AsyncSession, adam: User, raw: bytes, message: str
) -> None:
    await upload(client, "llama-3-8b", tokenizer_json())
    before = await stored(db)

    response = await upload(client, "llama-3-8b", raw)

    assert response.status_code == 400
    assert message in text_of(response.text)
    assert await stored(db) == before
    counter = runtime_of(app).tokenizers.counter("llama-3-8b")
    assert counter is not None and counter.sha256 == before[0][1]


async def test_a_tokenizer_larger_than_an_api_request_may_be_uploaded(
    client: Client, app: Litestar, adam: User
) -> None:
    raw = tokenizer_json(word_level([f"word{index}" for index in range(250_000)]))
    assert len(raw) > runtime_of(app).settings.max_body_bytes

    response = await upload(client, "big-vocab", raw)

    assert response.status_code == 303
    counter = runtime_of(app).tokenizers.counter("big-vocab")
    assert counter is not None and counter.count("word7 word249999 unseen") == 3


async def test_a_file_over_the_limit_is_refused_and_writes_nothing(
    client: Client, db: AsyncSession, adam: User
) -> None:
    response = await upload(client, "llama-3-8b", b" " * (service.MAX_BYTES + 128 * 1024))

    assert response.status_code == 413
    assert "too large" in text_of(response.text)
    assert await stored(db) == []


async def test_attaching_without_choosing_a_file_says_so(client: Client, db: AsyncSession, adam: User) -> None:
    response = await post_form(client, PAGE, PAGE, {"model": "llama-3-8b"})

    assert response.status_code == 400
    assert "Please choose a tokenizer.json file to upload." in text_of(response.text)
    assert await stored(db) == []


async def test_removing_a_tokenizer_lists_it_no_more_and_the_hub_stops_counting_with_it(
    client: Client, app: Litestar, db: AsyncSession, adam: User
) -> None:
    await upload(client, "llama-3-8b", tokenizer_json())
    await upload(client, "qwen-2.5-7b", tokenizer_json())

    removed = await post_form(client, PAGE, f"{PAGE}/remove", {"model": "llama-3-8b"}, follow_redirects=True)

    assert [row.split()[0] for row in rows(removed.text)] == ["qwen-2.5-7b"]
    assert runtime_of(app).tokenizers.counter("llama-3-8b") is None
    assert runtime_of(app).tokenizers.counter("qwen-2.5-7b") is not None


async def test_a_member_cannot_open_the_page_or_upload(client: Client, db: AsyncSession) -> None:
    await sign_in(client, db, await person(db, "mia@lab.example.org"))
    token = csrf_from((await client.get("/keys")).text)

    page = await client.get(PAGE)
    refused = await client.post(
        PAGE, data={"_csrf_token": token, "model": "m"}, files={"file": ("tokenizer.json", tokenizer_json())}
    )

    assert page.status_code == refused.status_code == 403
    assert "Only admins can do that." in text_of(refused.text)
    assert await stored(db) == []
