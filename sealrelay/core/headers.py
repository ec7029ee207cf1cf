"""Header-level work on raw messages: what kind of S/MIME layer a message is, our security
markers, and who the visible recipients are. The body is never parsed or re-serialised."""

from __future__ import annotations

import base64
import binascii
import email
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
    return message[: _head_end(message, match)], message[match.end() :]


def header_block(message: bytes) -> bytes:
    """The header block of :func:`split_message`, without copying the body."""
    match = _BODY_SEPARATOR.search(message)
    return message if match is None else message[: _head_end(message, match)]


def _head_end(message: bytes, separator: re.Match[bytes]) -> int:
    start = separator.start()
    return start + (2 if message[start : start + 2] == b"\r\n" else 1)


def parse_headers(message: bytes) -> Message:
    """The header block as an :class:`email.message.Message` (body left out).

    Header bytes are read as UTF-8, which RFC 6532 (SMTPUTF8) allows in headers.
    """
    head = header_block(message)
    text = head.decode("utf-8", "surrogateescape")
    return email.parser.HeaderParser(policy=email.policy.compat32).parsestr(text)


def classify(message: bytes) -> str:
    """``enveloped``, ``signed`` or ``plain``: what the outermost layer of *message* is."""
    return layer_of(parse_headers(message))


def layer_of(headers: Message) -> str:
    """:func:`classify` for a header block :func:`parse_headers` returned."""
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


#: DER of the ContentInfo content types (RFC 5652, RFC 5083) a real S/MIME layer starts with.
_CMS_TYPES: Final = {
    SIGNED: (bytes.fromhex("06092a864886f70d010702"),),
    ENVELOPED: (
        bytes.fromhex("06092a864886f70d010703"),
        bytes.fromhex("060b2a864886f70d0109100117"),
    ),
}


def _opens_as_cms(payload: bytes, layer: str) -> bool:
    """Whether *payload* (base64, or binary) begins like a CMS ContentInfo of *layer*'s kind."""
    compact = b"".join(payload[:512].split())
    try:
        head = base64.b64decode(compact[: len(compact) // 4 * 4][:64], validate=True)
    except binascii.Error:
        head = payload[:48]
    return head[:1] == b"\x30" and any(oid in head[:24] for oid in _CMS_TYPES[layer])


def carries_cms(message: bytes, layer: str) -> bool:
    """Whether a message labelled *layer* (``signed`` or ``enveloped``) holds CMS of that
    kind, not only the label. One Content-Type only: with two, readers differ on which counts.
    """
    _, body = split_message(message)
    headers = parse_headers(message)
    if len(headers.get_all("Content-Type", [])) != 1:
        return False
    if headers.get_content_type() != "multipart/signed":
        return _opens_as_cms(body, layer)
    parsed = email.message_from_bytes(message, policy=email.policy.compat32)
    parts = parsed.get_payload()
    if not isinstance(parts, list) or len(parts) != 2:
        return False
    signature = parts[1]
    if not isinstance(signature, Message):
        return False
    payload = signature.get_payload()
    return (
        signature.get_content_type() in _SIGNATURE_PROTOCOLS
        and isinstance(payload, str)
        and _opens_as_cms(payload.encode("ascii", "replace"), SIGNED)
    )


def _header_lines(head: bytes) -> list[bytes]:
    """Header fields with their continuation lines joined, each keeping its line breaks."""
    fields: list[bytes] = []
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def remove_headers(message: bytes, *names: str) -> bytes:
    """*message* without the header fields named (any case); a name ending in ``-`` removes
    every field whose name starts with it (``X-Sealrelay-``). The body is not touched."""
    exact = {name.lower().encode("ascii") for name in names if not name.endswith("-")}
    prefixes = tuple(name.lower().encode("ascii") for name in names if name.endswith("-"))

    def unwanted(field: bytes) -> bool:
        name = _field_name(field)
        return name in exact or (bool(prefixes) and name.startswith(prefixes))

    head = header_block(message)
    fields = _header_lines(head)
    kept = [field for field in fields if not unwanted(field)]
    if len(kept) == len(fields):
        return message  # the usual case: no copy of the body
    return b"".join(kept) + message[len(head) :]


def add_headers(message: bytes, fields: Iterable[tuple[str, str]]) -> bytes:
    """*message* with header fields prepended, using the message's own line ending.

    Values must be single lines: text from a certificate or a plugin goes through
    :func:`parameter_value` first.
    """
    eol = b"\r\n" if b"\r\n" in message[:4096] else b"\n"
    lines = []
    for name, value in fields:
        if not (name + value).isprintable():
            raise ValueError(f"header field {name!r} would carry a control character")
        lines.append(f"{name}: {value}".encode() + eol)
    return b"".join(lines) + message


_TOKEN = re.compile(r"[A-Za-z0-9@._+=-]+")


def parameter_value(text: str) -> str:
    """*text* as one parameter value of our result headers: a bare token when it is one, else
    a quoted string; control characters (a certificate's CRLF, say) become ``?``, so that no
    text from outside can end the header or start another."""
    if _TOKEN.fullmatch(text):
        return text
    printable = "".join(ch if ch.isprintable() else "?" for ch in text)
    return '"' + printable.replace("\\", "\\\\").replace('"', '\\"') + '"'


def recipients_named(headers: Message) -> set[str]:
    """Normalised addresses named in To, Cc and their Resent- forms, in a header block
    :func:`parse_headers` returned."""
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
    """The normalised address of the From header, or None unless there is exactly one From
    field holding exactly one mailbox: with several, a reader might be shown any of them."""
    values = parse_headers(message).get_all("From", [])
    mailboxes = email.utils.getaddresses([str(value) for value in values])
    if len(values) != 1 or len(mailboxes) != 1:
        return None
    try:
        return str(Address.parse(mailboxes[0][1]))
    except AddressError:
        return None


def _field_name(field: bytes) -> bytes:
    return field.split(b":", 1)[0].strip().lower()


def merge_entity(outer: bytes, inner: bytes) -> bytes:
    """The message to deliver when a layer is unwrapped: the inner entity with the outer
    message's envelope headers (From, To, Subject ...) in front of it.

    Content headers come from the inner entity only; a header the inner entity carries itself
    (a protected header, RFC 8551 3.1) wins over the outer copy.
    """
    outer_head = header_block(outer)
    inner_head = header_block(inner)
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
