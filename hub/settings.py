"""The one place that reads the environment.

Every setting is a field of `Settings`; `Settings.from_env()` builds it once at start-up and a bad value fails
there with a message naming the variable. Secrets also accept a `*_FILE` variant. The server and the command line
also read `$GPUCLUB_DATA_DIR/gpuclub.env` (KEY=VALUE lines); a variable set in the environment (not empty) wins
over the file.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import urlsplit

from hub.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class OAuthClientSettings:
    """Credentials of one OAuth application registered at a sign-in provider."""

    client_id: str
    client_secret: str


@dataclass(frozen=True)
class OidcSettings(OAuthClientSettings):
    discovery_url: str
    label: str = "Single sign-on"


STRIPE_API_BASE = "https://api.stripe.com"


@dataclass(frozen=True)
class StripeSettings:
    """Stripe Checkout for credit packs; `api_base` points tests and staging at another address."""

    secret_key: str
    webhook_secret: str
    api_base: str = STRIPE_API_BASE


SMTP_TLS = ("starttls", "tls", "none")
SMTP_PORTS = {"starttls": 587, "tls": 465, "none": 25}
ENV_FILE = "gpuclub.env"
_SECRETS = (  # also read from a file named by NAME_FILE
    "DATABASE_URL",
    "SECRET_KEY",
    "GITHUB_CLIENT_SECRET",
    "GOOGLE_CLIENT_SECRET",
    "OIDC_CLIENT_SECRET",
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "SMTP_PASSWORD",
)
_PLAIN = (  # noqa: SIM905 (a list of 28 names, one a line, would be longer than it is useful)
    "PUBLIC_URL HOST PORT CLUB_NAME GITHUB_CLIENT_ID GOOGLE_CLIENT_ID OIDC_CLIENT_ID OIDC_DISCOVERY_URL OIDC_LABEL "
    "STRIPE_API_BASE SMTP_HOST SMTP_PORT SMTP_USERNAME SMTP_FROM SMTP_TLS SESSION_DAYS MAX_BODY_BYTES "
    "MAX_ANSWER_BYTES QUEUE_PER_MEMBER QUEUE_WAIT_SECONDS UPSTREAM_TIMEOUT AGENT_HEARTBEAT PROBE_MINUTES "
    "DRAIN_SECONDS OUTAGE_SECONDS TRUSTED_PROXIES LOG_RETENTION_DAYS LOG_LEVEL"
).split()
# Every name the env file may set (what `Settings.from_env` reads, but GPUCLUB_DATA_DIR), so a typo fails loudly.
KNOWN = frozenset(
    [f"GPUCLUB_{name}" for name in _PLAIN] + [f"GPUCLUB_{name}{end}" for name in _SECRETS for end in ("", "_FILE")]
)


@dataclass(frozen=True)
class SmtpSettings:
    """Where sign-in emails go out: `tls` is starttls (upgrade after connecting), tls (TLS from the start) or none."""

    host: str
    from_address: str
    port: int = 587
    tls: str = "starttls"
    username: str | None = None
    password: str | None = None
    timeout: float = 30.0


@dataclass(frozen=True)
class Settings:
    secret_key: str
    database_url: str
    data_dir: Path = Path("data")
    public_url: str = "http://127.0.0.1:8000"
    host: str = "127.0.0.1"
    port: int = 8000
    club_name: str = "gpuclub"
    github: OAuthClientSettings | None = None
    google: OAuthClientSettings | None = None
    oidc: OidcSettings | None = None
    stripe: StripeSettings | None = None
    smtp: SmtpSettings | None = None
    session_days: int = 30
    login_link_minutes: int = 15
    max_body_bytes: int = 4 * 1024 * 1024
    max_answer_bytes: int = 16 * 1024 * 1024
    queue_per_member: int = 64
    queue_wait_seconds: float = 30.0
    upstream_timeout: float = 300.0
    agent_heartbeat: float = 2.0
    probe_minutes: float = 60.0  # how often the hub compares answers of agents serving one model; 0: never
    drain_seconds: float = 30.0  # on SIGTERM, how long requests in flight may take to finish
    outage_seconds: float = 300.0  # while the database is away, how old what /v1 serves from memory may be
    trusted_proxies: str = "127.0.0.1"  # whose X-Forwarded-For/-Proto the hub believes (uvicorn's list)
    log_retention_days: int = 90  # how long request log rows are kept (0: forever); rollups and the ledger stay
    log_level: str = "INFO"
    templates_dir: Path = ROOT / "templates"
    static_dir: Path = ROOT / "static"

    @property
    def stripe_enabled(self) -> bool:
        """Members can buy credits (both Stripe keys are set); otherwise the purchase pages do not exist."""
        return self.stripe is not None

    @property
    def email_enabled(self) -> bool:
        """Sign-in links can be sent by email (SMTP is configured)."""
        return self.smtp is not None

    @property
    def secure_cookies(self) -> bool:
        return self.public_url.startswith("https://")

    def url(self, path: str) -> str:
        """An absolute URL on this hub, built on the public URL."""
        return self.public_url.rstrip("/") + path

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings from `environ` (the process's environment), over those of the data directory's env file."""
        environ = os.environ if environ is None else environ
        data_dir = Path(environ.get("GPUCLUB_DATA_DIR", "").strip() or "data")
        env = _Env(merge_env(read_env_file(data_dir / ENV_FILE), environ))
        database_url = normalize_database_url(
            env.secret("GPUCLUB_DATABASE_URL") or f"sqlite:///{data_dir / 'gpuclub.db'}"
        )
        public_url = env.get("GPUCLUB_PUBLIC_URL") or "http://127.0.0.1:8000"
        parts = urlsplit(public_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"GPUCLUB_PUBLIC_URL must be an http(s) URL, got {public_url!r}")
        return cls(
            secret_key=env.secret("GPUCLUB_SECRET_KEY") or load_or_create_secret(data_dir),
            database_url=database_url,
            data_dir=data_dir,
            public_url=public_url.rstrip("/"),
            host=env.get("GPUCLUB_HOST") or "127.0.0.1",
            port=env.integer("GPUCLUB_PORT", 8000, low=1, high=65535),
            club_name=env.get("GPUCLUB_CLUB_NAME") or "gpuclub",
            github=env.oauth_client("GITHUB"),
            google=env.oauth_client("GOOGLE"),
            oidc=env.oidc(),
            stripe=env.stripe(),
            smtp=env.smtp(),
            session_days=env.integer("GPUCLUB_SESSION_DAYS", 30, low=1, high=365),
            max_body_bytes=env.integer("GPUCLUB_MAX_BODY_BYTES", 4 * 1024 * 1024, low=1024, high=16 * 1024 * 1024),
            max_answer_bytes=env.integer(
                "GPUCLUB_MAX_ANSWER_BYTES", 16 * 1024 * 1024, low=64 * 1024, high=1024 * 1024 * 1024
            ),
            queue_per_member=env.integer("GPUCLUB_QUEUE_PER_MEMBER", 64, low=1, high=100_000),
            queue_wait_seconds=env.number("GPUCLUB_QUEUE_WAIT_SECONDS", 30.0, low=0.1, high=3600),
            upstream_timeout=env.number("GPUCLUB_UPSTREAM_TIMEOUT", 300.0, low=1, high=86400),
            agent_heartbeat=env.number("GPUCLUB_AGENT_HEARTBEAT", 2.0, low=0.2, high=60),
            probe_minutes=env.number("GPUCLUB_PROBE_MINUTES", 60.0, low=0, high=7 * 24 * 60),
            drain_seconds=env.number("GPUCLUB_DRAIN_SECONDS", 30.0, low=0, high=3600),
            outage_seconds=env.number("GPUCLUB_OUTAGE_SECONDS", 300.0, low=0, high=86400),
            trusted_proxies=env.get("GPUCLUB_TRUSTED_PROXIES") or "127.0.0.1",
            log_retention_days=env.integer("GPUCLUB_LOG_RETENTION_DAYS", 90, low=0, high=36500),
            log_level=(env.get("GPUCLUB_LOG_LEVEL") or "INFO").upper(),
        )


