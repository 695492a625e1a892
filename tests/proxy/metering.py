"""A club for the tests of the newer APIs: one hub, one agent with two fake servers, prices that make counting easy.

One server (`full`) speaks every API; the other (`partial`) only the older three and Anthropic's Messages, like a
server without the Responses API. Prices make one token, and one second of audio, cost one credit, so a member's
balance says exactly what was billed.
"""

from __future__ import annotations

import io
import json
import re
import time
import wave
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from hub.ledger import service as ledger
from hub.ledger.grants import grant
from hub.parsing import format_credits
from hub.pricing import service as pricing
from tests.proxy.conftest import proxy_hub
from tests.support.cluster import Member, agent_process, agent_token, member, provision, signed_in
from tests.support.fake_upstream import RunningFake, fake_upstream
from tests.support.hub import LiveHub

CREDIT = 1_000_000
PER_TOKEN = CREDIT * 1_000_000  # a price per million tokens that makes one token cost one credit
PER_SECOND = CREDIT * 60  # a price per audio minute that makes one second cost one credit
START = 100_000  # credits each member starts with
MAX_BODY = 64 * 1024  # the hub's body limit here: small, so a body over it is cheap to send
MODELS = ["m", "whisper", "org/tiny"]  # served by `full`; "org/tiny" has a slash, like Hugging Face names
PARTIAL = "chat-only"  # served by `partial`, which lacks the Responses API (and rerank, and audio)
PARTIAL_APIS = "apis=messages"


@dataclass
class Club:
    hub: LiveHub
    full: RunningFake
    partial: RunningFake
    provider: Member


@contextmanager
def open_club(data: Path) -> Iterator[Club]:
    with (
        proxy_hub(data, GPUCLUB_MAX_BODY_BYTES=str(MAX_BODY), GPUCLUB_UPSTREAM_TIMEOUT="5") as hub,
        fake_upstream(MODELS) as full,
        fake_upstream([PARTIAL], PARTIAL_APIS) as partial,
    ):
        provider = member(hub, "provider@lab.example.org")

        async def prices(db: AsyncSession) -> None:
            for model in [*MODELS, PARTIAL]:
                await pricing.set_price(
                    db, None, model, input_micro=PER_TOKEN, output_micro=PER_TOKEN, audio_micro=PER_SECOND
                )

        provision(hub, prices)
        token = agent_token(hub, provider.email, "gpu")
        with agent_process(hub, token, f"{full.url}/v1", f"{partial.url}/v1"):
            yield Club(hub, full, partial, provider)


def consumer(club: Club, email: str) -> Member:
    """A member with START credits and a key."""
    who = member(club.hub, email)

    async def fund(db: AsyncSession) -> None:
        await grant(db, None, await accounts.get_member(db, email), START * CREDIT, reason="test")

    provision(club.hub, fund)
    return who


def rows(club: Club, who: Member, count: int) -> list[dict[str, Any]]:
    """The member's usage rows, once `count` of them are written (they are written just after the answer)."""

    async def read(db: AsyncSession) -> list[dict[str, Any]]:
        user = await accounts.get_member(db, who.email)
        query = text("SELECT * FROM usage WHERE user_id = :user ORDER BY id")
        found = [dict(row._mapping) for row in (await db.exec(query, params={"user": user.pk}))]  # type: ignore[call-overload]
        for row in found:  # SQLite gives booleans back as 0 and 1
            row.update({name: bool(row[name]) for name in ("disputed", "estimated", "stream")})
        return found

    deadline = time.monotonic() + 10
    while len(found := provision(club.hub, read)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def balance(club: Club, who: Member) -> float:
    """The member's balance in credits (what is still held counts as spent)."""

    async def read(db: AsyncSession) -> float:
        account = await ledger.balance_of(db, (await accounts.get_member(db, who.email)).pk)
        return (account.balance - account.held) / CREDIT

    return provision(club.hub, read)


def on_hold(club: Club, who: Member) -> str:
    """What the member's Credits page says is on hold for requests in flight."""
    with signed_in(club.hub, who.email) as browser:
        found = re.search(r"<span data-held>([^<]*)</span>", browser.get("/credits").text)
    assert found, "the Credits page shows no amount on hold"
    return found.group(1).strip()


def assert_nothing_changed(club: Club, who: Member, *, recorded: Sequence[str] = ()) -> None:
    """Nothing held, nothing charged, nothing recorded but the `recorded` endpoints' rows. A billed chat request
    after the refused one is the marker: once its row is written, a row or charge of the refused one would be too."""
    assert on_hold(club, who) == format_credits(0)
    headers = {"Authorization": f"Bearer {who.key}"}
    body = {"model": "m", "messages": [{"role": "user", "content": "marker"}], "max_tokens": 1}
    marker = httpx.post(f"{club.hub.url}/v1/chat/completions", headers=headers, json=body, timeout=30)
    assert marker.status_code == 200, marker.text
    # A request the hub refused is logged too (docs/logs.md), with an error code and no cost: it changed nothing.
    deadline = time.monotonic() + 10
    while len(found := [r for r in rows(club, who, len(recorded) + 1) if not r["code"]]) <= len(recorded):
        assert time.monotonic() < deadline, "the marker's usage row was not written"
        time.sleep(0.05)
    assert all(row["cost"] == 0 for row in rows(club, who, 0) if row["code"])
    assert [row["endpoint"] for row in found] == [*recorded, "chat/completions"]
    assert balance(club, who) == START - found[-1]["prompt_tokens"] - found[-1]["completion_tokens"]


def sse_events(body: bytes) -> list[bytes]:
    """A stream's events, as sent: each `event:`/`data:` block without the blank line that ends it."""
    return [event for event in re.split(rb"\r?\n\r?\n", body) if event.strip()]


def event_payloads(body: bytes) -> list[dict[str, Any]]:
    """The JSON of each event's `data:` line."""
    found = []
    for event in sse_events(body):
        for line in event.splitlines():
            if line.startswith(b"data: {"):
                found.append(json.loads(line[6:]))
    return found


def wav(seconds: int, rate: int = 8000) -> bytes:
    """A silent mono 16-bit WAV of that many seconds."""
    out = io.BytesIO()
    with wave.open(out, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(rate)
        audio.writeframes(b"\0\0" * rate * seconds)
    return out.getvalue()
