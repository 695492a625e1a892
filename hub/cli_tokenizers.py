"""`gpuclub tokenizer attach|detach|list`: the hub's own token count, from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hub.errors import HubError, NotFound
from hub.settings import Settings
from hub.tokenizers import service
from hub.tokenizers.counting import REFRESH_SECONDS

Runner = Any  # hub.cli._run: (settings, job) -> str


def _read(path: str) -> bytes:
    file = Path(path)
    try:
        # Checked before reading, so a wrong path to a huge file fails at once instead of filling memory.
        if file.stat().st_size > service.MAX_BYTES:
            raise HubError(f"{path} is larger than {service.MAX_BYTES // (1024 * 1024)} MB: not a tokenizer.json")
        return file.read_bytes()
    except OSError as exc:
        raise HubError(f"cannot read {path}: {exc.strerror or exc}") from None


def cmd_attach(run: Runner, settings: Settings, args: argparse.Namespace) -> str:
    raw = _read(args.path)

    async def job(db: Any) -> str:
        row = await service.attach(db, None, args.model, raw)
        return (
            f"{row.model}: tokenizer attached ({service.format_size(row.size)}, sha256 {row.sha256[:12]}); "
            f"a running hub counts with it within {REFRESH_SECONDS:g} s"
        )

    return str(run(settings, job))


def cmd_detach(run: Runner, settings: Settings, args: argparse.Namespace) -> str:
    async def job(db: Any) -> str:
        if not await service.detach(db, None, args.model):
            raise NotFound(f"{args.model} has no tokenizer")
        return f"{args.model}: tokenizer removed"

    return str(run(settings, job))


def cmd_list(run: Runner, settings: Settings, _args: argparse.Namespace) -> str:
    async def job(db: Any) -> str:
        return "\n".join(
            f"{item.model}\t{service.format_size(item.size)}\t{item.sha256[:12]}\t"
            f"{item.attached_at:%Y-%m-%d %H:%M} UTC\t{item.attached_by}"
            for item in await service.list_attached(db, None)
        )

    return str(run(settings, job))


def add_commands(commands: Any, run: Runner) -> None:
    """Register these commands on the top-level parser's subcommands."""

    def bind(func: Any) -> Any:
        return lambda settings, args: func(run, settings, args)

    tokenizer = commands.add_parser("tokenizer", help="let the hub count a model's tokens itself").add_subparsers(
        dest="action", required=True
    )
    attach = tokenizer.add_parser("attach", help="attach a Hugging Face tokenizer.json to a model name")
    attach.add_argument("model")
    attach.add_argument("path")
    attach.set_defaults(func=bind(cmd_attach))
    detach = tokenizer.add_parser("detach", help="remove a model's tokenizer")
    detach.add_argument("model")
    detach.set_defaults(func=bind(cmd_detach))
    listing = tokenizer.add_parser("list", help="model, size, sha256 prefix, when and by whom, one a line")
    listing.set_defaults(func=bind(cmd_list))
