"""HTTPS through a real nginx (Debian's package) in front of the hub, configured by docs/deploy/nginx.conf itself:
an agent's tunnel through it, a stream that reaches the client event by event, Secure cookies, and forwarded
addresses believed only from the proxy.

nginx runs as a child of the test with its own prefix, config, pid and logs in a temporary directory, on free
loopback ports, with a certificate made for the test; nothing of the machine's own nginx is read or touched.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import ssl
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from hub.accounts import service as accounts
from hub.ledger import service as ledger
from hub.ledger.grants import grant
from hub.pricing import service as pricing
from tests.conftest import missing_service
from tests.support.cluster import Member, agent_process, agent_token, member, provision, recorded, signed_in
from tests.support.fake_apis import token
from tests.support.fake_upstream import fake_upstream
from tests.support.hub import GPUCLUB, ROOT, LiveHub, cli, hub_env
from tests.support.processes import Running, free_port, run

pytestmark = pytest.mark.slow

SITE = ROOT / "docs" / "deploy" / "nginx.conf"
CREDIT = 1_000_000
ONE_CREDIT_PER_TOKEN = 1_000_000 * CREDIT  # per million output tokens
TOKENS = 8
DELAY = 0.25  # between the upstream's events: a stream of about two seconds
STRANGER = "127.0.0.2"  # a client's address on loopback that is not the proxy's (127.0.0.1, the trusted one)
FORGED = "203.0.113.9"


def program(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if not found:
        missing_service(f"{name} is not installed (apt-get install {name})")
    return found


def certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, as certbot would leave a real one: fullchain and private key."""
    cert, key = directory / "fullchain.pem", directory / "privkey.pem"
    request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
    request += ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)]
    subprocess.run(
        [program("openssl"), *request],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def site(*, https_port: int, http_port: int, hub_port: int, cert: Path, key: Path) -> str:
    """docs/deploy/nginx.conf with what its header tells an operator to replace, replaced (plus the ports)."""
    text = SITE.read_text()
    replacements = {
        "listen 443 ssl;": f"listen 127.0.0.1:{https_port} ssl;",
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "/etc/letsencrypt/live/gpus.example.org/fullchain.pem": str(cert),
        "/etc/letsencrypt/live/gpus.example.org/privkey.pem": str(key),
        "server 127.0.0.1:8000;": f"server 127.0.0.1:{hub_port};",
    }
    for placeholder, value in replacements.items():
        assert text.count(placeholder) == 1, f"docs/deploy/nginx.conf should hold {placeholder!r} once"
        text = text.replace(placeholder, value)
    return text


@contextmanager
def nginx(binary: str, directory: Path, site_text: str) -> Iterator[Running]:
    """`nginx -p DIR -c DIR/nginx.conf -g 'daemon off;'`: the operator's site inside a minimal main config."""
    (directory / "site.conf").write_text(site_text)
    temp = "".join(f"    {kind}_temp_path {directory / kind};\n" for kind in ("client_body", "proxy", "fastcgi"))
    temp += "".join(f"    {kind}_temp_path {directory / kind};\n" for kind in ("uwsgi", "scgi"))
    # As root, workers would run as nobody, who cannot write the temp paths under pytest's private directory.
    user = "user root;\n" if os.geteuid() == 0 else ""
    main = directory / "nginx.conf"
    main.write_text(
        f"{user}worker_processes 1;\npid {directory / 'nginx.pid'};\nlock_file {directory / 'nginx.lock'};\n"
        "error_log stderr notice;\nevents { worker_connections 256; }\n"
        f"http {{\n    access_log {directory / 'access.log'};\n{temp}    include {directory / 'site.conf'};\n}}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCLUB_")}
    with run([binary, "-p", str(directory), "-c", str(main), "-g", "daemon off;"], env=env, cwd=directory) as process:
        process.wait_for(r"start worker process")
        yield process


@dataclass
class Club:
    hub: LiveHub  # its url is nginx's https address, which is also the hub's GPUCLUB_PUBLIC_URL
    direct: str  # the hub's own port, which nginx proxies to
    plain: str  # nginx's port 80, in the test's rendering
    agent: Running
    alice: Member
    provider: Member
    tls: ssl.SSLContext


