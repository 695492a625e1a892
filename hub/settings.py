"""The one place that reads the environment.

Every setting is a field of `Settings`; `Settings.from_env()` builds it once at start-up and a bad value fails
there with a message naming the variable. Secrets also accept a `*_FILE` variant.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
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
    def secure_cookies(self) -> bool:
        return self.public_url.startswith("https://")

    def url(self, path: str) -> str:
        """An absolute URL on this hub, built on the public URL."""
        return self.public_url.rstrip("/") + path

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = _Env(os.environ if environ is None else environ)
        data_dir = Path(env.get("GPUCLUB_DATA_DIR") or "data")
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
