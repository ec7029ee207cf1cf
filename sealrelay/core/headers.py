"""Header-level work on raw messages: what kind of S/MIME layer a message is, our security
markers, and who the visible recipients are. The body is never parsed or re-serialised."""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import re
from collections.abc import Iterable
from email.message import Message
from typing import Final

from sealrelay.core.address import Address, AddressError


#: Headers the relay writes on inbound mail. Any header with this prefix on input is a forgery
#: (or a leftover) and is removed before processing.
SECURITY_HEADER_PREFIX: Final = "X-Sealrelay-"
DECRYPTION_HEADER: Final = "X-Sealrelay-Decryption"
SIGNATURE_HEADER: Final = "X-Sealrelay-Signature"

ENVELOPED: Final = "enveloped"
SIGNED: Final = "signed"
PLAIN: Final = "plain"

_BODY_SEPARATOR = re.compile(rb"\r?\n\r?\n")
_PKCS7_MIME = ("application/pkcs7-mime", "application/x-pkcs7-mime")
_SIGNATURE_PROTOCOLS = ("application/pkcs7-signature", "application/x-pkcs7-signature")


def split_message(message: bytes) -> tuple[bytes, bytes]:
    """Header block (with its final line break) and body, sliced from the raw bytes."""
    match = _BODY_SEPARATOR.search(message)
    if match is None:
        return message, b""
    head_end = match.start() + (2 if message[match.start() : match.start() + 2] == b"\r\n" else 1)
    return message[:head_end], message[match.end() :]


def parse_headers(message: bytes) -> Message:
    """The header block as an :class:`email.message.Message` (body left out).

    Header bytes are read as UTF-8, which RFC 6532 (SMTPUTF8) allows in headers.
    """
    head, _ = split_message(message)
    text = head.decode("utf-8", "surrogateescape")
    return email.parser.HeaderParser(policy=email.policy.compat32).parsestr(text)


def classify(message: bytes) -> str:
    """``enveloped``, ``signed`` or ``plain``: what the outermost layer of *message* is."""
    headers = parse_headers(message)
    content_type = headers.get_content_type()
    if content_type in _PKCS7_MIME:
        smime_type = str(headers.get_param("smime-type", "") or "").lower()
        name = str(headers.get_param("name", "") or "").lower()
        if smime_type in ("signed-data",):
            return SIGNED
        if smime_type in ("enveloped-data", "authenveloped-data") or name.endswith(".p7m"):
            return ENVELOPED
        return PLAIN
    if content_type == "multipart/signed":
        protocol = str(headers.get_param("protocol", "") or "").lower()
        return SIGNED if protocol in _SIGNATURE_PROTOCOLS else PLAIN
    return PLAIN


def _header_lines(head: bytes) -> list[bytes]:
    """Header fields with their continuation lines joined, each keeping its line breaks."""
    fields: list[bytes] = []
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def remove_headers(message: bytes, prefix: str) -> bytes:
    """*message* without the header fields whose names start with *prefix* (any case)."""
    head, body = split_message(message)
    wanted = prefix.lower().encode("ascii")
    kept = [field for field in _header_lines(head) if not field.lower().startswith(wanted)]
    return b"".join(kept) + message[len(head) : len(message) - len(body)] + body


def add_headers(message: bytes, fields: Iterable[tuple[str, str]]) -> bytes:
    """*message* with header fields prepended, using the message's own line ending."""
    eol = b"\r\n" if b"\r\n" in message[:4096] else b"\n"
    added = b"".join(f"{name}: {value}".encode() + eol for name, value in fields)
    return added + message


def visible_recipients(message: bytes) -> set[str]:
    """Normalised addresses named in To, Cc and their Resent- forms."""
    headers = parse_headers(message)
    values = [
        str(value)
        for name in ("To", "Cc", "Resent-To", "Resent-Cc")
        for value in headers.get_all(name, [])
    ]
    found = set()
    for _, address in email.utils.getaddresses(values):
        try:
            found.add(str(Address.parse(address)))
        except AddressError:
            continue
    return found


def from_address(message: bytes) -> str | None:
    """The normalised address in the From header, or None when there is no usable one."""
    values = parse_headers(message).get_all("From", [])
    for _, address in email.utils.getaddresses([str(value) for value in values]):
        try:
            return str(Address.parse(address))
        except AddressError:
            continue
    return None


def _field_name(field: bytes) -> bytes:
    return field.split(b":", 1)[0].strip().lower()


def merge_entity(outer: bytes, inner: bytes) -> bytes:
    """The message to deliver when a layer is unwrapped: the inner entity with the outer
    message's envelope headers (From, To, Subject ...) in front of it.

    Content headers come from the inner entity only; a header the inner entity carries itself
    (a protected header, RFC 8551 3.1) wins over the outer copy.
    """
    outer_head, _ = split_message(outer)
    inner_head, _ = split_message(inner)
    inner_names = {_field_name(field) for field in _header_lines(inner_head)}
    kept = [
        field
        for field in _header_lines(outer_head)
        if field.strip()
        and not _field_name(field).startswith(b"content-")
        and _field_name(field) != b"mime-version"
        and _field_name(field) not in inner_names
    ]
    eol = b"\r\n" if inner.find(b"\r\n") != -1 else b"\n"
    kept = [field.rstrip(b"\r\n") + eol for field in kept]
    if b"mime-version" not in inner_names:
        kept.append(b"MIME-Version: 1.0" + eol)
    return b"".join(kept) + inner
