"""`gpuclub tokenizer attach|list|detach`: results on stdout; a bad file is one line on stderr and writes nothing."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.tokenizers.models import ModelTokenizer
from tests.support.hub import cli, hub_env
from tests.tokenizers.making import tokenizer_json, word_level


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> dict[str, str]:
    return hub_env(tmp_path, port=8000, database_url=database_url)


def fails(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0 and result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    return line


def saved(tmp_path: Path, raw: bytes) -> str:
    path = tmp_path / "tokenizer.json"
    path.write_bytes(raw)
    return str(path)


async def test_attach_list_and_detach(env: dict[str, str], tmp_path: Path, db: AsyncSession) -> None:
    raw = tokenizer_json()
    digest = hashlib.sha256(raw).hexdigest()

    attached = cli(env, "tokenizer", "attach", "llama-3-8b", saved(tmp_path, raw))
    listed = cli(env, "tokenizer", "list")

    assert attached.returncode == 0, attached.stderr
    assert attached.stdout.startswith("llama-3-8b: tokenizer attached (")
    assert f"sha256 {digest[:12]}" in attached.stdout
    [line] = listed.stdout.splitlines()
    model, size, prefix, when, by = line.split("\t")
    assert (model, prefix, by) == ("llama-3-8b", digest[:12], "command line")
    assert size.endswith("KB") and when.endswith("UTC")
    assert (await db.exec(select(ModelTokenizer.sha256))).all() == [digest]

    detached = cli(env, "tokenizer", "detach", "llama-3-8b")

    assert detached.stdout == "llama-3-8b: tokenizer removed\n"
    assert cli(env, "tokenizer", "list").stdout == ""
    assert "llama-3-8b has no tokenizer" in fails(cli(env, "tokenizer", "detach", "llama-3-8b"))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"not json", "That is not a tokenizer.json the tokenizers library can load"),
        (tokenizer_json(word_level(["hub"], unknown=False)), "This tokenizer cannot encode ordinary text"),
        (b"", "The tokenizer file is empty"),
    ],
    ids=["not-json", "cannot-encode", "empty"],
)
async def test_a_bad_file_fails_with_one_line_and_writes_nothing(
    env: dict[str, str], tmp_path: Path, db: AsyncSession, raw: bytes, message: str
) -> None:
    assert message in fails(cli(env, "tokenizer", "attach", "llama-3-8b", saved(tmp_path, raw)))

    assert (await db.exec(select(ModelTokenizer.model))).all() == []


def test_a_missing_file_fails_with_one_line(env: dict[str, str], tmp_path: Path) -> None:
    line = fails(cli(env, "tokenizer", "attach", "llama-3-8b", str(tmp_path / "nowhere.json")))

    assert line == f"gpuclub: cannot read {tmp_path / 'nowhere.json'}: No such file or directory"
