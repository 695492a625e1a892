"""A real SMTP server for the tests: aiosmtpd on a free loopback port, keeping every message it is sent."""

from __future__ import annotations

import email
import queue
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default
from typing import Any

from aiosmtpd.controller import Controller

from hub.settings import SmtpSettings
from tests.support.processes import free_port

LINK = re.compile(r"https?://\S+/login/gpl_\S+")


@dataclass
class Sink:
    """What an aiosmtpd handler needs: `handle_DATA`; delivered messages wait in `inbox`."""

    host: str = "127.0.0.1"
    port: int = 0
    inbox: queue.Queue[EmailMessage] = field(default_factory=queue.Queue)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd calls it by this name
        parsed = email.message_from_bytes(envelope.original_content or envelope.content, policy=default)
        assert isinstance(parsed, EmailMessage)
        self.inbox.put(parsed)
        return "250 OK"

    @property
    def settings(self) -> SmtpSettings:
        return SmtpSettings(self.host, "gpuclub <hub@lab.example.org>", port=self.port, tls="none", timeout=10)

    def env(self) -> dict[str, str]:
        """The variables an operator sets to send through this server."""
        return {
            "GPUCLUB_SMTP_HOST": self.host,
            "GPUCLUB_SMTP_PORT": str(self.port),
            "GPUCLUB_SMTP_TLS": "none",
            "GPUCLUB_SMTP_FROM": "gpuclub <hub@lab.example.org>",
        }

    def next(self, timeout: float = 15) -> EmailMessage:
        """The next message delivered (waiting for it, up to `timeout` seconds)."""
        return self.inbox.get(timeout=timeout)

    def taken(self) -> list[EmailMessage]:
        """Every message delivered so far, without waiting."""
        messages = []
        while not self.inbox.empty():
            messages.append(self.inbox.get_nowait())
        return messages


def link_in(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None, "the email has no plain-text part"
    match = LINK.search(body.get_content())
    assert match, "the email holds no sign-in link"
    return match.group(0)


@contextmanager
def smtp_sink() -> Iterator[Sink]:
    """aiosmtpd in its own thread (its Controller), for as long as the block runs."""
    sink = Sink(port=free_port())
    controller = Controller(sink, hostname=sink.host, port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()
