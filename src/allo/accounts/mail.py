"""Mail Allo sends to its own users (a password reset link), through the SMTP server of
`ALLO_SMTP_URL`: smtp://[user:password@]host[:port] (STARTTLS when the server offers it),
or smtps:// for TLS from the start."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

SMTP_TIMEOUT_SECONDS = 15


class MailError(RuntimeError):
    pass


def _send(smtp_url: str, message: EmailMessage) -> None:
    where = urlsplit(smtp_url)
    if where.scheme not in ("smtp", "smtps") or not where.hostname:
        raise MailError("ALLO_SMTP_URL: smtp://[user:password@]host[:port] or smtps://…")
    secure = where.scheme == "smtps"
    port = where.port or (465 if secure else 25)
    context = ssl.create_default_context()
    client: smtplib.SMTP = (
        smtplib.SMTP_SSL(where.hostname, port, timeout=SMTP_TIMEOUT_SECONDS, context=context)
        if secure
        else smtplib.SMTP(where.hostname, port, timeout=SMTP_TIMEOUT_SECONDS)
    )
    with client:
        if not secure and client.has_extn("starttls"):
            client.starttls(context=context)
        if where.username:
            client.login(unquote(where.username), unquote(where.password or ""))
        client.send_message(message)


async def send_mail(smtp_url: str, sender: str, to: str, subject: str, body: str) -> None:
    """Send one plain-text message; raises MailError or an SMTP/OS error when it cannot."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    await asyncio.to_thread(_send, smtp_url, message)
