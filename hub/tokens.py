"""Secrets handed to people (API keys, links): unguessable, shown once, stored only as a hash."""

from __future__ import annotations

import hashlib
import secrets


def new_secret(prefix: str) -> str:
    """A random secret with 256 bits of entropy and a readable prefix, e.g. `gpc_…`."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def digest(secret: str) -> str:
    """SHA-256 is enough here: the secrets are random, not passwords, so there is nothing to brute-force."""
    return hashlib.sha256(secret.encode()).hexdigest()
