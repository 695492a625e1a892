"""Attaching, replacing, detaching and listing tokenizers: admins only, and a bad file writes nothing."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import Role, User
from hub.errors import BadRequest, Forbidden, PayloadTooLarge
from hub.tokenizers import service
from hub.tokenizers.models import ModelTokenizer
from tests.support.people import person
from tests.tokenizers.making import byte_level_bpe, tokenizer_json, word_level


async def stored(db: AsyncSession) -> list[Any]:
    """What the table holds, as plain values."""
    return list(
        (await db.exec(select(ModelTokenizer.model, ModelTokenizer.sha256).order_by(ModelTokenizer.model))).all()
    )


@pytest.fixture
async def adam(db: AsyncSession) -> User:
    return await person(db, "adam@lab.example.org", Role.ADMIN)


async def test_an_attached_tokenizer_is_listed_with_its_size_hash_and_who_attached_it(
    db: AsyncSession, adam: User
) -> None:
    raw = tokenizer_json()

    await service.attach(db, adam, "  llama-3-8b ", raw)

    [item] = await service.list_attached(db, adam)
    assert (item.model, item.size, item.sha256) == ("llama-3-8b", len(raw), hashlib.sha256(raw).hexdigest())
    assert item.attached_by == "Adam"
    assert await service.content_of(db, "llama-3-8b") == (raw.decode(), item.sha256)


async def test_attaching_again_replaces_the_tokenizer(db: AsyncSession, adam: User) -> None:
    await service.attach(db, adam, "llama-3-8b", tokenizer_json())
    other = tokenizer_json(word_level(["hello", "world"]))

    await service.attach(db, None, "llama-3-8b", other)

    [item] = await service.list_attached(db, adam)
    assert (item.sha256, item.attached_by) == (hashlib.sha256(other).hexdigest(), "command line")


async def test_detaching_removes_only_that_models_tokenizer(db: AsyncSession, adam: User) -> None:
    await service.attach(db, adam, "llama-3-8b", tokenizer_json())
    await service.attach(db, adam, "qwen-2.5-7b", tokenizer_json())

    assert await service.detach(db, adam, "llama-3-8b")
    assert not await service.detach(db, adam, "llama-3-8b")

    assert [item.model for item in await service.list_attached(db, adam)] == ["qwen-2.5-7b"]
    assert await service.fingerprints(db) == {"qwen-2.5-7b": hashlib.sha256(tokenizer_json()).hexdigest()}


async def test_a_member_can_neither_attach_detach_nor_list(db: AsyncSession, adam: User) -> None:
    mia = await person(db, "mia@lab.example.org")
    await service.attach(db, adam, "llama-3-8b", tokenizer_json())
    before = await stored(db)

    with pytest.raises(Forbidden):
        await service.attach(db, mia, "qwen-2.5-7b", tokenizer_json())
    with pytest.raises(Forbidden):
        await service.detach(db, mia, "llama-3-8b")
    with pytest.raises(Forbidden):
        await service.list_attached(db, mia)

    assert await stored(db) == before


@pytest.mark.parametrize(
    ("raw", "error", "message"),
    [
        (b"", BadRequest, "The tokenizer file is empty"),
        (b"\xff\xfe\x00 not text", BadRequest, "it is not UTF-8 text"),
        (b"<html>a web page</html>", BadRequest, "not a tokenizer.json the tokenizers library can load"),
        (b'{"version": "1.0", "model": {"type": "Nope"}}', BadRequest, "the tokenizers library can load"),
        (tokenizer_json(word_level(["hello"], unknown=False)), BadRequest, "cannot encode ordinary text"),
        (b" " * (service.MAX_BYTES + 1), PayloadTooLarge, "at most 40 MB"),
    ],
    ids=["empty", "binary", "html", "unknown-model", "no-unknown-token", "too-large"],
)
async def test_a_bad_file_is_refused_with_a_reason_and_writes_nothing(
    db: AsyncSession, adam: User, raw: bytes, error: type[Exception], message: str
) -> None:
    await service.attach(db, adam, "llama-3-8b", tokenizer_json())
    before = await stored(db)

    with pytest.raises(error, match=message):
        await service.attach(db, adam, "llama-3-8b", raw)

    assert await stored(db) == before


async def test_a_model_name_is_required(db: AsyncSession, adam: User) -> None:
    with pytest.raises(BadRequest, match="Please give a model name"):
        await service.attach(db, adam, "  ", tokenizer_json(byte_level_bpe()))

    assert await stored(db) == []
