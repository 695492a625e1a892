"""`gpuclub` reads the data directory's gpuclub.env like the server does, so its links are on the right URL."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sqlmodel import select

from hub.accounts.models import User
from hub.app import create_app
from hub.db import Database
from hub.ledger import service as ledger
from hub.settings import Settings
from tests.conftest import browser_for
from tests.support.hub import cli

PUBLIC = "https://gpus.lab.example.org"


def data_dir(tmp_path: Path, sqlite_template: Path, *lines: str) -> dict[str, str]:
    """A data directory with a migrated database and an env file; the environment names only the directory."""
    shutil.copy(sqlite_template, tmp_path / "gpuclub.db")
    (tmp_path / "gpuclub.env").write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCLUB_")}
    return env | {"GPUCLUB_DATA_DIR": str(tmp_path)}


async def test_an_invited_persons_login_link_is_on_the_files_public_url_and_brings_the_credits(
    tmp_path: Path, sqlite_template: Path
) -> None:
    env = data_dir(
        tmp_path, sqlite_template, "# set once", f'GPUCLUB_PUBLIC_URL="{PUBLIC}"', "GPUCLUB_SECRET_KEY=" + "s" * 40
    )
    invited = cli(env, "invite", "create", "--email", "Ada@Lab.Example.org", "--credits", "5")
    assert invited.returncode == 0 and invited.stdout.startswith(f"{PUBLIC}/invite/gpi_"), invited.stderr

    made = cli(env, "login-link", "ada@lab.example.org")

    assert made.returncode == 0, made.stderr
    link = made.stdout.strip()
    assert link.startswith(f"{PUBLIC}/login/gpl_")
    settings = Settings.from_env(env)  # the server's view of the same directory
    database = Database(settings.database_url)
    async with browser_for(create_app(settings, database), base_url=PUBLIC) as browser:
        joined = await browser.get(link.removeprefix(PUBLIC))
    async with database.session() as db:
        ada = (await db.exec(select(User).where(User.email == "ada@lab.example.org"))).one()
        balance = await ledger.balance_of(db, ada.pk)
    await database.dispose()
    assert (joined.status_code, joined.headers["location"]) == (303, "/dashboard")
    assert balance == ledger.Balance(5_000_000, 0)
    assert "not a member" in cli(env, "login-link", "bea@lab.example.org").stderr


def test_a_variable_in_the_environment_wins_over_the_file(tmp_path: Path, sqlite_template: Path) -> None:
    env = data_dir(tmp_path, sqlite_template, f"GPUCLUB_PUBLIC_URL={PUBLIC}")

    made = cli(env | {"GPUCLUB_PUBLIC_URL": "https://other.example.org"}, "invite", "create")

    assert made.returncode == 0 and made.stdout.startswith("https://other.example.org/invite/gpi_"), made.stderr


def test_a_bad_line_in_the_file_stops_the_command_naming_the_file_and_line(
    tmp_path: Path, sqlite_template: Path
) -> None:
    env = data_dir(tmp_path, sqlite_template, f"GPUCLUB_PUBLIC_URL={PUBLIC}", "GPUCLUB_SMTP_HOST mail.lab")

    made = cli(env, "login-link", "ada@lab.example.org")

    assert made.returncode == 1 and made.stdout == ""
    assert (
        made.stderr.strip()
        == f"gpuclub: {tmp_path / 'gpuclub.env'}, line 2: expected NAME=value, a # comment or nothing"
    )
