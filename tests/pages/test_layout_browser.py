"""Layout that holds: every page an admin can reach, on a phone (390 px) and a laptop (1280 px), in a real Chromium.

The pages are found by following the links the hub itself shows, starting at the dashboard, so a new page is
checked as soon as something links to it. A page fails when it scrolls sideways
(`document.documentElement.scrollWidth > innerWidth`), and on a laptop also when a card's content is wider than
the card (a table the reader would have to scroll inside it); the message names what sticks out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page

from tests.proxy.conftest import proxy_hub
from tests.support.cluster import agent_process, agent_token, member, recorded
from tests.support.fake_upstream import fake_upstream
from tests.support.hub import LiveHub

WIDTHS = (390, 1280)
MAX_PAGES = 80
# Not pages: downloads, the agent's wheel, machine-readable endpoints.
SKIP = ("/static/", "/agent/", "/v1/", "/metrics", "/healthz", "/logout")

WIDE_ELEMENTS = """() => [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > innerWidth + 1)
    .filter(e => !e.closest('.scroll, [data-scroll]'))
    .slice(0, 5)
    .map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className ? '.' + e.className : '')
        + ' (' + Math.round(e.getBoundingClientRect().right) + ' px)')"""
# Cards whose content is wider than the card itself; a phone may scroll a wide table inside its card.
WIDE_CARDS = """() => [...document.querySelectorAll('.card')]
    .filter(c => c.scrollWidth > c.clientWidth + 1)
    .map(c => (c.querySelector('h2, caption')?.textContent || c.className).trim().slice(0, 40)
        + ' (' + c.scrollWidth + ' > ' + c.clientWidth + ' px)')"""


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveHub, str]]:
    """A hub with an agent online, a long model name and a few requests, so tables and charts have rows."""
    data = tmp_path_factory.mktemp("layout")
    models = ["llama-3-8b", "mistralai/Mixtral-8x22B-Instruct-v0.1-GGUF-Q4_K_M-with-a-very-long-name"]
    with proxy_hub(data / "hub") as hub, fake_upstream(models) as upstream:
        added = hub.cli("member", "add", "owner@lab.example.org", "--role", "admin")
        assert added.returncode == 0, added.stderr
        token = agent_token(hub, "owner@lab.example.org", "desk-4090-with-a-long-hostname")
        ann = member(hub, "ann@lab.example.org")
        with agent_process(hub, token, f"{upstream.url}/v1", name="desk-4090-with-a-long-hostname", capacity=2):
            for model in models:
                answer = httpx.post(
                    f"{hub.url}/v1/chat/completions",
                    headers={"Authorization": f"Bearer {ann.key}"},
                    json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8},
                    timeout=30,
                )
                assert answer.status_code == 200, answer.text
            recorded(Path(hub.env["GPUCLUB_DATA_DIR"]) / "gpuclub.db", len(models))
            yield hub, token


def _links(page: Page, base: str) -> list[str]:
    hrefs: list[str] = page.eval_on_selector_all("a[href]", "links => links.map(a => a.getAttribute('href'))")
    found = []
    for href in hrefs:
        parts = urlsplit(href)
        if parts.scheme or parts.netloc or not parts.path.startswith("/") or href.startswith(SKIP):
            continue
        if parts.path.endswith((".csv", ".whl", ".txt")) or "format=csv" in parts.query:
            continue
        found.append(parts.path + (f"?{parts.query}" if parts.query else ""))
    return found


def _visit_all(page: Page, hub: LiveHub, cards: bool) -> dict[str, list[str]]:
    """Every page reachable from the dashboard, and what sticks out on each."""
    todo, seen = ["/dashboard"], set[str]()
    wide: dict[str, list[str]] = {}
    while todo and len(seen) < MAX_PAGES:
        path = todo.pop(0)
        if path in seen:
            continue
        seen.add(path)
        answer = page.goto(hub.url + path)
        assert answer is not None and answer.status < 500, f"{path} answered {answer and answer.status}"
        if page.evaluate("document.documentElement.scrollWidth > innerWidth"):
            wide[path] = page.evaluate(WIDE_ELEMENTS)
        elif cards and (inside := page.evaluate(WIDE_CARDS)):
            wide[path] = inside
        todo.extend(link for link in _links(page, hub.url) if link not in seen)
    assert len(seen) >= 10, f"only {sorted(seen)} were reachable"
    return wide


@pytest.mark.browser
@pytest.mark.parametrize("width", WIDTHS)
def test_no_page_scrolls_sideways(pages: tuple[LiveHub, str], chromium: Browser, width: int) -> None:
    hub, _ = pages
    context = chromium.new_context(viewport={"width": width, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        link = hub.cli("login-link", "owner@lab.example.org")
        assert link.returncode == 0, link.stderr
        page.goto(link.stdout.strip())
        page.wait_for_url(f"{hub.url}/dashboard")
        wide = _visit_all(page, hub, cards=width >= 1280)
    finally:
        context.close()
    assert not wide, f"at {width} px these pages scroll sideways: {wide}"
