"""Delivery status notifications (RFC 3464) to a message's envelope sender: the bounce, and
the warning that a message is delayed.

Built by hand, like the rest of the hot path: a multipart/report with a human-readable part,
the message/delivery-status part and the original message's header (never its body, which
may be encrypted or private).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import secrets
from collections.abc import Sequence

from sealrelay.core.headers import header_block
from sealrelay.spool.store import EntryMeta, FailedRecipient


def _address_type(address: str) -> str:
    """RFC 6533: a non-ASCII address is of type utf-8, an ASCII one rfc822."""
    return "rfc822" if address.isascii() else "utf-8"


def build_dsn(
    *,
    reporting_mta: str,
    original: EntryMeta,
    original_content: bytes,
    failures: Sequence[FailedRecipient],
    now: dt.datetime | None = None,
) -> bytes:
    """The bounce for *failures* of the message *original*, as bytes with CRLF line ends."""
    return _report(
        reporting_mta=reporting_mta,
        original=original,
        original_content=original_content,
        recipients=failures,
        subject="Undelivered Mail Returned to Sender",
        explanation=[
            "Your message could not be delivered to the following recipients; the reason",
            "each gave is below. This is final: the message will not be tried again.",
        ],
        action="failed",
        now=now,
    )


def build_delay_notice(
    *,
    reporting_mta: str,
    original: EntryMeta,
    original_content: bytes,
    delayed: Sequence[FailedRecipient],
    retry_until: dt.datetime,
    now: dt.datetime | None = None,
) -> bytes:
    """The warning that *original* still waits for the *delayed* recipients and is tried
    again until *retry_until* (RFC 3464 ``Action: delayed``), as bytes with CRLF line ends."""
    return _report(
        reporting_mta=reporting_mta,
        original=original,
        original_content=original_content,
        recipients=delayed,
        subject="Delayed Mail (still being retried)",
        explanation=[
            "Your message has not been delivered yet to the following recipients; the reason",
            f"each gave is below. It is tried again until {_date(retry_until)}.",
            "This is a warning only: you do not need to send the message again.",
        ],
        action="delayed",
        will_retry_until=retry_until,
        now=now,
    )


def _report(
    *,
    reporting_mta: str,
    original: EntryMeta,
    original_content: bytes,
    recipients: Sequence[FailedRecipient],
    subject: str,
    explanation: list[str],
    action: str,
    will_retry_until: dt.datetime | None = None,
    now: dt.datetime | None,
) -> bytes:
    now = now or dt.datetime.now(dt.UTC)
    boundary = f"=_sealrelay_{secrets.token_hex(12)}"
    arrival = dt.datetime.fromtimestamp(original.received_at, dt.UTC)
    head = header_block(original_content)

    text = [f"This is the mail system at {reporting_mta}.", "", *explanation, ""]
    text += [f"<{r.recipient}>: {r.diagnostic}" for r in recipients]

    status = [f"Reporting-MTA: dns; {reporting_mta}", f"Arrival-Date: {_date(arrival)}", ""]
    for recipient in recipients:
        status += [
            f"Final-Recipient: {_address_type(recipient.recipient)}; {recipient.recipient}",
            f"Action: {action}",
            f"Status: {recipient.status}",
        ]
        if recipient.smtp:
            status.append(f"Diagnostic-Code: smtp; {recipient.diagnostic}")
        if will_retry_until is not None:
            status.append(f"Will-Retry-Until: {_date(will_retry_until)}")
        status.append("")

    headers = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{original.sender}>",
        f"Subject: {subject}",
        f"Date: {_date(now)}",
        f"Message-ID: <{original.id}.dsn.{secrets.token_hex(4)}@{reporting_mta}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f' boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "Content-Description: Notification",
        "",
        *text,
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "Content-Description: Delivery report",
        "",
        *status,
        f"--{boundary}",
        "Content-Type: text/rfc822-headers",
        "Content-Description: Undelivered message headers",
        "",
    ]
    report = "\r\n".join(headers).encode("utf-8") + b"\r\n"
    original_head = head.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return report + original_head + f"\r\n--{boundary}--\r\n".encode()


def _date(moment: dt.datetime) -> str:
    return email.utils.format_datetime(moment.astimezone(dt.UTC))
