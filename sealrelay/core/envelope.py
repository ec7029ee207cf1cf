"""The SMTP envelope of one message: who sent it, to whom, and how it arrived."""

from __future__ import annotations

import datetime as dt
import secrets

import attrs

from sealrelay.core.address import Address


def new_message_id() -> str:
    """A queue identifier that is unique across nodes and sorts roughly by time."""
    now = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    return f"{now}.{secrets.token_hex(6)}"


def _addresses(values: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    return tuple(str(Address.parse(value)) for value in values)


def _sender(value: str) -> str:
    return str(Address.parse(value)) if value.strip() not in ("", "<>") else ""


@attrs.frozen(kw_only=True)
class Envelope:
    """Sender and recipients as given in MAIL FROM and RCPT TO, normalised.

    ``sender`` is ``""`` for the null reverse path (bounces). Addresses are normalised by
    :class:`~sealrelay.core.address.Address` (IDN domains in Unicode, lower-case).
    """

    sender: str = attrs.field(converter=_sender)
    recipients: tuple[str, ...] = attrs.field(converter=_addresses)
    #: ``outbound`` (a subscriber sends out) or ``inbound`` (mail for a subscriber arrives).
    direction: str = attrs.field(
        default="outbound", validator=attrs.validators.in_(("outbound", "inbound"))
    )
    id: str = attrs.field(factory=new_message_id)
    received_at: dt.datetime = attrs.field(factory=lambda: dt.datetime.now(dt.UTC))
    #: The SMTP client's address, or None when the message came from the command line.
    client_address: str | None = None
    #: The authenticated submitter (SMTP AUTH or HTTP login), or None.
    authenticated_as: str | None = None

    @recipients.validator
    def _at_least_one(
        self, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]
    ) -> None:
        if not value:
            raise ValueError("an envelope needs at least one recipient")
