"""A real dockerd and base images made on this machine, for building gpuclub's images without a registry.

These machines reach Debian's mirror but no image registry, so the base images the Dockerfiles take as build
arguments are made here: `debootstrap` a bookworm root file system with the few packages a stage needs and
`docker import` it under a local name. An image that already exists is used as it is, so only the first run
pays for debootstrap; `docker image rm` one to make it again. The downloaded packages are kept in
/var/cache/gpuclub-debootstrap for the next time.

Downloads inside a build trust only the machine's CA bundle, passed as a build secret (never a layer), which
needs BuildKit: Debian's docker.io (20.10) has it built into its `docker` client with DOCKER_BUILDKIT=1.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import stop

CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
SUITE = "bookworm"
PACKAGE_CACHE = Path("/var/cache/gpuclub-debootstrap")
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Base:
    """A base image made locally: its tag and the Debian packages in it.

    `packages` go in with debootstrap; `later` with apt-get in the new root, for a package such as npm whose
    dependencies (alternatives, virtual packages) debootstrap's own resolver cannot follow.
    """

    tag: str
    packages: tuple[str, ...]
    later: tuple[str, ...] = ()
    files: tuple[tuple[str, str], ...] = ()  # (path, text) written into the root, executable
    changes: tuple[str, ...] = ('CMD ["bash"]',)  # Dockerfile instructions for `docker import --change`


# Debian's python3 in bookworm is 3.11, as in the official python:3.11-slim-bookworm the Dockerfile names.
PYTHON = Base("gpuclub-local/python:3.11-bookworm", ("python3", "python3-venv", "python3-pip", "ca-certificates"))
NODE = Base("gpuclub-local/node:bookworm", ("nodejs", "ca-certificates"), later=("npm",))

# A stand-in for the official postgres image with the part of its interface compose.yaml uses: POSTGRES_USER,
# POSTGRES_DB and POSTGRES_PASSWORD_FILE on first start, data in /var/lib/postgresql/data, pg_isready.
POSTGRES_ENTRYPOINT = """#!/bin/sh
set -eu
export PGDATA=/var/lib/postgresql/data
mkdir -p "$PGDATA" /run/postgresql
chown postgres:postgres "$PGDATA" /run/postgresql
chmod 700 "$PGDATA"
as_postgres() { runuser -u postgres -- "$@"; }
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    install -o postgres -m 600 "$POSTGRES_PASSWORD_FILE" /tmp/password
    as_postgres initdb -U "$POSTGRES_USER" --pwfile=/tmp/password --auth-local=trust --auth-host=scram-sha-256
    rm /tmp/password
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    as_postgres pg_ctl -w -o "-c listen_addresses=''" start
    as_postgres psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres -c "CREATE DATABASE \\"$POSTGRES_DB\\""
    as_postgres pg_ctl -w -m fast stop
