"""Sign-in emails: plain text with the link, sent over SMTP in the background so no request waits on it."""

from __future__ import annotations

import logging
from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib

from hub.settings import SmtpSettings

log = logging.getLogger("gpuclub")


def message(smtp: SmtpSettings, *, to: str, subject: str, body: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = smtp.from_address
    mail["To"] = to
    mail["Subject"] = subject
    mail["Message-ID"] = make_msgid(domain=smtp.from_address.rpartition("@")[2].rstrip(">") or None)
    mail.set_content(body)
    return mail


async def send(smtp: SmtpSettings, mail: EmailMessage) -> bool:
    """Deliver `mail`; a failure is logged (never the message, which holds a sign-in link) and not raised."""
    try:
        await aiosmtplib.send(
            mail,
            hostname=smtp.host,
            port=smtp.port,
            username=smtp.username,
            password=smtp.password,
            use_tls=smtp.tls == "tls",
            start_tls=smtp.tls == "starttls",
            timeout=smtp.timeout,
        )
    except (aiosmtplib.SMTPException, OSError) as exc:
        # The server's reply or the socket error, and the recipient: the body (and its token) stays out of the log.
        log.warning("could not send a sign-in email to %s via %s:%s: %s", mail["To"], smtp.host, smtp.port, exc)
        return False
    return True
