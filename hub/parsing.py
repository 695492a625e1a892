"""Parsing of the small values people type into forms and the command line."""

from __future__ import annotations

import re
from datetime import timedelta
from email.utils import parseaddr

from hub.errors import BadRequest

_DURATION = re.compile(r"^\s*(\d{1,5})\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_EMAIL = re.compile(r"^[^@\s]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$")
_UNSAFE = re.compile(r'[,<>()";:\\\[\]\s]')
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


def parse_duration(text: str, *, what: str = "duration") -> timedelta:
    """`30m`, `12h`, `7d` or `2w`."""
    match = _DURATION.match(text.lower())
    if match is None or int(match.group(1)) == 0:
        raise BadRequest(f"The {what} must look like 30m, 12h, 7d or 2w, got {text!r}.")
    amount, unit = int(match.group(1)), match.group(2)
    delta = timedelta(**{_UNITS[unit]: amount})
    if delta > timedelta(days=3660):
        raise BadRequest(f"The {what} must be at most 10 years.")
    return delta


def parse_count(text: str | int, *, what: str, low: int = 1, high: int = 1_000_000) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise BadRequest(f"The {what} must be a whole number, got {str(text)!r}.") from None
    if not low <= value <= high:
        raise BadRequest(f"The {what} must be between {low} and {high}.")
    return value


def normalize_email(text: str) -> str:
    """A plain address (`ada.l+gpus@lab.example.org`), lower-cased; nothing that an email header would read as more
    than one address, a display name or a comment (`,<>()";:\\[]`, spaces), so a link goes to that mailbox only."""
    email = text.strip().lower()
    if not _EMAIL.match(email) or _UNSAFE.search(email) or parseaddr(email)[1] != email:
        raise BadRequest(f"{text.strip()!r} is not an email address.")
    return email


def normalize_domain(text: str) -> str:
    domain = text.strip().lower().lstrip("@")
    if not _DOMAIN.match(domain):
        raise BadRequest(f"{text.strip()!r} is not a domain name such as lab.example.org.")
    return domain


def clean_text(text: str, *, what: str, max_length: int, required: bool = False) -> str:
    value = " ".join(text.split())
    if required and not value:
        raise BadRequest(f"Please give a {what}.")
    if len(value) > max_length:
        raise BadRequest(f"The {what} must be at most {max_length} characters.")
    return value


_CREDITS = re.compile(r"^\s*(\d{1,12})(?:\.(\d{1,6}))?\s*$")


def parse_credits(text: str | int, *, what: str = "amount", allow_zero: bool = False) -> int:
    """Credits as typed ("10", "2.5", up to 6 decimals) to micro-credits; never a float on the way."""
    match = _CREDITS.match(str(text))
    if match is None:
        raise BadRequest(f"The {what} must be a number of credits such as 10 or 2.5, got {str(text).strip()!r}.")
    micro = int(match.group(1)) * 1_000_000 + int((match.group(2) or "").ljust(6, "0"))
    if micro == 0 and not allow_zero:
        raise BadRequest(f"The {what} must be more than zero.")
    if micro > 1_000_000_000 * 1_000_000:
        raise BadRequest(f"The {what} must be at most 1,000,000,000 credits.")
    return micro


def format_credits(micro: int) -> str:
    """Micro-credits for people: 12.5, 0.000125, -3."""
    sign = "-" if micro < 0 else ""
    whole, fraction = divmod(abs(micro), 1_000_000)
    text = f"{whole:,}" + (f".{fraction:06d}".rstrip("0") if fraction else "")
    return sign + text
