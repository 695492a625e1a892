"""`gpuclub`: the operator's command line. Each command prints just its result; errors are one line on stderr."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from hub.accounts import service as accounts
from hub.accounts.models import Role, User
from hub.agents import service as agents
from hub.agents.disputes import clear_pause
from hub.cli_credits import add_commands
from hub.cli_tokenizers import add_commands as add_tokenizer_commands
from hub.db import Database
from hub.errors import HubError
from hub.files import guard_data_dir
from hub.invitations import service as invitations
from hub.keys import service as keys
from hub.keys.trust import Trust
from hub.parsing import normalize_email, parse_count, parse_credits, parse_duration
from hub.runtime import runtime_of
from hub.settings import Settings
from hub.signin import links

OWNER_LINK_MINUTES = 24 * 60


def _run(settings: Settings, job: Callable[[Any], Awaitable[str]]) -> str:
    async def main() -> str:
        database = Database(settings.database_url)
        try:
            async with database.session() as db:
                return await job(db)
        finally:
            await database.dispose()

    return asyncio.run(main())


def cmd_migrate(settings: Settings, _args: argparse.Namespace) -> str:
    from hub.migrate import upgrade

    upgrade(settings.database_url)
    return "database is up to date"


def cmd_serve(settings: Settings, args: argparse.Namespace) -> str:
    import uvicorn

    from hub.app import create_app
    from hub.drain import Drain
    from hub.logs import uvicorn_log_config
    from hub.migrate import pending

    if pending(settings.database_url):
        raise HubError("the database is not up to date: run `gpuclub migrate` first")

    async def owner_link(db: Any) -> str:
        if await accounts.has_owner(db):
            return ""
        token = await accounts.create_login_link(db, None, minutes=OWNER_LINK_MINUTES)
        return settings.url(f"/setup/{token}")

    link = _run(settings, owner_link)
    if link:
        print(f"No owner yet. Open this one-time link within 24 hours to become the owner:\n\n    {link}\n", flush=True)
    host, port = args.host or settings.host, args.port or settings.port
    print(f"gpuclub is listening on http://{host}:{port}", flush=True)
    app = create_app(settings)
    drain: Drain = runtime_of(app).drain

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            # Before uvicorn closes every connection (the tunnels too), let what is in flight finish.
            await drain.run(lambda: self.force_exit)
            await super().shutdown(sockets)

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=uvicorn_log_config(settings.log_level),
        proxy_headers=True,
        forwarded_allow_ips=settings.trusted_proxies,  # forwarded headers from these addresses only
        timeout_graceful_shutdown=5,  # the drain already waited; this bounds the last page loads
    )
    server = Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        raise HubError(f"gpuclub could not listen on {host}:{port}")
    return ""


def cmd_member_add(settings: Settings, args: argparse.Namespace) -> str:
    role = accounts.parse_role(args.role)

    async def job(db: Any) -> str:
        user = await accounts.add_member(db, args.email, role=role, name=args.name or "")
        return user.email

    return _run(settings, job)


async def _active_member(db: Any, email: str) -> User:
    user = await accounts.get_member(db, email)
    if not user.is_active:
        raise HubError(f"{user.email} is suspended")
    return user


def cmd_key_create(settings: Settings, args: argparse.Namespace) -> str:
    async def job(db: Any) -> str:
        user = await _active_member(db, args.email)
        trust = Trust.OWN if args.only_own else Trust.VERIFIED if args.verified_only else Trust.ANY
        if args.trust:
            trust = Trust.TRUSTED
        _, secret = await keys.create_key(db, user, name=args.name, trust=trust, trusted=args.trust or ())
        return secret

    return _run(settings, job)


def cmd_login_link(settings: Settings, args: argparse.Namespace) -> str:
    email = normalize_email(args.email)

    async def job(db: Any) -> str:
        # A member's link, or for someone invited (`invite create --email`) one that makes them a member.
        token = await links.link_for_cli(db, email, minutes=settings.login_link_minutes)
        return settings.url(f"/login/{token}")

    return _run(settings, job)


def cmd_agent_token_create(settings: Settings, args: argparse.Namespace) -> str:
    async def job(db: Any) -> str:
        user = await _active_member(db, args.email)
        _, token = await agents.create_agent(db, user, name=args.name)
        return token

    return _run(settings, job)


def cmd_agent_clear(settings: Settings, args: argparse.Namespace) -> str:
    agent_id = parse_count(args.id, what="agent id", high=2**31 - 1)

    async def job(db: Any) -> str:
        agent = await clear_pause(db, None, agent_id)
        # This process cannot reach a running hub's memory: its live tunnel stays paused until it reconnects.
        return f"{agent.name} is no longer paused by the hub (a running hub applies this when the agent reconnects)"

    return _run(settings, job)


def cmd_backup(settings: Settings, args: argparse.Namespace) -> str:
    from hub.backup import backup

    return backup(settings, Path(args.directory))


def cmd_invite_create(settings: Settings, args: argparse.Namespace) -> str:
    role = accounts.parse_role(args.role)
    uses = parse_count(args.uses, what="number of uses", high=10_000)
    expires = None if args.expires == "never" else parse_duration(args.expires, what="expiry")
    credits = parse_credits(args.credits, what="starting credits", allow_zero=True)

    async def job(db: Any) -> str:
        _, token = await invitations.create_invitation(
            db,
            None,
            role=role,
            max_uses=uses,
            expires_in=expires,
            note=args.note or "",
            credits=credits,
            email=args.email or "",
        )
        return settings.url(f"/invite/{token}")

    return _run(settings, job)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="gpuclub", description="Run and administer a gpuclub hub.")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="start the hub")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=cmd_serve)
    commands.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    saved = commands.add_parser("backup", help="copy the database and the secret key into a new directory")
    saved.add_argument("directory")
    saved.set_defaults(func=cmd_backup)

    member = commands.add_parser("member", help="manage members").add_subparsers(dest="action", required=True)
    add = member.add_parser("add", help="add a member by email")
    add.add_argument("email")
    add.add_argument("--role", default="member", choices=[r.value for r in Role])
    add.add_argument("--name")
    add.set_defaults(func=cmd_member_add)

    key = commands.add_parser("key", help="manage API keys").add_subparsers(dest="action", required=True)
    create = key.add_parser("create", help="create an API key and print it")
    create.add_argument("email")
    create.add_argument("--name", default="command line")
    scope = create.add_mutually_exclusive_group()  # whose GPUs may see the key's prompts; default: any GPU
    scope.add_argument("--only-own", action="store_true", help="only the member's own GPUs")
    scope.add_argument(
        "--trust",
        action="append",
        metavar="EMAIL",
        help="also the GPUs of this member (repeat for several); the member's own GPUs are always included",
    )
    scope.add_argument(
        "--verified-only", action="store_true", help="only the member's own GPUs and agents an admin verified"
    )
    create.set_defaults(func=cmd_key_create)

    link = commands.add_parser(
        "login-link", help="print a one-time, short-lived sign-in URL for a member or someone invited by email"
    )
    link.add_argument("email")
    link.set_defaults(func=cmd_login_link)

    agent = commands.add_parser("agent-token", help="manage agent tokens").add_subparsers(dest="action", required=True)
    token = agent.add_parser("create", help="create an agent token for a member's GPU and print it")
    token.add_argument("email")
    token.add_argument("--name", required=True, help="the GPU machine's name, e.g. desk-4090")
    token.set_defaults(func=cmd_agent_token_create)

    agent_cmd = commands.add_parser("agent", help="manage agents").add_subparsers(dest="action", required=True)
    clear = agent_cmd.add_parser("clear", help="resume an agent the hub paused for repeated disputes")
    clear.add_argument("id", help="the agent's id, shown on Admin → Usage")
    clear.set_defaults(func=cmd_agent_clear)

    add_commands(commands, _run)
    add_tokenizer_commands(commands, _run)

    invite = commands.add_parser("invite", help="manage invitations").add_subparsers(dest="action", required=True)
    new = invite.add_parser("create", help="create an invitation and print its URL")
    new.add_argument("--role", default="member", choices=["member", "admin"])
    new.add_argument("--uses", default="1")
    new.add_argument("--expires", default="7d", help="30m, 12h, 7d, 2w or never")
    new.add_argument("--note")
    new.add_argument("--credits", default="0", help="starting credits for each newcomer")
    new.add_argument("--email", help="for this person only; `gpuclub login-link EMAIL` then makes their sign-in link")
    new.set_defaults(func=cmd_invite_create)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        guard_data_dir(settings.data_dir)
        result = args.func(settings, args)
    except HubError as exc:
        print(f"gpuclub: {exc.message}", file=sys.stderr)
        return 1
    except (OSError, SQLAlchemyError) as exc:
        print(f"gpuclub: cannot reach the database: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if result:
        print(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
