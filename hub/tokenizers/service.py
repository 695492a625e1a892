"""Attaching a tokenizer to a model name, detaching it, listing them: admins only, and a bad file writes nothing."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.orm import defer
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from tokenizers import Tokenizer

from hub.accounts.models import User
from hub.accounts.service import require_admin
from hub.db import utcnow
from hub.errors import BadRequest, PayloadTooLarge
from hub.parsing import clean_text
from hub.tokenizers.models import ModelTokenizer

# Common tokenizer.json files are a few MB (Llama 3: 9 MB, Qwen 2.5: 7 MB) and Gemma 3's is 33 MB; past 40 MB it is
# more likely a mistake than a tokenizer, and every hub process keeps each one loaded.
MAX_BYTES = 40 * 1024 * 1024

# Text a tokenizer must encode before it is accepted: a vocabulary without an unknown token fails on words it lacks,
# and that should be found now, not when a request is being settled.
_PROBE = "Hello, world! 42 naïve café 東京 😀 \n\tdef f(x): return x**2"


@dataclass(frozen=True)
class Attached:
    """A tokenizer as the admin page lists it (without its content)."""

    model: str
    sha256: str
    size: int
    attached_at: datetime
    attached_by: str  # a member's name, or "command line"


def format_size(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB" if size >= 1024 * 1024 else f"{max(size // 1024, 1)} KB"


def parse(raw: bytes) -> tuple[str, Tokenizer]:
    """The file's text and the tokenizer it holds, or a BadRequest that says what is wrong with it."""
    if not raw:
        raise BadRequest("The tokenizer file is empty: choose a tokenizer.json file.")
    if len(raw) > MAX_BYTES:
        raise PayloadTooLarge(f"A tokenizer file must be at most {MAX_BYTES // (1024 * 1024)} MB.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest("That is not a tokenizer.json file: it is not UTF-8 text.") from None
    # The tokenizers library raises a bare Exception for any malformed file; its first line says what it lacked.
    try:
        tokenizer = Tokenizer.from_str(text)
    except Exception as exc:  # noqa: BLE001
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadRequest(f"That is not a tokenizer.json the tokenizers library can load ({reason}).") from None
    try:
        tokenizer.encode(_PROBE, add_special_tokens=False)
    except Exception as exc:  # noqa: BLE001
        raise BadRequest(f"This tokenizer cannot encode ordinary text ({str(exc).splitlines()[0]}).") from None
    return text, tokenizer


async def attach(db: AsyncSession, actor: User | None, model: str, raw: bytes) -> ModelTokenizer:
    """Attach (or replace) the tokenizer of `model`. `actor` None is the operator at the command line."""
    if actor is not None:
        require_admin(actor)
    model = clean_text(model, what="model name", max_length=200, required=True)
    # Loading a large file takes a while (about 40 ms per MB, holding the GIL); a thread at least lets other work
    # interleave between the parse and the probe.
    text, _ = await asyncio.to_thread(parse, raw)
    row = await db.get(ModelTokenizer, model) or ModelTokenizer(model=model, content="", sha256="", size=0)
    row.content, row.sha256, row.size = text, hashlib.sha256(raw).hexdigest(), len(raw)
    row.attached_by, row.attached_at = actor.id if actor else None, utcnow()
    db.add(row)
    await db.commit()
    return row


async def detach(db: AsyncSession, actor: User | None, model: str) -> bool:
    """Detach the tokenizer of `model`; False when it had none."""
    if actor is not None:
        require_admin(actor)
    result = await db.exec(delete(ModelTokenizer).where(col(ModelTokenizer.model) == model.strip()))
    await db.commit()
    return bool(result.rowcount)


async def list_attached(db: AsyncSession, actor: User | None) -> list[Attached]:
    if actor is not None:
        require_admin(actor)
    query = (
        select(ModelTokenizer, User)
        .outerjoin(User, col(User.id) == col(ModelTokenizer.attached_by))
        .options(defer(ModelTokenizer.content))  # type: ignore[arg-type]  # megabytes each: not for a list
        .order_by(col(ModelTokenizer.model))
    )
    return [
        Attached(row.model, row.sha256, row.size, row.attached_at, user.display_name if user else "command line")
        for row, user in (await db.exec(query)).all()
    ]


async def fingerprints(db: AsyncSession) -> dict[str, str]:
    """Each model's tokenizer hash: a small read that tells a hub process which tokenizers to (re)load."""
    rows = (await db.exec(select(ModelTokenizer.model, ModelTokenizer.sha256))).all()
    return dict(rows)


async def content_of(db: AsyncSession, model: str) -> tuple[str, str] | None:
    """The tokenizer.json text of `model` and its hash, or None once detached."""
    query = select(ModelTokenizer.content, ModelTokenizer.sha256).where(ModelTokenizer.model == model)
    row = (await db.exec(query)).first()
    return (row[0], row[1]) if row is not None else None
