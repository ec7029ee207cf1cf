"""Hand-built MIME on raw bytes: splitting, canonicalisation, S/MIME wrapping and unwrapping.

The `email` package is deliberately not used here: re-serialising a parsed message changes bytes
that a signature covers (header spacing, folding, line ends), and it is slow on large messages.
Every function slices the input bytes and only ever builds the few structures S/MIME needs.

Vocabulary: an *entity* is a MIME header block, an empty line and a body; a *message* is an
entity whose header block also carries the RFC 5322 fields (From, To, Subject, ...).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Mapping

import attrs

from sealrelay.smime.errors import MalformedMessage


CRLF = b"\r\n"

_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_FIELD_NAME = re.compile(rb"[!-9;-~]+")
_LONG_LINE = re.compile(rb"^[^\r\n]{999}", re.MULTILINE)
_BOUNDARY_CHARS = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{1,70}")
_BASE64_WHITESPACE = b" \t\r\n"

SIGNATURE_TYPES = frozenset({"application/pkcs7-signature", "application/x-pkcs7-signature"})
PKCS7_MIME_TYPES = frozenset({"application/pkcs7-mime", "application/x-pkcs7-mime"})
MICALGS = {"sha256": "sha-256", "sha384": "sha-384", "sha512": "sha-512"}


def canonicalize(data: bytes) -> bytes:
    """Every line end becomes CRLF; nothing else changes (trailing whitespace is kept)."""
    lf = data.count(b"\n")
    if lf == 0 or lf == data.count(CRLF):
        return data
    return data.replace(CRLF, b"\n").replace(b"\n", CRLF)


def split_entity(entity: bytes) -> tuple[bytes, bytes]:
    """(header block, body): the header block keeps its line ends, the empty line is dropped.

    Works on CRLF and bare-LF input alike. An entity without an empty line is all headers.
    """
    if entity.startswith(CRLF):
        return b"", entity[2:]
    if entity.startswith(b"\n"):
        return b"", entity[1:]
    match = _BLANK_LINE.search(entity)
    if match is None:
        return entity, b""
    newline = 2 if entity[match.start() : match.start() + 2] == CRLF else 1
    return entity[: match.start() + newline], entity[match.end() :]


@attrs.frozen
class HeaderField:
    """One header field as received: `raw` includes folded lines and the final line end."""

    name: str
    raw: bytes

    @property
    def value(self) -> str:
        """The unfolded value, surrounding whitespace removed (undecoded 8-bit kept as latin-1)."""
        _, _, value = self.raw.partition(b":")
        unfolded = value.replace(b"\r\n", b"").replace(b"\n", b"")
        return unfolded.decode("latin-1").strip()


def header_fields(header_block: bytes) -> list[HeaderField]:
    """The header fields in order; a line without a colon becomes a field with an empty name."""
    fields: list[HeaderField] = []
    for line in header_block.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            last = fields[-1]
            fields[-1] = HeaderField(last.name, last.raw + line)
            continue
        name, colon, _ = line.partition(b":")
        is_field = colon and _FIELD_NAME.fullmatch(name)
        fields.append(HeaderField(name.decode("ascii").lower() if is_field else "", line))
    return fields


def get_header(header_block: bytes, name: str) -> str | None:
    """The value of the first field called `name` (case-insensitive), or None."""
    wanted = name.lower()
    for field in header_fields(header_block):
        if field.name == wanted:
            return field.value
    return None


@attrs.frozen
class ContentType:
    maintype: str
    subtype: str
    params: Mapping[str, str] = attrs.field(factory=dict)

    @property
    def mime_type(self) -> str:
        return f"{self.maintype}/{self.subtype}"


_DEFAULT_CONTENT_TYPE = ContentType("text", "plain", {"charset": "us-ascii"})


def _skip_comment(value: str, pos: int) -> int:
    depth = 0
    while pos < len(value):
        char = value[pos]
        if char == "\\":
            pos += 1
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return pos + 1
        pos += 1
    return pos


def _tokens(value: str) -> list[tuple[str, str]]:
    """RFC 2045 lexing: ('q', quoted-string), ('s', special) or ('t', token); comments dropped."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(value):
        char = value[pos]
        if char.isspace():
            pos += 1
        elif char == "(":
            pos = _skip_comment(value, pos)
        elif char == '"':
            pos += 1
            out: list[str] = []
            while pos < len(value) and value[pos] != '"':
                if value[pos] == "\\" and pos + 1 < len(value):
                    pos += 1
                out.append(value[pos])
                pos += 1
            tokens.append(("q", "".join(out)))
            pos += 1
        elif char in ";=/":
            tokens.append(("s", char))
            pos += 1
        else:
            start = pos
            while pos < len(value) and not value[pos].isspace() and value[pos] not in ';=/"(':
                pos += 1
            tokens.append(("t", value[start:pos]))
    return tokens


