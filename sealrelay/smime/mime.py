"""Hand-built MIME on raw bytes: splitting, canonicalisation, S/MIME wrapping and unwrapping.

The `email` package is deliberately not used here: re-serialising a parsed message changes bytes
that a signature covers (header spacing, folding, line ends), and it is slow on large messages.
Every function slices the input bytes and only ever builds the few structures S/MIME needs.

Vocabulary: an *entity* is a MIME header block, an empty line and a body; a *message* is an
entity whose header block also carries the RFC 5322 fields (From, To, Subject, ...).
"""

from __future__ import annotations

import binascii
import functools
import re
import secrets
import struct
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import NamedTuple

import attrs

from sealrelay.smime.errors import MalformedMessage


CRLF = b"\r\n"

#: A field name (RFC 5322 3.6.8) and the colon after it, at the start of a line.
_FIELD_NAME = re.compile(rb"([!-9;-~]+):")
#: RFC 5322 2.1.1: at most 998 octets per line, excluding the CRLF.
_MAX_LINE = 998
_BOUNDARY_CHARS = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{1,70}")
_BASE64_WHITESPACE = b" \t\r\n"

SIGNATURE_TYPES = frozenset({"application/pkcs7-signature", "application/x-pkcs7-signature"})
PKCS7_MIME_TYPES = frozenset({"application/pkcs7-mime", "application/x-pkcs7-mime"})
MICALGS = {"sha256": "sha-256", "sha384": "sha-384", "sha512": "sha-512"}


# Matches exactly the data in which every LF follows a CR (bare CRs allowed). The possessive
# quantifiers never backtrack, so this is one C-speed pass: twice as fast as counting LF and
# CRLF, on the path every message takes.
_CANONICAL = re.compile(rb"(?:[^\n]*+(?<=\r)\n)*+[^\n]*+")


def canonicalize(data: bytes) -> bytes:
    """Every line end becomes CRLF; nothing else changes (trailing whitespace is kept)."""
    if _CANONICAL.fullmatch(data):
        return data
    return data.replace(CRLF, b"\n").replace(b"\n", CRLF)


def _split_offsets(entity: bytes) -> tuple[int, int]:
    """(end of the header block, start of the body), as `split_entity` cuts them."""
    if entity.startswith(CRLF):
        return 0, 2
    if entity.startswith(b"\n"):
        return 0, 1
    # The header block ends at the first LF followed by an empty line (CRLF or LF). Two plain
    # searches, the second only up to where the first stopped: a regex with an optional CR
    # in front cannot skip ahead and tries every position.
    crlf = entity.find(b"\n\r\n")
    lf = entity.find(b"\n\n", 0, len(entity) if crlf < 0 else crlf + 1)
    if lf >= 0:
        return lf + 1, lf + 2
    if crlf >= 0:
        return crlf + 1, crlf + 3
    return len(entity), len(entity)


def split_entity(entity: bytes) -> tuple[bytes, bytes]:
    """(header block, body): the header block keeps its line ends, the empty line is dropped.

    Works on CRLF and bare-LF input alike. An entity without an empty line is all headers.
    """
    header_end, body_start = _split_offsets(entity)
    return entity[:header_end], entity[body_start:]


class HeaderField(NamedTuple):
    """One header field as received: `raw` includes folded lines and the final line end.

    (A NamedTuple: every message's header is split into these, and a frozen attrs class costs
    several times as much to build.)
    """

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
        name = _FIELD_NAME.match(line)
        fields.append(HeaderField(name[1].decode("ascii").lower() if name else "", line))
    return fields


def get_header(header_block: bytes, name: str) -> str | None:
    """The value of the first field called `name` (case-insensitive), or None."""
    return _value_of(header_fields(header_block), name)


def _value_of(fields: list[HeaderField], name: str) -> str | None:
    wanted = name.lower()
    for field in fields:
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


# One lexeme per match, tried in this order: a quoted-string (an unterminated one runs to the
# end, a final lone backslash is kept), a special, a token, the start of a comment, whitespace.
# Every character starts one of them, so a match never fails.
_LEXEME = re.compile(r'"((?:[^"\\]|\\.)*\\?)"?|([;=/])|([^\s;=/"(]+)|(\()|\s+', re.DOTALL)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)


