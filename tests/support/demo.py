"""`make demo`: the whole flow on one machine — a hub, a demo model server and one agent sharing it.

The model server is the test-suite's fake OpenAI-compatible server (it answers "tok0 tok1 …"), so nothing is
downloaded. Stop everything with Ctrl+C.

The hub listens on GPUCLUB_HOST:GPUCLUB_PORT (default 127.0.0.1:8000) and keeps its data in GPUCLUB_DATA_DIR
(default ./data/demo); no other GPUCLUB_ variable of the shell is used. The model server takes a free port only
after the hub has its own, so the two never collide. On its first start the demo also seeds a second member, a
price for the demo model, the club fee and a few days of requests (their usage rows and ledger transactions,
written by the hub's own recorder), so every page has something to show.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import sys
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import bindparam, update
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from hub.accounts.models import Role, User
from hub.agents import service as agents
from hub.db import Database, utcnow
from hub.errors import ConfigError
from hub.keys import service as keys
from hub.ledger.batch import Charge
from hub.ledger.grants import grant
from hub.ledger.models import MICRO, LedgerTransaction
from hub.ledger.purses import Purses
from hub.migrate import upgrade
from hub.pricing import service as pricing
from hub.proxy.recorder import Finished, Recorder
from hub.settings import Settings
from tests.support.fake_upstream import fake_upstream
from tests.support.hub import GPUCLUB
from tests.support.processes import run

ROOT = Path(__file__).resolve().parents[2]
EMAIL = "demo@example.org"
MEMBER = "sam@example.org"  # the second member, who uses the owner's GPU and pays for it
MODEL, EMBED = "demo-llama-3-8b", "demo-embed"
PRICE = (100, 300)  # credits per million input and output tokens
FEE_BPS = 1000  # the club keeps 10% of what the GPU's owner earns
STARTING_CREDITS = 50
HISTORY_DAYS = 5
PASSED_ON = ("GPUCLUB_HOST", "GPUCLUB_PORT", "GPUCLUB_DATA_DIR", "GPUCLUB_PUBLIC_URL")


def demo_env(environ: dict[str, str]) -> dict[str, str]:
    """The demo's environment: the shell's, without its GPUCLUB_ settings except where to listen and keep data."""
    env = {k: v for k, v in environ.items() if not k.startswith("GPUCLUB_")}
    env.update({name: environ[name] for name in PASSED_ON if environ.get(name, "").strip()})
    env.setdefault("GPUCLUB_DATA_DIR", str(ROOT / "data" / "demo"))
    env["GPUCLUB_CLUB_NAME"] = "gpuclub demo"
    if "GPUCLUB_PUBLIC_URL" not in env:
        host = env.get("GPUCLUB_HOST", "127.0.0.1")
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else f"[{host}]" if ":" in host else host
        env["GPUCLUB_PUBLIC_URL"] = f"http://{shown}:{env.get('GPUCLUB_PORT', '8000')}"
    return env


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


async def provision(settings: Settings) -> tuple[str, str, str]:
    """The demo owner, an API key, an agent token and a sign-in link (new ones at every start)."""
    database = Database(settings.database_url)
    try:
        async with database.session() as db:
            user = await accounts.find_by_email(db, EMAIL) or await accounts.add_member(
                db, EMAIL, role=Role.OWNER, name="Demo owner"
            )
            for old_key in await keys.list_keys(db, user):  # likewise one demo key
                await keys.revoke(db, user, old_key.id or 0)
            demo_key, key = await keys.create_key(db, user, name="demo")
            for old in await agents.list_agents(db, user):  # one demo GPU, not one more per start
                await agents.revoke(db, user, old.pk)
            agent, token = await agents.create_agent(db, user, name="demo-gpu")
            link = await accounts.create_login_link(db, user, minutes=60)
            url = settings.url(f"/login/{link}")
            if await accounts.find_by_email(db, MEMBER) is None:  # the first start
                await seed(database, db, user, agent.pk, demo_key.id)
            return key, token, url
    finally:
        await database.dispose()


async def seed(database: Database, db: AsyncSession, owner: User, agent_id: int, owner_key: int | None) -> None:
    """A second member with credits and a key, a price, the fee, and a few days of requests on the demo GPU."""
    now = utcnow()
    started = now - timedelta(days=HISTORY_DAYS + 1)
    sam = await accounts.add_member(db, MEMBER, role=Role.MEMBER, name="Sam (demo member)")
    sam_key, _ = await keys.create_key(db, sam, name="sam's laptop")
    await pricing.set_price(db, None, MODEL, input_micro=PRICE[0] * MICRO, output_micro=PRICE[1] * MICRO)
    await pricing.set_fee(db, None, FEE_BPS)
    welcome = await grant(db, None, sam, STARTING_CREDITS * MICRO, reason="demo starting credits", key="demo:sam")
    rate = await pricing.rate_for(db, MODEL)
    await db.commit()  # hold no snapshot while the recorder writes in its own sessions
    rng = random.Random(12)  # the same history at every fresh demo
    recorder = Recorder(database, Purses(database, hold_seconds=60))
    when: dict[str, datetime] = {}
    for days_ago in range(HISTORY_DAYS, -1, -1):
        for user, key_id, count in ((sam, sam_key.id, rng.randint(6, 14)), (owner, owner_key, rng.randint(2, 5))):
            for _ in range(count):
                request_id = uuid.uuid4().hex
                at = now - timedelta(days=days_ago, hours=rng.uniform(0, 10 if days_ago else 0.5))
                model = MODEL if rng.random() < 0.85 else EMBED
                prompt, completion = rng.randint(12, 400), (rng.randint(20, 600) if model == MODEL else 0)
                cost = rate.cost(prompt, completion) if model == MODEL else 0
                usage = {
                    "request_id": request_id,
                    "user_id": user.pk,
                    "key_id": key_id,
                    "agent_id": agent_id,
                    "model": model,
                    "endpoint": "chat/completions" if model == MODEL else "embeddings",
                    "stream": model == MODEL and rng.random() < 0.5,
                    "status": 200,
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "ttft_ms": rng.randint(40, 400),
                    "duration_ms": rng.randint(300, 6000),
                    "created_at": at,
                }
                charge = Charge(request_id, user.pk, owner.pk, cost, FEE_BPS, memo=f"{model}: demo history")
                recorder.add(Finished(charge, usage, replayed=True))  # replayed: nothing was held for it
                when[f"request:{request_id}"] = at
    await recorder.stop()  # writes everything queued, through the same code as real requests
    # The recorder posts at the time it writes; date each transaction as its request, the grant before them all.
    if welcome is not None:
        when[welcome.key] = started
    table = LedgerTransaction.__table__  # type: ignore[attr-defined]
    dated = update(table).where(table.c.key == bindparam("k")).values(created_at=bindparam("at"))
    await db.exec(dated, params=[{"k": k, "at": at} for k, at in when.items()])
    await db.commit()


def main() -> None:
    env = demo_env(dict(os.environ))
    settings = Settings.from_env(env)
    if not port_is_free(settings.host, settings.port):
        raise SystemExit(
            f"Port {settings.port} on {settings.host} is in use (another hub?). "
            "Choose another one: GPUCLUB_PORT=8010 make demo"
        )
    upgrade(settings.database_url)
    key, token, link = asyncio.run(provision(settings))
    data_dir = Path(env["GPUCLUB_DATA_DIR"])
    with run([GPUCLUB, "serve"], env=env, cwd=ROOT) as hub:
        hub.wait_for(r"Uvicorn running on")
        # Started after the hub holds its port: the model server's free port cannot be the hub's.
        with fake_upstream([MODEL, EMBED]) as upstream:
            agent_env = {**env, "GPUCLUB_AGENT_TOKEN": token, "GPUCLUB_JOURNAL": str(data_dir / "bills.jsonl")}
            command = [str(Path(sys.executable).parent / "gpuclub-agent"), "--hub", settings.public_url]
            with run([*command, "--upstream", f"{upstream.url}/v1", "--name", "demo-gpu"], env=agent_env) as agent:
                agent.wait_for(r"connected to the hub")
                print(
                    f"""