def parse_content_type(value: str | None) -> ContentType:
    """A Content-Type value; a missing or unparsable one means text/plain (RFC 2045 5.2)."""
    if value is None:
        return _DEFAULT_CONTENT_TYPE
    tokens = _tokens(value)
    if len(tokens) < 3 or tokens[1] != ("s", "/") or tokens[0][0] != "t" or tokens[2][0] != "t":
        return _DEFAULT_CONTENT_TYPE
    params: dict[str, str] = {}
    rest = tokens[3:]
    for i, token in enumerate(rest):
        is_assignment = token == ("s", "=") and 0 < i < len(rest) - 1 and rest[i - 1][0] == "t"
        if is_assignment and rest[i + 1][0] in "qt":
            params.setdefault(rest[i - 1][1].lower(), rest[i + 1][1])
    return ContentType(tokens[0][1].lower(), tokens[2][1].lower(), params)


def content_type_of(header_block: bytes) -> ContentType:
    return parse_content_type(get_header(header_block, "Content-Type"))


@attrs.frozen
class Multipart:
    """A multipart body cut at its delimiters; the CRLF before a delimiter is not in any part.

    `preamble` runs up to the first dash-boundary (including the line end before it) and
    `epilogue` is everything after the closing "--boundary--".
    """

    preamble: bytes
    parts: tuple[bytes, ...]
    epilogue: bytes


def _boundary_of(content_type: ContentType) -> bytes:
    boundary = content_type.params.get("boundary")
    if not boundary or not _BOUNDARY_CHARS.fullmatch(boundary) or boundary.endswith(" "):
        raise MalformedMessage(f"{content_type.mime_type} without a valid boundary parameter")
    return boundary.encode("ascii")


def _find_delimiter(body: bytes, dash_boundary: bytes, start: int) -> tuple[int, int, bool]:
    """(start of the delimiter incl. its line end, end of its line, is it the close delimiter)."""
    pos = start
    at_start = start == 0 and body.startswith(dash_boundary)
    while True:
        if at_start:
            at_start = False
            hit, line_start = 0, 0
        else:
            found = body.find(b"\n" + dash_boundary, pos)
            if found < 0:
                raise MalformedMessage("multipart body without its closing delimiter")
            line_start = found + 1
            hit = found - 1 if found > 0 and body[found - 1 : found] == b"\r" else found
        after = line_start + len(dash_boundary)
        is_close = body[after : after + 2] == b"--"
        rest_start = after + 2 if is_close else after
        line_end = body.find(b"\n", rest_start)
        line_end = len(body) if line_end < 0 else line_end + 1
        if body[rest_start:line_end].strip(b" \t\r\n") == b"":
            return hit, line_end, is_close
        pos = line_start  # "--boundary" only began a longer line: keep looking


def split_multipart(body: bytes, content_type: ContentType) -> Multipart:
    """Cuts a multipart body into its parts, exactly as received (raises MalformedMessage)."""
    dash_boundary = b"--" + _boundary_of(content_type)
    first, line_end, is_close = _find_delimiter(body, dash_boundary, 0)
    preamble_end = first if first == 0 else body.index(dash_boundary, first)
    parts: list[bytes] = []
    while not is_close:
        start = line_end
        hit, line_end, is_close = _find_delimiter(body, dash_boundary, start)
        parts.append(body[start:hit])
    if not parts:
        raise MalformedMessage("multipart body without any part")
    return Multipart(body[:preamble_end], tuple(parts), body[line_end:])


def join_multipart(multipart: Multipart, content_type: ContentType) -> bytes:
    dash_boundary = b"--" + _boundary_of(content_type)
    pieces = [multipart.preamble]
    for part in multipart.parts:
        pieces += [dash_boundary, CRLF, part, CRLF]
    pieces += [dash_boundary, b"--", CRLF, multipart.epilogue]
    return b"".join(pieces)


# --- preparing an entity for signing (RFC 8551 3.1) -----------------------------------------


def _replace_transfer_encoding(header_block: bytes, encoding: str) -> bytes:
    kept = [f.raw for f in header_fields(header_block) if f.name != "content-transfer-encoding"]
    if kept and not kept[-1].endswith(b"\n"):
        kept[-1] += CRLF
    return b"".join(kept) + f"Content-Transfer-Encoding: {encoding}".encode() + CRLF


