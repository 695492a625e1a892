"""Prices as people type and read them ("12.50 USD"), kept as integers in the currency's minor unit."""

from __future__ import annotations

import re

from hub.errors import BadRequest

# Stripe's currencies whose minor unit is not a hundredth (https://docs.stripe.com/currencies).
_ZERO_DECIMAL = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
)
_THREE_DECIMAL = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})
MAX_MINOR = 99_999_999  # Stripe's limit for one amount, in minor units

_CURRENCY = re.compile(r"^[a-z]{3}$")
_PRICE = re.compile(r"^(\d{1,12})(?:\.(\d+))?$")


def decimals(currency: str) -> int:
    currency = currency.lower()
    return 0 if currency in _ZERO_DECIMAL else 3 if currency in _THREE_DECIMAL else 2


def parse_currency(text: str) -> str:
    currency = text.strip().lower()
    if not _CURRENCY.match(currency):
        raise BadRequest(f"The currency must be a three-letter code such as USD or EUR, got {text.strip()!r}.")
    return currency


def parse_price(text: str, currency: str) -> int:
    """ "12.50" in `currency` to minor units (1250), with integer arithmetic only."""
    raw = text.strip()
    if raw.startswith("-"):
        raise BadRequest("The price must be more than zero.")
    match = _PRICE.match(raw)
    if match is None:
        raise BadRequest(f"The price must be an amount such as 12.50, got {text.strip()!r}.")
    places = decimals(currency)
    whole, fraction = match.group(1), match.group(2) or ""
    if len(fraction.rstrip("0")) > places:
        unit = "whole amounts" if places == 0 else f"at most {places} decimal places"
        raise BadRequest(f"Prices in {currency.upper()} take {unit}, got {text.strip()!r}.")
    minor: int = int(whole) * 10**places + int(fraction.rstrip("0").ljust(places, "0") or "0")
    if minor == 0:
        raise BadRequest("The price must be more than zero.")
    if minor > MAX_MINOR:
        raise BadRequest(f"The price must be at most {format_money(MAX_MINOR, currency)}.")
    return minor


def format_money(minor: int, currency: str) -> str:
    """1250, "usd" → "12.50 USD"."""
    places = decimals(currency)
    whole, fraction = divmod(minor, 10**places)
    text = f"{whole:,}" + (f".{fraction:0{places}d}" if places else "")
    return f"{text} {currency.upper()}"
