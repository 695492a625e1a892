"""`make demo`: the whole flow on one machine — a hub, a demo model server and one agent sharing it.

The model server is the test-suite's fake OpenAI-compatible server (it answers "tok0 tok1 …"), so nothing is
downloaded. Stop everything with Ctrl+C.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from hub.accounts import service as accounts
from hub.accounts.models import Role
from hub.agents import service as agents
from hub.db import Database
from hub.keys import service as keys
from hub.migrate import upgrade
from hub.settings import Settings
from tests.support.fake_upstream import fake_upstream
from tests.support.hub import GPUCLUB
from tests.support.processes import run

ROOT = Path(__file__).resolve().parents[2]
EMAIL = "demo@example.org"


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
            _, key = await keys.create_key(db, user, name="demo")
            for old in await agents.list_agents(db, user):  # one demo GPU, not one more per start
                await agents.revoke(db, user, old.pk)
            _, token = await agents.create_agent(db, user, name="demo-gpu")
            link = await accounts.create_login_link(db, user, minutes=60)
            return key, token, settings.url(f"/login/{link}")
    finally:
        await database.dispose()


def main() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCLUB_")}
    env.update(GPUCLUB_DATA_DIR=str(ROOT / "data" / "demo"), GPUCLUB_CLUB_NAME="gpuclub demo")
    settings = Settings.from_env(env)
    upgrade(settings.database_url)
    key, token, link = asyncio.run(provision(settings))
    with (
        fake_upstream(["demo-llama-3-8b", "demo-embed"]) as upstream,
        run([GPUCLUB, "serve"], env=env, cwd=ROOT) as hub,
    ):
        hub.wait_for(r"Uvicorn running on")
        agent_env = {
            **env,
            "GPUCLUB_AGENT_TOKEN": token,
            "GPUCLUB_JOURNAL": str(ROOT / "data" / "demo" / "bills.jsonl"),
        }
        command = [str(Path(sys.executable).parent / "gpuclub-agent"), "--hub", settings.public_url]
        with run([*command, "--upstream", f"{upstream.url}/v1", "--name", "demo-gpu"], env=agent_env) as agent:
            agent.wait_for(r"connected to the hub")
            print(
                f"""
gpuclub demo is running: a hub, a demo model server and one agent sharing it.

  Open {link}
  (signs you in as {EMAIL}, the owner; then look at My GPUs, Models and your dashboard)

  Call the API with the demo key:

    curl {settings.public_url}/v1/chat/completions -H "Authorization: Bearer {key}" \\
      -H "Content-Type: application/json" \\
      -d '{{"model": "demo-llama-3-8b", "messages": [{{"role": "user", "content": "hello"}}]}}'

Press Ctrl+C to stop.""",
                flush=True,
            )
            signal.sigwait({signal.SIGINT, signal.SIGTERM})  # blocked below, so they arrive here, not as exceptions
    print("demo stopped")


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    main()