def _quoted_printable(data: bytes) -> bytes:
    encoded = binascii.b2a_qp(canonicalize(data), quotetabs=False, istext=True, header=False)
    # mbox stores rewrite "From " at a line start to ">From ", which breaks the signature.
    encoded = encoded.replace(b"\nFrom ", b"\n=46rom ")
    if encoded.startswith(b"From "):
        encoded = b"=46rom " + encoded[5:]
    return encoded


def base64_lines(data: bytes) -> bytes:
    """Base64 in 76-character lines, each ending in CRLF."""
    return base64.encodebytes(data).replace(b"\n", CRLF)


def _needs_encoding(transfer_encoding: str, body: bytes) -> bool:
    if transfer_encoding in ("quoted-printable", "base64"):
        return False
    return (
        transfer_encoding in ("8bit", "binary")
        or not body.isascii()
        or _LONG_LINE.search(body) is not None
    )


def _seven_bit_multipart(
    entity: bytes, headers: bytes, body: bytes, content_type: ContentType
) -> bytes:
    multipart = split_multipart(body, content_type)
    parts = tuple(_seven_bit(part) for part in multipart.parts)
    if parts == multipart.parts:
        return entity
    if (get_header(headers, "Content-Transfer-Encoding") or "7bit").lower() != "7bit":
        headers = _replace_transfer_encoding(headers, "7bit")
    return b"".join(
        [headers, CRLF, join_multipart(attrs.evolve(multipart, parts=parts), content_type)]
    )


def _seven_bit(entity: bytes) -> bytes:
    headers, body = split_entity(entity)
    content_type = content_type_of(headers)
    if content_type.maintype == "multipart":
        return _seven_bit_multipart(entity, headers, body, content_type)
    if content_type.mime_type == "message/rfc822":
        # RFC 2046 5.2.1 forbids QP/base64 on message/rfc822: encode inside the message instead.
        inner = _seven_bit(body)
        return (
            entity if inner == body else _replace_transfer_encoding(headers, "7bit") + CRLF + inner
        )
    transfer_encoding = (get_header(headers, "Content-Transfer-Encoding") or "7bit").lower()
    if not _needs_encoding(transfer_encoding, body):
        return entity
    if content_type.maintype == "text":
        return (
            _replace_transfer_encoding(headers, "quoted-printable") + CRLF + _quoted_printable(body)
        )
    return _replace_transfer_encoding(headers, "base64") + CRLF + base64_lines(body)


def prepare_for_signing(entity: bytes) -> bytes:
    """The entity re-encoded so that every byte a signature covers survives 7-bit transport.

    8bit and binary leaf parts (and 7bit ones with 8-bit bytes or lines over 998 octets) become
    quoted-printable (text) or base64; then every line end becomes CRLF. Parts that are already
    7-bit safe keep their exact bytes.
    """
    return canonicalize(_seven_bit(entity))


# --- building S/MIME entities -------------------------------------------------------------


def _new_boundary(content: bytes) -> bytes:
    while True:
        boundary = b"----sealrelay-" + secrets.token_hex(16).encode("ascii")
        if boundary not in content:
            return boundary


def multipart_signed(entity: bytes, signature: bytes, *, digest: str) -> bytes:
    """A multipart/signed entity: `entity` (CRLF, exactly as signed) and the DER signature."""
    micalg = MICALGS[digest]
    boundary = _new_boundary(entity)
    dash_boundary = b"--" + boundary
    return b"".join(
        [
            b'Content-Type: multipart/signed; protocol="application/pkcs7-signature";\r\n',
            b" micalg=",
            micalg.encode("ascii"),
            b'; boundary="',
            boundary,
            b'"\r\n\r\n',
            b"This is a cryptographically signed message in MIME format.\r\n\r\n",
            dash_boundary,
            CRLF,
            entity,
            CRLF,
            dash_boundary,
            CRLF,
            b'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n',
            b"Content-Transfer-Encoding: base64\r\n",
            b'Content-Disposition: attachment; filename="smime.p7s"\r\n',
            b"Content-Description: S/MIME Cryptographic Signature\r\n\r\n",
            base64_lines(signature),
            dash_boundary,
            b"--\r\n",
        ]
    )


def pkcs7_mime_entity(der: bytes, smime_type: str, name: str = "smime.p7m") -> bytes:
    """An application/pkcs7-mime entity (signed-data, enveloped-data, authEnveloped-data...)."""
    header = (
        f"Content-Type: application/pkcs7-mime; smime-type={smime_type}; name={name}\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        f"Content-Disposition: attachment; filename={name}\r\n"
        "\r\n"
    )
    return header.encode("ascii") + base64_lines(der)


# --- messages: outer RFC 5322 headers around a content entity -------------------------------