def _tokens(value: str) -> list[tuple[str, str]]:
    """RFC 2045 lexing: ('q', quoted-string), ('s', special) or ('t', token); comments dropped."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(value):
        match = _LEXEME.match(value, pos)
        assert match is not None  # noqa: S101 -- the last alternatives cover every character
        quoted, special, token, comment = match.groups()
        if quoted is not None:
            tokens.append(("q", _QUOTED_PAIR.sub(r"\1", quoted)))
        elif special is not None:
            tokens.append(("s", special))
        elif token is not None:
            tokens.append(("t", token))
        elif comment is not None:
            pos = _skip_comment(value, pos)
            continue
        pos = match.end()
    return tokens


#: Content-Type values up to this length are cached: a relay sees the same few again and again,
#: and verification parses a multipart/signed one twice.
_MAX_CACHED_CONTENT_TYPE = 1024


def parse_content_type(value: str | None) -> ContentType:
    """A Content-Type value; a missing or unparsable one means text/plain (RFC 2045 5.2)."""
    if value is None:
        return _DEFAULT_CONTENT_TYPE
    if len(value) <= _MAX_CACHED_CONTENT_TYPE:
        return _cached_content_type(value)
    return _parse_content_type(value)


def _parse_content_type(value: str) -> ContentType:
    tokens = _tokens(value)
    if len(tokens) < 3 or tokens[1] != ("s", "/") or tokens[0][0] != "t" or tokens[2][0] != "t":
        return _DEFAULT_CONTENT_TYPE
    params: dict[str, str] = {}
    rest = tokens[3:]
    for i, token in enumerate(rest):
        is_assignment = token == ("s", "=") and 0 < i < len(rest) - 1 and rest[i - 1][0] == "t"
        if is_assignment and rest[i + 1][0] in "qt":
            params.setdefault(rest[i - 1][1].lower(), rest[i + 1][1])
    # Read-only: the same object is handed to every caller that parses this value.
    return ContentType(tokens[0][1].lower(), tokens[2][1].lower(), MappingProxyType(params))


_cached_content_type = functools.lru_cache(maxsize=256)(_parse_content_type)


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


# 57 input bytes make one 76-character line. The input is encoded in chunks of many lines so
# that a large one never has a second, unbroken base64 copy beside the final lines; the lines
# of a chunk are cut in C by struct formats of 1024, 512, ..., 1 lines ("76s" each), since
# base64.encodebytes runs a Python loop per line and a regex split costs twice as much.
_BASE64_CHUNK_LINES = 1024
_BASE64_CHUNK = 57 * _BASE64_CHUNK_LINES
_BASE64_CUTTERS = tuple(
    struct.Struct("76s" * lines) for lines in (1 << bit for bit in range(10, -1, -1))
)


def _base64_line_list(encoded: bytes) -> list[bytes]:
    lines: list[bytes] = []
    pos = 0
    full_lines = len(encoded) // 76
    for cutter in _BASE64_CUTTERS:
        if full_lines & (cutter.size // 76):
            lines += cutter.unpack_from(encoded, pos)
            pos += cutter.size
    if pos < len(encoded):
        lines.append(encoded[pos:])
    return lines


def base64_pieces(data: bytes | bytearray | memoryview) -> list[bytes]:
    """`base64_lines(data)` as pieces to join: callers put them straight into their output."""
    view = memoryview(data).cast("B")
    pieces: list[bytes] = []
    for start in range(0, len(view), _BASE64_CHUNK):
        encoded = binascii.b2a_base64(view[start : start + _BASE64_CHUNK], newline=False)
        pieces += (CRLF.join(_base64_line_list(encoded)), CRLF)
    return pieces


def base64_lines(data: bytes | bytearray | memoryview) -> bytes:
    """Base64 in 76-character lines, each ending in CRLF."""
    return b"".join(base64_pieces(data))


def _has_long_line(body: bytes) -> bool:
    """True if a line has more than 998 octets before its first CR or LF.

    Jumps from line start to the last line end within the next 999 octets, so that it reads
    each stretch of text with one C-level search instead of a regex test at every position.
    """
    start = 0
    while len(body) - start > _MAX_LINE:
        window_end = start + _MAX_LINE + 1
        last_lf = body.rfind(b"\n", start, window_end)
        if last_lf >= 0:
            start = last_lf + 1  # every line starting up to here ends inside the window
        elif body.find(b"\r", start, window_end) < 0:
            return True
        else:
            # A bare CR cuts the line short; the next line starts after the next LF.
            next_lf = body.find(b"\n", window_end)
            if next_lf < 0:
                return False
            start = next_lf + 1
    return False


def _needs_encoding(transfer_encoding: str, body: bytes) -> bool:
    if transfer_encoding in ("quoted-printable", "base64"):
        return False
    return transfer_encoding in ("8bit", "binary") or not body.isascii() or _has_long_line(body)


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
    fields = header_fields(headers)
    content_type = parse_content_type(_value_of(fields, "Content-Type"))
    if content_type.maintype == "multipart":
        return _seven_bit_multipart(entity, headers, body, content_type)
    if content_type.mime_type == "message/rfc822":
        # RFC 2046 5.2.1 forbids QP/base64 on message/rfc822: encode inside the message instead.
        inner = _seven_bit(body)
        return (
            entity if inner == body else _replace_transfer_encoding(headers, "7bit") + CRLF + inner
        )
    transfer_encoding = (_value_of(fields, "Content-Transfer-Encoding") or "7bit").lower()
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
    return _prepare(entity, canonical=False)


def _prepare(entity: bytes, *, canonical: bool) -> bytes:
    """`prepare_for_signing`; `canonical` says the entity is known to be CRLF already, so an
    entity that needs no re-encoding is returned without another pass over it."""
    prepared = _seven_bit(entity)
    if canonical and prepared is entity:
        return entity
    return canonicalize(prepared)


def prepare_canonical_for_signing(entity: bytes) -> bytes:
    """`prepare_for_signing` for an entity that is CRLF throughout (as `detach_content` makes)."""
    return _prepare(entity, canonical=True)


# --- building S/MIME entities -------------------------------------------------------------


def _new_boundary(content: bytes) -> bytes:
    while True:
        boundary = b"----sealrelay-" + secrets.token_hex(16).encode("ascii")
        if boundary not in content:
            return boundary


def multipart_signed(entity: bytes, signature: bytes, *, digest: str) -> bytes:
    """A multipart/signed entity: `entity` (CRLF, exactly as signed) and the DER signature."""
    return b"".join(multipart_signed_pieces(entity, signature, digest=digest))


def multipart_signed_pieces(entity: bytes, signature: bytes, *, digest: str) -> list[bytes]:
    """`multipart_signed` as pieces to join, so that callers copy the entity only once."""
    micalg = MICALGS[digest]
    boundary = _new_boundary(entity)
    dash_boundary = b"--" + boundary
    return [
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
        *base64_pieces(signature),
        dash_boundary,
        b"--\r\n",
    ]


def pkcs7_mime_entity(der: bytes, smime_type: str, name: str = "smime.p7m") -> bytes:
    """An application/pkcs7-mime entity (signed-data, enveloped-data, authEnveloped-data...)."""
    return b"".join(pkcs7_mime_pieces(der, smime_type, name))


def pkcs7_mime_pieces(
    der: bytes | bytearray | memoryview, smime_type: str, name: str = "smime.p7m"
) -> list[bytes]:
    """`pkcs7_mime_entity` as pieces to join."""
    header = (
        f"Content-Type: application/pkcs7-mime; smime-type={smime_type}; name={name}\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        f"Content-Disposition: attachment; filename={name}\r\n"
        "\r\n"
    )
    return [header.encode("ascii"), *base64_pieces(der)]


# --- messages: outer RFC 5322 headers around a content entity -------------------------------


def _is_content_field(field: HeaderField) -> bool:
    return field.name.startswith("content-") or field.name == "mime-version"


def detach_content(message: bytes) -> tuple[bytes, bytes]:
    """(outer header block, content entity) of a message, both CRLF.

    The Content-* fields move into the entity, every other field stays outside; MIME-Version
    is dropped from both (`attach_content` writes it on the outside, the only place it belongs).
    A message without a Content-Type gets the explicit RFC 2045 default.
    """
    canonical = canonicalize(message)
    header_end, body_start = _split_offsets(canonical)
    outer: list[bytes] = []
    inner: list[bytes] = []
    has_content_type = False
    for field in header_fields(canonical[:header_end]):
        if not _is_content_field(field):
            outer.append(field.raw)
        elif field.name != "mime-version":
            inner.append(field.raw)
            has_content_type = has_content_type or field.name == "content-type"
    if not has_content_type:
        inner.insert(0, b"Content-Type: text/plain; charset=us-ascii\r\n")
    # A view of the body: the entity is the only copy of it made.
    return b"".join(outer), b"".join([*inner, CRLF, memoryview(canonical)[body_start:]])


def attach_content(outer_headers: bytes, entity: bytes) -> bytes:
    """A message from outer header fields and a (signed or encrypted) content entity."""
    return attach_pieces(outer_headers, [entity])


def attach_pieces(outer_headers: bytes, pieces: Sequence[bytes]) -> bytes:
    """`attach_content` for an entity given as pieces: the message is joined in one copy."""
    return b"".join([outer_headers, b"MIME-Version: 1.0\r\n", *pieces])


# --- parsing S/MIME entities --------------------------------------------------------------


def decode_base64(data: bytes) -> bytes:
    return _decode_base64_text(data.translate(None, _BASE64_WHITESPACE))


def _decode_base64_text(text: bytes) -> bytes:
    """Strict base64 of text without line breaks or other whitespace."""
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except binascii.Error as exc:
        raise MalformedMessage(f"broken base64 in an S/MIME part: {exc}") from None


def _transfer_encoding(fields: list[HeaderField]) -> str:
    encoding = (_value_of(fields, "Content-Transfer-Encoding") or "7bit").lower()
    if encoding not in ("base64", "7bit", "8bit", "binary"):
        raise MalformedMessage(
            f"S/MIME part with unsupported Content-Transfer-Encoding {encoding!r}"
        )
    return encoding


@attrs.frozen
class ClearSigned:
    """The two halves of a multipart/signed entity."""

    content: bytes  # the first body part, byte for byte, CRLF canonical
    signature: bytes  # DER (or BER) CMS ContentInfo
    micalg: str | None


def parse_multipart_signed(entity: bytes) -> ClearSigned:
    """Cuts a multipart/signed entity (or message) into signed content and signature."""
    canonical = canonicalize(entity)
    header_end, body_start = _split_offsets(canonical)
    return _clear_signed(canonical, content_type_of(canonical[:header_end]), body_start)


def _clear_signed(canonical: bytes, content_type: ContentType, body_start: int) -> ClearSigned:
    if content_type.mime_type != "multipart/signed":
        raise MalformedMessage(f"expected multipart/signed, found {content_type.mime_type}")
    protocol = content_type.params.get("protocol", "").lower()
    if protocol not in SIGNATURE_TYPES:
        raise MalformedMessage(f"multipart/signed with unsupported protocol {protocol!r}")
    parts = split_multipart(canonical[body_start:], content_type).parts
    if len(parts) != 2:
        raise MalformedMessage(f"multipart/signed with {len(parts)} parts instead of 2")
    sig_headers, sig_body = split_entity(parts[1])
    sig_fields = header_fields(sig_headers)
    sig_type = parse_content_type(_value_of(sig_fields, "Content-Type")).mime_type
    if sig_type not in SIGNATURE_TYPES:
        raise MalformedMessage(f"second part of multipart/signed is {sig_type}, not a signature")
    signature = decode_base64(sig_body) if _transfer_encoding(sig_fields) == "base64" else sig_body
    return ClearSigned(parts[0], signature, content_type.params.get("micalg"))


@attrs.frozen
class Pkcs7Mime:
    smime_type: str | None  # the smime-type parameter, lower case, if any
    der: bytes


def parse_pkcs7_mime(entity: bytes) -> Pkcs7Mime:
    """The CMS bytes inside an application/pkcs7-mime entity (or message)."""
    header_end, body_start = _split_offsets(entity)
    fields = header_fields(entity[:header_end])
    return _pkcs7_mime(entity, fields, body_start)


def _pkcs7_mime(entity: bytes, fields: list[HeaderField], body_start: int) -> Pkcs7Mime:
    content_type = parse_content_type(_value_of(fields, "Content-Type"))
    is_p7m = content_type.mime_type in PKCS7_MIME_TYPES or (
        content_type.mime_type == "application/octet-stream"
        and content_type.params.get("name", "").lower().endswith(".p7m")
    )
    if not is_p7m:
        raise MalformedMessage(f"expected application/pkcs7-mime, found {content_type.mime_type}")
    smime_type = content_type.params.get("smime-type")
    if _transfer_encoding(fields) == "base64":
        # Sliced and stripped in one expression: the slice (as large as the message) is gone
        # before the decoded copy is made.
        der = _decode_base64_text(entity[body_start:].translate(None, _BASE64_WHITESPACE))
    else:
        der = entity[body_start:]
    return Pkcs7Mime(smime_type.lower() if smime_type else None, der)


def smime_kind(entity: bytes) -> str | None:
    """ "multipart-signed", the smime-type of a pkcs7-mime entity ("" if absent), or None."""
    return _kind(content_type_of(split_entity(entity)[0]))


def _kind(content_type: ContentType) -> str | None:
    if content_type.mime_type == "multipart/signed":
        protocol = content_type.params.get("protocol", "").lower()
        return "multipart-signed" if protocol in SIGNATURE_TYPES else None
    if content_type.mime_type in PKCS7_MIME_TYPES:
        return content_type.params.get("smime-type", "").lower()
    return None


def signed_parts(entity: bytes) -> tuple[str | None, ClearSigned | Pkcs7Mime | None]:
    """(`smime_kind(entity)`, its signed parts): those of a multipart/signed entity, or of a
    pkcs7-mime one with smime-type signed-data or none; None for any other entity.

    The header block is read once for both, not once to classify and again to cut.
    """
    header_end, body_start = _split_offsets(entity)
    fields = header_fields(entity[:header_end])
    content_type = parse_content_type(_value_of(fields, "Content-Type"))
    kind = _kind(content_type)
    if kind == "multipart-signed":
        canonical = canonicalize(entity)
        if canonical is not entity:
            body_start = _split_offsets(canonical)[1]
        return kind, _clear_signed(canonical, content_type, body_start)
    if kind in ("signed-data", ""):
        return kind, _pkcs7_mime(entity, fields, body_start)
    return kind, None