class _Env:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def get(self, name: str) -> str | None:
        value = self.environ.get(name, "").strip()
        return value or None

    def secret(self, name: str) -> str | None:
        path = self.get(f"{name}_FILE")
        if path is None:
            return self.get(name)
        try:
            return Path(path).read_text().strip() or None
        except OSError as exc:
            raise ConfigError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from exc

    def integer(self, name: str, default: int, *, low: int, high: int) -> int:
        raw = self.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
        if not low <= value <= high:
            raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
        return value

    def number(self, name: str, default: float, *, low: float, high: float) -> float:
        raw = self.get(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {raw!r}") from None
        if not low <= value <= high:
            raise ConfigError(f"{name} must be between {low:g} and {high:g}, got {value:g}")
        return value

    def oauth_client(self, provider: str) -> OAuthClientSettings | None:
        client_id = self.get(f"GPUCLUB_{provider}_CLIENT_ID")
        client_secret = self.secret(f"GPUCLUB_{provider}_CLIENT_SECRET")
        if client_id is None and client_secret is None:
            return None
        if client_id is None or client_secret is None:
            raise ConfigError(f"GPUCLUB_{provider}_CLIENT_ID and GPUCLUB_{provider}_CLIENT_SECRET must be set together")
        return OAuthClientSettings(client_id, client_secret)

    def oidc(self) -> OidcSettings | None:
        client = self.oauth_client("OIDC")
        discovery_url = self.get("GPUCLUB_OIDC_DISCOVERY_URL")
        if client is None and discovery_url is None:
            return None
        if client is None or discovery_url is None:
            raise ConfigError(
                "GPUCLUB_OIDC_DISCOVERY_URL, GPUCLUB_OIDC_CLIENT_ID and GPUCLUB_OIDC_CLIENT_SECRET must be set together"
            )
        if urlsplit(discovery_url).scheme not in ("http", "https"):
            raise ConfigError(f"GPUCLUB_OIDC_DISCOVERY_URL must be an http(s) URL, got {discovery_url!r}")
        label = self.get("GPUCLUB_OIDC_LABEL") or "Single sign-on"
        return OidcSettings(client.client_id, client.client_secret, discovery_url, label)

    def stripe(self) -> StripeSettings | None:
        secret_key = self.secret("GPUCLUB_STRIPE_SECRET_KEY")
        webhook_secret = self.secret("GPUCLUB_STRIPE_WEBHOOK_SECRET")
        if secret_key is None and webhook_secret is None:
            return None
        if secret_key is None or webhook_secret is None:
            raise ConfigError("GPUCLUB_STRIPE_SECRET_KEY and GPUCLUB_STRIPE_WEBHOOK_SECRET must be set together")
        if not secret_key.startswith(("sk_", "rk_")):
            raise ConfigError("GPUCLUB_STRIPE_SECRET_KEY must be a Stripe secret key (it starts with sk_ or rk_)")
        if not webhook_secret.startswith("whsec_"):
            raise ConfigError("GPUCLUB_STRIPE_WEBHOOK_SECRET must be a webhook signing secret (it starts with whsec_)")
        api_base = (self.get("GPUCLUB_STRIPE_API_BASE") or STRIPE_API_BASE).rstrip("/")
        parts = urlsplit(api_base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"GPUCLUB_STRIPE_API_BASE must be an http(s) URL, got {api_base!r}")
        return StripeSettings(secret_key, webhook_secret, api_base)

    def smtp(self) -> SmtpSettings | None:
        host = self.get("GPUCLUB_SMTP_HOST")
        names = ("PORT", "USERNAME", "PASSWORD", "PASSWORD_FILE", "FROM", "TLS")
        if host is None:
            given = [f"GPUCLUB_SMTP_{name}" for name in names if self.get(f"GPUCLUB_SMTP_{name}")]
            if given:
                raise ConfigError(f"GPUCLUB_SMTP_HOST must be set when {', '.join(given)} is")
            return None
        tls = (self.get("GPUCLUB_SMTP_TLS") or "starttls").lower()
        if tls not in SMTP_TLS:
            raise ConfigError(f"GPUCLUB_SMTP_TLS must be starttls, tls or none, got {tls!r}")
        sender = self.get("GPUCLUB_SMTP_FROM")
        if sender is None:
            raise ConfigError("GPUCLUB_SMTP_FROM must be set with GPUCLUB_SMTP_HOST (the address emails come from)")
        if "@" not in parseaddr(sender)[1] or "\n" in sender or "\r" in sender:
            raise ConfigError(f"GPUCLUB_SMTP_FROM must be an email address such as hub@lab.example.org, got {sender!r}")
        username, password = self.get("GPUCLUB_SMTP_USERNAME"), self.secret("GPUCLUB_SMTP_PASSWORD")
        if (username is None) != (password is None):
            raise ConfigError("GPUCLUB_SMTP_USERNAME and GPUCLUB_SMTP_PASSWORD must be set together")
        port = self.integer("GPUCLUB_SMTP_PORT", SMTP_PORTS[tls], low=1, high=65535)
        return SmtpSettings(host, sender, port=port, tls=tls, username=username, password=password)


_ENV_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (`export` allowed, # comments, values in single or double quotes); none if there is no file.

    A line that is none of these fails with the file and the line number, so a typo never passes silently.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it: {exc.strerror}") from exc
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _ENV_LINE.match(line)
        if match is None:
            # The line is not shown: it could be a secret pasted on a line of its own.
            raise ConfigError(f"{path}, line {number}: expected NAME=value, a # comment or nothing")
        name, value = match.group(1), _env_value(match.group(2))
        if value is None:
            raise ConfigError(f"{path}, line {number}: the quoted value of {name} is not closed")
        if not name.startswith("GPUCLUB_"):  # not shown either: `NAME` may be the start of a pasted secret
            raise ConfigError(f"{path}, line {number}: the setting's name does not start with GPUCLUB_")
        if name == "GPUCLUB_DATA_DIR":
            raise ConfigError(f"{path}, line {number}: GPUCLUB_DATA_DIR cannot be set in the file inside it")
        if name not in KNOWN:
            raise ConfigError(f"{path}, line {number}: no setting is called {name} (is it misspelt?)")
        values[name] = value
    return values


def merge_env(file: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """The file's values under the environment's: a variable set (not empty) in the environment wins over the
    file, and for a secret either spelling there (NAME or NAME_FILE) wins over either in the file."""
    given = {name: value for name, value in environ.items() if value.strip()}
    kept = {name: value for name, value in file.items() if not given.keys() & _spellings(name)}
    return kept | given


def _spellings(name: str) -> set[str]:
    plain = name.removesuffix("_FILE")
    return {name, plain, f"{plain}_FILE"}


def _env_value(text: str) -> str | None:
    """The value after `=`: quoted (the quotes removed, # kept), or plain up to a ` #` comment; None: unclosed."""
    if text[:1] in ("'", '"'):
        end = text.find(text[0], 1)
        if end < 0 or text[end + 1 :].strip()[:1] not in ("", "#"):
            return None
        return text[1:end]
    return re.split(r"\s+#", text, maxsplit=1)[0].strip()


def normalize_database_url(url: str) -> str:
    """Accept the usual spellings and pick the async driver."""
    for plain, driver in (
        ("postgres://", "postgresql+asyncpg://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgresql+psycopg://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    if url.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
        return url
    raise ConfigError(f"GPUCLUB_DATABASE_URL must be a sqlite:// or postgresql:// URL, got {url.split(':')[0]}://…")


def load_or_create_secret(data_dir: Path) -> str:
    """The session secret kept in the data directory, made once with mode 0600."""
    path = data_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    return secret