def _is_content_field(field: HeaderField) -> bool:
    return field.name.startswith("content-") or field.name == "mime-version"


def detach_content(message: bytes) -> tuple[bytes, bytes]:
    """(outer header block, content entity) of a message, both CRLF.

    The Content-* fields move into the entity, every other field stays outside; MIME-Version
    is dropped from both (`attach_content` writes it on the outside, the only place it belongs).
    A message without a Content-Type gets the explicit RFC 2045 default.
    """
    headers, body = split_entity(canonicalize(message))
    outer: list[bytes] = []
    inner: list[bytes] = []
    has_content_type = False
    for field in header_fields(headers):
        if not _is_content_field(field):
            outer.append(field.raw)
        elif field.name != "mime-version":
            inner.append(field.raw)
            has_content_type = has_content_type or field.name == "content-type"
    if not has_content_type:
        inner.insert(0, b"Content-Type: text/plain; charset=us-ascii\r\n")
    return b"".join(outer), b"".join(inner) + CRLF + body


def attach_content(outer_headers: bytes, entity: bytes) -> bytes:
    """A message from outer header fields and a (signed or encrypted) content entity."""
    return outer_headers + b"MIME-Version: 1.0\r\n" + entity


# --- parsing S/MIME entities --------------------------------------------------------------


def decode_base64(data: bytes) -> bytes:
    try:
        return base64.b64decode(data.translate(None, _BASE64_WHITESPACE), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedMessage(f"broken base64 in an S/MIME part: {exc}") from None


def _decoded_body(headers: bytes, body: bytes) -> bytes:
    encoding = (get_header(headers, "Content-Transfer-Encoding") or "7bit").lower()
    if encoding == "base64":
        return decode_base64(body)
    if encoding in ("7bit", "8bit", "binary"):
        return body
    raise MalformedMessage(f"S/MIME part with unsupported Content-Transfer-Encoding {encoding!r}")


@attrs.frozen
class ClearSigned:
    """The two halves of a multipart/signed entity."""

    content: bytes  # the first body part, byte for byte, CRLF canonical
    signature: bytes  # DER (or BER) CMS ContentInfo
    micalg: str | None


def parse_multipart_signed(entity: bytes) -> ClearSigned:
    """Cuts a multipart/signed entity (or message) into signed content and signature."""
    headers, body = split_entity(canonicalize(entity))
    content_type = content_type_of(headers)
    if content_type.mime_type != "multipart/signed":
        raise MalformedMessage(f"expected multipart/signed, found {content_type.mime_type}")
    protocol = content_type.params.get("protocol", "").lower()
    if protocol not in SIGNATURE_TYPES:
        raise MalformedMessage(f"multipart/signed with unsupported protocol {protocol!r}")
    parts = split_multipart(body, content_type).parts
    if len(parts) != 2:
        raise MalformedMessage(f"multipart/signed with {len(parts)} parts instead of 2")
    sig_headers, sig_body = split_entity(parts[1])
    sig_type = content_type_of(sig_headers).mime_type
    if sig_type not in SIGNATURE_TYPES:
        raise MalformedMessage(f"second part of multipart/signed is {sig_type}, not a signature")
    return ClearSigned(
        parts[0], _decoded_body(sig_headers, sig_body), content_type.params.get("micalg")
    )


@attrs.frozen
class Pkcs7Mime:
    smime_type: str | None  # the smime-type parameter, lower case, if any
    der: bytes


def parse_pkcs7_mime(entity: bytes) -> Pkcs7Mime:
    """The CMS bytes inside an application/pkcs7-mime entity (or message)."""
    headers, body = split_entity(entity)
    content_type = content_type_of(headers)
    is_p7m = content_type.mime_type in PKCS7_MIME_TYPES or (
        content_type.mime_type == "application/octet-stream"
        and content_type.params.get("name", "").lower().endswith(".p7m")
    )
    if not is_p7m:
        raise MalformedMessage(f"expected application/pkcs7-mime, found {content_type.mime_type}")
    smime_type = content_type.params.get("smime-type")
    return Pkcs7Mime(smime_type.lower() if smime_type else None, _decoded_body(headers, body))


def smime_kind(entity: bytes) -> str | None:
    """ "multipart-signed", the smime-type of a pkcs7-mime entity ("" if absent), or None."""
    content_type = content_type_of(split_entity(entity)[0])
    if content_type.mime_type == "multipart/signed":
        protocol = content_type.params.get("protocol", "").lower()
        return "multipart-signed" if protocol in SIGNATURE_TYPES else None
    if content_type.mime_type in PKCS7_MIME_TYPES:
        return content_type.params.get("smime-type", "").lower()
    return None
