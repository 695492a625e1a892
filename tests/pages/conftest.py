"""A real Chromium for the page tests, or a clear skip (a failure in CI) when it is not installed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.conftest import missing_service

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def launched() -> Iterator[Browser]:
    """Debian's Chromium, headless; a clear skip (a failure in CI) when it is not installed."""
    if not CHROMIUM.exists():
        missing_service(f"Chromium is not installed at {CHROMIUM}: apt-get install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser() -> Iterator[Browser]:
    with launched() as opened:
        yield opened


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """One Chromium for a whole module, whose tests open their own contexts (their own cookies)."""
    with launched() as opened:
        yield opened


PageFactory = Callable[[], Page]


def _new_page(browser: Browser) -> Page:
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    context.set_default_timeout(10_000)
    return context.new_page()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    opened = _new_page(browser)
    yield opened
    opened.context.close()


@pytest.fixture
def new_page(browser: Browser) -> Iterator[PageFactory]:
    """More pages, each in a browser context of its own (its own cookies): two people at once."""
    opened: list[Page] = []

    def open_one() -> Page:
        opened.append(_new_page(browser))
        return opened[-1]

    yield open_one
    for one in opened:
        one.context.close()
