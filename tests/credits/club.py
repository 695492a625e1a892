"""Money and usage for the credits tests, written the way the hub writes them: ledger services and usage rows."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts.models import User
from hub.db import utcnow
from hub.ledger import service as ledger
from hub.ledger.batch import Charge, settle_many
from hub.usage.models import UsageRecord

CREDIT = 1_000_000


async def used(
    db: AsyncSession,
    user: User,
    *,
    model: str = "llama-3-8b",
    prompt: int = 100,
    completion: int = 50,
    key_id: int | None = None,
    agent_id: int | None = None,
    at: datetime | None = None,
    endpoint: str = "chat/completions",
    audio_ms: int | None = None,
    cost: int = 0,
    earned: int = 0,
) -> None:
    """One request in the usage table, as the proxy records it after answering (with what it cost the member and
    what the GPU's owner earned: the ledger's transaction for it is `charged`)."""
    db.add(
        UsageRecord(
            request_id=uuid.uuid4().hex,
            user_id=user.pk,
            key_id=key_id,
            agent_id=agent_id,
            model=model,
            endpoint=endpoint,
            status=200,
            prompt_tokens=prompt,
            completion_tokens=completion,
            audio_ms=audio_ms,
            duration_ms=120,
            cost=cost,
            earned=earned,
            created_at=at or utcnow(),
        )
    )
    await db.commit()


async def charged(
    db: AsyncSession, consumer: User, provider: User, cost: int, *, model: str = "llama-3-8b", fee_bps: int = 0
) -> int:
    """Settle one request the way admission does: the consumer pays, the provider earns, the club keeps its fee."""
    before = (await ledger.balance_of(db, consumer.pk)).balance
    charge = Charge(uuid.uuid4().hex, consumer.pk, provider.pk, cost, fee_bps, memo=model)
    after = (await settle_many(db, [charge]))[consumer.pk]
    await db.commit()
    return before - after