fi
exec runuser -u postgres -- postgres -c listen_addresses='*'
"""
POSTGRES = Base(
    "gpuclub-local/postgres:15-bookworm",
    ("ca-certificates",),
    later=("postgresql-15",),
    files=(("usr/local/bin/docker-entrypoint.sh", POSTGRES_ENTRYPOINT),),
    changes=(
        "ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        'ENTRYPOINT ["docker-entrypoint.sh"]',
    ),
)


class DockerMissing(Exception):
    """No usable dockerd here; the message says why."""


def docker_cli() -> str:
    """The `docker` client packaged with dockerd (Debian's docker.io: /usr/bin/docker), else the first on the PATH.

    A newer client elsewhere on the PATH (this machine has one in /usr/local/bin) refuses BuildKit without the
    buildx plug-in; the 20.10 client packaged with the daemon has BuildKit built in.
    """
    daemon = shutil.which("dockerd")
    beside = [Path(daemon).with_name("docker")] if daemon else []
    for candidate in [*beside, Path("/usr/bin/docker")]:
        if candidate.exists():
            return str(candidate)
    found = shutil.which("docker")
    if found is None:
        raise DockerMissing("no docker client (apt-get install docker.io)")
    return found


def docker(*args: str, check: bool = True, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the docker client; on failure the error carries everything it printed."""
    result = subprocess.run(
        [docker_cli(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
        check=False,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result


def _daemon_answers() -> bool:
    try:
        return docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=20).returncode == 0
    except (DockerMissing, subprocess.TimeoutExpired):
        return False


@contextmanager
def dockerd(log_dir: Path, timeout: float = 60) -> Iterator[None]:
    """A dockerd to talk to: the one already running, or one started here and stopped afterwards.

    Started as CI needs it on a machine without bridges or iptables: containers then use `--network=host`.
    """
    if _daemon_answers():
        yield
        return
    binary = shutil.which("dockerd")
    if binary is None:
        raise DockerMissing("dockerd is not installed (apt-get install docker.io)")
    if os.geteuid() != 0:
        raise DockerMissing("dockerd is not running and only root can start it")
    log = (log_dir / "dockerd.log").open("w")
    process = subprocess.Popen(
        [binary, "--iptables=false", "--bridge=none"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    try:
        _wait_for_daemon(process, log_dir / "dockerd.log", timeout)
        yield
    finally:
        stop(process, 30)
        log.close()


def _wait_for_daemon(process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:

    deadline = time.monotonic() + timeout
    while not _daemon_answers():  # dockerd prints no line worth waiting on before its socket answers
        if process.poll() is not None or time.monotonic() > deadline:
            raise DockerMissing(f"dockerd did not come up (exit {process.poll()}):\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def image_exists(tag: str) -> bool:
    return docker("image", "inspect", tag, check=False).returncode == 0


def mirror() -> str:
    """The Debian mirror apt uses here (deb822 .sources or one-line .list), so debootstrap reaches it too."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        if not path.is_file():
            continue
        text = path.read_text()
        for stanza in text.split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and SUITE in suites.group(1).split() and uris.group(1).rstrip("/").endswith("/debian"):
                return uris.group(1)
        for line in text.splitlines():
            words = line.split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE and words[1].rstrip("/").endswith("/debian"):
                return words[1]
    return "http://deb.debian.org/debian"


def base_image(base: Base, work: Path) -> str:
    """`base.tag`, made with debootstrap unless it already exists; returns the tag."""
    if image_exists(base.tag):
        return base.tag
    if shutil.which("debootstrap") is None:
        raise DockerMissing("debootstrap is not installed (apt-get install debootstrap)")
    PACKAGE_CACHE.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="rootfs-", dir=work))
    try:
        _debootstrap(root, base.packages)
        if base.later:
            _apt_install(root, base.later)
        for path, text in base.files:
            (root / path).write_text(text)
            (root / path).chmod(0o755)
        # What an image needs no copy of: the package lists and downloaded .debs (debootstrap kept them).
        for leftover in ("var/lib/apt/lists", "var/cache/apt/archives"):
            shutil.rmtree(root / leftover, ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            [
                docker_cli(),
                "import",
                *(f"--change={change}" for change in ("ENV LANG=C.UTF-8", *base.changes)),
                "-",
                base.tag,
            ],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert tar.stdout is not None
        tar.stdout.close()
        if tar.wait() != 0 or imported.returncode != 0:
            raise RuntimeError(f"docker import {base.tag} failed:\n{imported.stderr}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return base.tag


def _debootstrap(root: Path, packages: Sequence[str]) -> None:
    command = [
        "debootstrap",
        "--variant=minbase",
        f"--cache-dir={PACKAGE_CACHE}",
        f"--include={','.join(packages)}",
        SUITE,
        str(root),
        mirror(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    if result.returncode != 0:
        log = root / "debootstrap" / "debootstrap.log"
        detail = log.read_text()[-3000:] if log.exists() else ""
        raise RuntimeError(f"debootstrap failed ({result.returncode}):\n{result.stderr[-3000:]}\n{detail}")


def _apt_install(root: Path, packages: Sequence[str]) -> None:
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LANG": "C.UTF-8"}
    try:
        for step in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        ):
            done = subprocess.run(
                ["chroot", str(root), *step], capture_output=True, text=True, timeout=1800, env=env, check=False
            )
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(step)} in {root} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    finally:
        (root / "etc/resolv.conf").unlink(missing_ok=True)
        subprocess.run(["chroot", str(root), "apt-get", "clean"], env=env, check=False)


def build(tag: str, *, dockerfile: str = "Dockerfile", context: Path = ROOT, args: dict[str, str]) -> str:
    """`docker build` with BuildKit and the machine's CA bundle as the `ca` secret; returns the tag."""
    # --network=host: the daemon here runs without a bridge (see dockerd()).
    command = ["build", "--network=host", "--file", str(context / dockerfile), "--tag", tag]
    for name, value in args.items():
        command += ["--build-arg", f"{name}={value}"]
    if CA_BUNDLE.exists():
        command += ["--secret", f"id=ca,src={CA_BUNDLE}"]
    before = _image_id(tag)
    docker(*command, str(context), timeout=1800, DOCKER_BUILDKIT="1", BUILDKIT_PROGRESS="plain")
    if before and before != _image_id(tag):
        docker("image", "rm", before, check=False)  # the build it replaced, not to pile up untagged
    return tag


def _image_id(tag: str) -> str | None:
    found = docker("image", "inspect", "--format", "{{.Id}}", tag, check=False)
    return found.stdout.strip() if found.returncode == 0 else None