@pytest.fixture(scope="module")
def club(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Club]:
    binary = program("nginx")
    base = tmp_path_factory.mktemp("nginx")
    cert, key = certificate(base)
    hub_port, https_port, http_port = free_port(), free_port(), free_port()
    public = f"https://127.0.0.1:{https_port}"
    env = hub_env(base / "hub", port=hub_port, GPUCLUB_PUBLIC_URL=public, GPUCLUB_AGENT_HEARTBEAT="0.5")
    migrated = cli(env, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    (base / "nginx").mkdir()
    config = site(https_port=https_port, http_port=http_port, hub_port=hub_port, cert=cert, key=key)
    with (
        pytest.MonkeyPatch.context() as patch,
        run([GPUCLUB, "serve"], env=env, cwd=ROOT) as process,
        nginx(binary, base / "nginx", config),
        fake_upstream(["m"]) as upstream,
    ):
        patch.setenv("SSL_CERT_FILE", str(cert))  # the test's clients and the agent trust the test's certificate
        process.wait_for(r"Uvicorn running on")
        hub = LiveHub(url=public, env=env, process=process, owner_link="")
        provider = member(hub, "provider@lab.example.org")
        alice = member(hub, "alice@lab.example.org")

        async def prices(db: AsyncSession) -> None:
            await pricing.set_price(db, None, "m", input_micro=0, output_micro=ONE_CREDIT_PER_TOKEN)
            await grant(db, None, await accounts.get_member(db, alice.email), 100 * CREDIT, reason="test")

        provision(hub, prices)
        with agent_process(hub, agent_token(hub, provider.email, "gpu"), f"{upstream.url}/v1") as agent:
            tls = ssl.create_default_context(cafile=str(cert))
            direct, plain = f"http://127.0.0.1:{hub_port}", f"http://127.0.0.1:{http_port}"
            yield Club(hub, direct, plain, agent, alice, provider, tls)


def balance(club: Club, email: str) -> int:
    async def read(db: AsyncSession) -> int:
        return (await ledger.balance_of(db, (await accounts.get_member(db, email)).pk)).balance

    return provision(club.hub, read)


def test_the_agent_connects_through_nginx_and_its_owner_sees_it_online_with_secure_cookies(club: Club) -> None:
    with signed_in(club.hub, club.provider.email) as browser:
        page = browser.get("/gpus")
        cookies = list(browser.cookies.jar)

    assert club.agent.text.count("connected to the hub") == 1  # over wss://, at the first try
    row = re.search(r'<tr class="agent" data-name="gpu">(.*?)</tr>', page.text, re.S)
    assert row and 'badge active">online' in row.group(1) and "<code>m</code>" in row.group(1)
    session = [cookie for cookie in cookies if cookie.name == "gpuclub_session"]
    assert session and all(cookie.secure for cookie in session)  # GPUCLUB_PUBLIC_URL is the https address


def test_plain_http_is_redirected_to_https(club: Club) -> None:
    response = httpx.get(f"{club.plain}/gpus?page=2")

    assert response.status_code == 301
    assert response.headers["location"] == "https://127.0.0.1/gpus?page=2"  # $host: the name, without the port


def test_a_stream_through_nginx_arrives_event_by_event_whole_and_charged(club: Club) -> None:
    before = balance(club, club.alice.email)
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": TOKENS,
        "stream": True,
        "fake": {"chunk_delay": DELAY},
    }
    arrivals: list[float] = []
    pieces: list[str] = []
    headers = {"Authorization": f"Bearer {club.alice.key}"}
    with httpx.Client(base_url=club.hub.url, headers=headers, timeout=30, verify=club.tls) as client:
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            status = response.status_code
            for line in response.iter_lines():
                event = json.loads(line.removeprefix("data: ")) if line.startswith("data: {") else {}
                if event.get("choices"):
                    arrivals.append(time.monotonic())
                    pieces.append(event["choices"][0]["delta"].get("content", ""))
    rows = recorded(Path(club.hub.env["GPUCLUB_DATA_DIR"]) / "gpuclub.db", 1)

    assert status == 200
    assert "".join(pieces) == "".join(token(i) for i in range(TOKENS))  # every token, in order
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    # Buffered, the events would arrive together at the end; passed through, about DELAY apart.
    assert arrivals[-1] - arrivals[0] > 0.6 * DELAY * (TOKENS - 1), gaps
    assert statistics.median(gaps) > DELAY / 2, gaps
    assert [(row["stream"], row["completion_tokens"]) for row in rows] == [(1, TOKENS)]
    assert balance(club, club.alice.email) == before - TOKENS * CREDIT


def test_the_hub_believes_x_forwarded_for_only_from_its_trusted_proxy(club: Club) -> None:
    """The client address the hub logs: through nginx the client's own, never what the client claims."""
    forged = {"X-Forwarded-For": FORGED, "X-Forwarded-Proto": "https"}
    mark = club.hub.process.mark()
    stranger = httpx.HTTPTransport(local_address=STRANGER, verify=club.tls)
    with httpx.Client(transport=stranger, timeout=10) as client:
        client.get(f"{club.hub.url}/healthz")
        client.get(f"{club.hub.url}/healthz/forged", headers=forged)
        client.get(f"{club.direct}/healthz/direct", headers=forged)

    def client_of(path: str) -> str:
        return club.hub.process.wait_for(rf'access: ([\d.]+):\d+ - "GET {path} ', 10, since=mark).group(1)

    assert client_of("/healthz") == STRANGER  # nginx (127.0.0.1) is trusted, so the hub sees past it
    assert client_of("/healthz/forged") == STRANGER  # nginx replaced the client's claim with its address
    assert client_of("/healthz/direct") == STRANGER  # a client that is no trusted proxy is not believed
    assert FORGED not in club.hub.process.text
