"""Sending email over SMTP (`BXB_SMTP_URL`: smtp://[user:password@]host[:port],
from `BXB_SMTP_FROM`). smtplib runs in a worker thread, so a slow server
never blocks the service's event loop."""

from __future__ import annotations

import asyncio
import smtplib
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from urllib.parse import SplitResult, unquote, urlsplit

from services.common.errors import FailedPrecondition, Unavailable


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    maintype: str = "application"
    subtype: str = "pdf"


class Mailer:
    def __init__(self, url: str, sender: str, timeout: float = 10.0):
        self.url = urlsplit(url) if url else None
        self.sender = sender
        self.timeout = timeout

    async def send(self, to: list[str], subject: str, body: str, attachment: Attachment) -> str:
        """Sends one email; returns its Message-ID."""
        if self.url is None:
            raise FailedPrecondition(
                "email is not configured: set BXB_SMTP_URL", reason="SMTP_NOT_CONFIGURED", field="to"
            )
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = self.sender, ", ".join(to), subject
        message["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2] or None)
        message.set_content(body)
        message.add_attachment(
            attachment.content, maintype=attachment.maintype, subtype=attachment.subtype, filename=attachment.filename
        )
        try:
            await asyncio.to_thread(self._deliver, self.url, message)
        except (OSError, smtplib.SMTPException) as error:
            raise Unavailable(f"the SMTP server refused or could not be reached: {error}", field="to") from None
        message_id: str = message["Message-ID"]
        return message_id

    def _deliver(self, url: SplitResult, message: EmailMessage) -> None:
        with smtplib.SMTP(url.hostname or "127.0.0.1", url.port or 25, timeout=self.timeout) as smtp:
            if url.username:
                smtp.login(unquote(url.username), unquote(url.password or ""))
            smtp.send_message(message)