gpuclub demo is running: a hub on {settings.public_url}, a demo model server on {upstream.url} and one agent
sharing it. {MEMBER} is a second member with a few days of history.

  Open {link}
  (signs you in as {EMAIL}, the owner; then look at My GPUs, Models, Credits and Admin)

  Call the API with the demo key:

    curl {settings.public_url}/v1/chat/completions -H "Authorization: Bearer {key}" \\
      -H "Content-Type: application/json" \\
      -d '{{"model": "{MODEL}", "messages": [{{"role": "user", "content": "hello"}}]}}'

Press Ctrl+C to stop.""",
                    flush=True,
                )
                signal.pause()  # until Ctrl+C or SIGTERM: `stop_on_signals` unwinds from here, stopping all three


def stop_on_signals() -> None:
    """Ctrl+C and SIGTERM (`make` passes it on) stop the demo cleanly, once: a second one cannot cut the clean-up
    short. Handlers, not a blocked signal mask, because the processes started here inherit a mask and would then
    ignore the SIGTERM that stops them."""

    def stop(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


if __name__ == "__main__":
    stop_on_signals()
    try:
        main()
    except KeyboardInterrupt:
        print("demo stopped", flush=True)
    except ConfigError as exc:
        raise SystemExit(f"gpuclub demo: {exc}") from None
