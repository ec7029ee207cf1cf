from __future__ import annotations

import base64
import binascii
import re

import pytest

from sealrelay.smime.errors import MalformedMessage
from sealrelay.smime.mime import (
    ContentType,
    _has_long_line,
    _tokens,
    attach_content,
    base64_lines,
    base64_pieces,
    canonicalize,
    detach_content,
    get_header,
    header_fields,
    multipart_signed,
    parse_content_type,
    parse_multipart_signed,
    parse_pkcs7_mime,
    pkcs7_mime_entity,
    prepare_canonical_for_signing,
    prepare_for_signing,
    signed_parts,
    smime_kind,
    split_entity,
    split_multipart,
)


def test_canonicalize_turns_bare_lf_into_crlf_and_keeps_everything_else():
    assert canonicalize(b"a \nb\t\r\nc\n") == b"a \r\nb\t\r\nc\r\n"
    already = b"x  \r\ny\r\n"
    assert canonicalize(already) is already
    assert canonicalize(b"no line end") == b"no line end"


def test_split_entity_handles_crlf_lf_and_no_headers():
    assert split_entity(b"A: 1\r\nB: 2\r\n\r\nbody\r\n") == (b"A: 1\r\nB: 2\r\n", b"body\r\n")
    assert split_entity(b"A: 1\n\nbody\n\nmore") == (b"A: 1\n", b"body\n\nmore")
    assert split_entity(b"\r\nbody") == (b"", b"body")
    assert split_entity(b"A: 1\r\n") == (b"A: 1\r\n", b"")


def test_header_fields_keep_folding_and_values_are_unfolded():
    block = b"Subject: one\r\n two\r\nX-Y:z\r\nnot a header\r\n"
    fields = header_fields(block)
    assert [f.name for f in fields] == ["subject", "x-y", ""]
    assert fields[0].raw == b"Subject: one\r\n two\r\n"
    assert fields[0].value == "one two"
    assert get_header(block, "x-Y") == "z"
    assert get_header(block, "missing") is None


def test_parse_content_type_with_quotes_comments_and_case():
    ct = parse_content_type(
        'Multipart/Signed; protocol="application/pkcs7-signature" (comment);\r\n'
        ' MICALG=sha-256; boundary="a \\"b\\"; c"'
    )
    assert ct.mime_type == "multipart/signed"
    assert ct.params == {
        "protocol": "application/pkcs7-signature",
        "micalg": "sha-256",
        "boundary": 'a "b"; c',
    }
    assert parse_content_type(None).mime_type == "text/plain"
    assert parse_content_type("garbage").mime_type == "text/plain"


MIXED = ContentType("multipart", "mixed", {"boundary": "BB"})


def test_split_multipart_gives_exact_parts_without_the_crlf_before_delimiters():
    body = (
        b"preamble\r\n--BB\r\nA: 1\r\n\r\none\r\n\r\n--BB  \r\n"
        b"\r\ntwo\r\n--BBnot-a-delimiter\r\n--BB--\r\nepilogue\r\n"
    )
    multipart = split_multipart(body, MIXED)
    assert multipart.preamble == b"preamble\r\n"
    assert multipart.parts == (b"A: 1\r\n\r\none\r\n", b"\r\ntwo\r\n--BBnot-a-delimiter")
    assert multipart.epilogue == b"epilogue\r\n"


def test_split_multipart_with_bare_lf_and_leading_delimiter():
    multipart = split_multipart(b"--BB\nA: 1\n\nx\n--BB--\n", MIXED)
    assert multipart.parts == (b"A: 1\n\nx",)


@pytest.mark.parametrize(
    "body",
    [b"--BB\r\none\r\n", b"no delimiter at all", b"--BB--\r\n"],
    ids=["no-close", "no-delimiter", "no-parts"],
)
def test_split_multipart_rejects_broken_structure(body):
    with pytest.raises(MalformedMessage):
        split_multipart(body, MIXED)


def test_split_multipart_requires_a_sane_boundary():
    with pytest.raises(MalformedMessage, match="boundary"):
        split_multipart(b"--\r\n", ContentType("multipart", "mixed", {}))


def test_prepare_for_signing_encodes_8bit_text_as_quoted_printable():
    entity = (
        "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
        "Grüße  \nFrom the relay\n"
    ).encode()
    prepared = prepare_for_signing(entity)
    headers, body = split_entity(prepared)
    assert get_header(headers, "Content-Transfer-Encoding") == "quoted-printable"
    assert prepared.isascii()
    assert b"\n" not in prepared.replace(b"\r\n", b"")
    assert body == b"Gr=C3=BC=C3=9Fe =20\r\n=46rom the relay\r\n"
    assert binascii.a2b_qp(body).replace(b"\r\n", b"\n").decode() == "Grüße  \nFrom the relay\n"


def test_prepare_for_signing_base64_encodes_binary_parts_byte_exact():
    payload = bytes(range(256)) * 4
    entity = (
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        + payload
    )
    headers, body = split_entity(prepare_for_signing(entity))
    assert get_header(headers, "Content-Transfer-Encoding") == "base64"
    assert base64.b64decode(body) == payload
    assert all(len(line) <= 76 for line in body.split(b"\r\n"))


def test_prepare_for_signing_keeps_7bit_parts_and_recurses_into_multiparts():
    plain = b"Content-Type: text/plain\r\n\r\nhello  \r\n"
    utf8 = "Content-Type: text/plain; charset=utf-8\r\n\r\nhé\r\n".encode()
    entity = (
        b'Content-Type: multipart/mixed; boundary="BB"\r\n\r\n--BB\r\n'
        + plain
        + b"\r\n--BB\r\n"
        + utf8
        + b"\r\n--BB--\r\n"
    )
    prepared = prepare_for_signing(entity)
    parts = split_multipart(split_entity(prepared)[1], MIXED).parts
    assert parts[0] == plain  # untouched, trailing whitespace included
    assert parts[1].endswith(b"Content-Transfer-Encoding: quoted-printable\r\n\r\nh=C3=A9\r\n")
    assert prepare_for_signing(plain) is plain


def test_prepare_for_signing_encodes_long_lines_and_inside_message_rfc822():
    long_line = b"Content-Type: text/plain\r\n\r\n" + b"x" * 1200 + b"\r\n"
    assert b"quoted-printable" in prepare_for_signing(long_line)
    forwarded = (
        b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        b"Subject: fwd\r\nContent-Type: text/plain; charset=latin-1\r\n\r\nd\xe9j\xe0\r\n"
    )
    prepared = prepare_for_signing(forwarded)
    assert prepared.isascii()
    assert b"Content-Transfer-Encoding: 7bit\r\n\r\nSubject: fwd" in prepared
    assert prepared.endswith(b"d=E9j=E0\r\n")


def test_multipart_signed_layout_round_trips_through_the_parser():
    entity = b"Content-Type: text/plain\r\n\r\nsigned text\r\n"
    signature = bytes(range(200))
    built = multipart_signed(entity, signature, digest="sha384")
    headers, _ = split_entity(built)
    ct = parse_content_type(get_header(headers, "Content-Type"))
    assert ct.params["micalg"] == "sha-384"
    assert ct.params["protocol"] == "application/pkcs7-signature"
    assert smime_kind(built) == "multipart-signed"
    parsed = parse_multipart_signed(built)
    assert parsed.content == entity
    assert parsed.signature == signature
    assert parsed.micalg == "sha-384"
    # a stored copy with bare LF parses to the same canonical bytes
    assert parse_multipart_signed(built.replace(b"\r\n", b"\n")).content == entity


def test_parse_multipart_signed_rejects_other_protocols_and_shapes():
    pgp = (
        b'Content-Type: multipart/signed; protocol="application/pgp-signature"; boundary=B\r\n\r\n'
    )
    with pytest.raises(MalformedMessage, match="protocol"):
        parse_multipart_signed(pgp + b"--B\r\n\r\nx\r\n--B\r\n\r\ny\r\n--B--\r\n")
    one_part = (
        b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; boundary=B\r\n'
        b"\r\n--B\r\n\r\nx\r\n--B--\r\n"
    )
    with pytest.raises(MalformedMessage, match="1 parts"):
        parse_multipart_signed(one_part)
    with pytest.raises(MalformedMessage, match="expected multipart/signed"):
        parse_multipart_signed(b"Content-Type: text/plain\r\n\r\nx")


def test_pkcs7_mime_entity_has_76_char_crlf_base64_lines():
    der = bytes(range(256)) * 3
    entity = pkcs7_mime_entity(der, "enveloped-data")
    assert smime_kind(entity) == "enveloped-data"
    _, body = split_entity(entity)
    lines = body.split(b"\r\n")
    assert lines[-1] == b""
    assert {len(line) for line in lines[:-2]} == {76}
    assert parse_pkcs7_mime(entity).der == der
    assert parse_pkcs7_mime(entity).smime_type == "enveloped-data"
    assert base64_lines(b"") == b""


@pytest.mark.parametrize(
    "body", [b"!!!notbase64!!!\r\n", b"QUJD\r\nRA\r\n"], ids=["bad-chars", "bad-padding"]
)
def test_parse_pkcs7_mime_rejects_broken_base64(body):
    entity = (
        b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + body
    )
    with pytest.raises(MalformedMessage, match="base64"):
        parse_pkcs7_mime(entity)


def test_detach_and_attach_content_move_only_content_fields():
    message = (
        b"From: alice@example.org\nTo: bob@example.org\nMIME-Version: 1.0\nSubject: hi\n"
        b"Content-Type: text/plain;\n charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nbody\n"
    )
    outer, entity = detach_content(message)
    assert outer == b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: hi\r\n"
    assert entity == (
        b"Content-Type: text/plain;\r\n charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
        b"\r\nbody\r\n"
    )
    rebuilt = attach_content(outer, entity)
    assert rebuilt.startswith(outer + b"MIME-Version: 1.0\r\nContent-Type: text/plain;")


def test_detach_content_makes_the_default_content_type_explicit():
    _, entity = detach_content(b"From: a@example.org\r\n\r\nhello\r\n")
    assert entity == b"Content-Type: text/plain; charset=us-ascii\r\n\r\nhello\r\n"


# --- fast paths: each must give exactly what the straightforward code gives ---------------


def _reference_base64_lines(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


@pytest.mark.parametrize(
    "size",
    [
        *(0, 1, 2, 3, 56, 57, 58, 113, 114, 115, 57 * 17, 57 * 1023, 57 * 1024 - 1, 57 * 1024),
        *(57 * 1024 + 1, 57 * 1024 + 57, 57 * 2048, 57 * 2048 + 7, 57 * 3000 + 56),
    ],
)
def test_base64_lines_cut_76_char_lines_at_every_boundary(size):
    # 57 bytes fill one line; 1024 lines fill one encoding chunk: both edges, and either side.
    data = bytes((i * 7 + 3) % 256 for i in range(size))
    lines = base64_lines(data)
    assert lines == _reference_base64_lines(data)
    assert all(len(line) <= 76 for line in lines.split(b"\r\n"))
    assert b"".join(base64_pieces(memoryview(bytearray(data)))) == lines


def test_canonicalize_fast_path_and_bare_lf_mixed_input():
    crlf = b"Content-Type: text/plain\r\n\r\nline\r\n\r\nend\r\n"
    assert canonicalize(crlf) is crlf
    assert canonicalize(crlf.replace(b"\r\n", b"\n")) == crlf
    mixed = b"Content-Type: text/plain\n\r\nline\r\n\nend\n"
    assert canonicalize(mixed) == crlf
    # A bare CR is not a line end and stays; CR CR LF keeps its first CR.
    assert canonicalize(b"a\rb\r\r\nc\n") == b"a\rb\r\r\nc\r\n"


@pytest.mark.parametrize("line_end", [b"\r\n", b"\n"])
def test_detach_content_gives_the_same_entity_for_crlf_lf_and_mixed_messages(line_end):
    crlf = b"From: a@example.org\r\nContent-Type: text/plain\r\n\r\nbody\r\n-- \r\nA\r\n"
    message = crlf.replace(b"\r\n", line_end)
    assert detach_content(message) == detach_content(crlf)
    mixed = crlf.replace(b"body\r\n", b"body\n", 1)
    assert detach_content(mixed) == detach_content(crlf)


def test_signing_preparation_of_crlf_bare_lf_and_mixed_entities_agrees():
    entity = b"Content-Type: text/plain\r\n\r\n" + b"x" * 1200 + b"\r\nshort\r\n"
    prepared = prepare_for_signing(entity)
    assert b"Content-Transfer-Encoding: quoted-printable" in prepared
    assert prepare_for_signing(entity.replace(b"\r\n", b"\n")) == prepared
    assert prepare_canonical_for_signing(entity) == prepared
    plain = b"Content-Type: text/plain\r\n\r\nshort\r\n"
    assert prepare_canonical_for_signing(plain) is plain


_LONG_LINE = re.compile(rb"^[^\r\n]{999}", re.MULTILINE)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"a" * 998,
        b"a" * 999,
        b"a" * 998 + b"\r\n" + b"b" * 998,
        b"a" * 998 + b"\r\n" + b"b" * 999,
        b"a" * 998 + b"\n" + b"b" * 999 + b"\n",
        b"a" * 500 + b"\r" + b"b" * 600 + b"\r\n",  # a bare CR cuts the run short
        b"a" * 500 + b"\r" + b"b" * 600 + b"\n" + b"c" * 1000,
        (b"x" * 72 + b"\r\n") * 200 + b"y" * 999,
        b"\n" * 5 + b"z" * 999 + b"\r\n",
    ],
)
def test_long_line_detection_matches_the_rfc_5322_limit(body):
    assert _has_long_line(body) == (_LONG_LINE.search(body) is not None)


def test_content_type_lexer_edge_cases():
    assert _tokens('a/b; x="q\\"uo\\\\te"; y=(c (nested) \\) ment)z') == [
        ("t", "a"),
        ("s", "/"),
        ("t", "b"),
        ("s", ";"),
        ("t", "x"),
        ("s", "="),
        ("q", 'q"uo\\te'),
        ("s", ";"),
        ("t", "y"),
        ("s", "="),
        ("t", "z"),
    ]
    assert _tokens('a="open') == [("t", "a"), ("s", "="), ("q", "open")]
    assert _tokens('a="tail\\') == [("t", "a"), ("s", "="), ("q", "tail\\")]
    assert _tokens("t)ok\u00a0x") == [("t", "t)ok"), ("t", "x")]


def test_parsed_content_types_are_shared_read_only():
    value = 'multipart/signed; boundary="b1"; protocol="application/pkcs7-signature"'
    first, second = parse_content_type(value), parse_content_type(value)
    assert first is second
    assert first.params == {"boundary": "b1", "protocol": "application/pkcs7-signature"}
    with pytest.raises(TypeError):
        first.params["boundary"] = "other"  # type: ignore[index]


def test_signed_parts_classifies_and_cuts_in_one_pass():
    entity = b"Content-Type: text/plain\r\n\r\nsigned text\r\n"
    signature = bytes(range(200))
    built = multipart_signed(entity, signature, digest="sha256")
    for copy in (built, built.replace(b"\r\n", b"\n")):  # bare LF: cut from the CRLF form
        kind, parts = signed_parts(copy)
        assert kind == "multipart-signed"
        assert parts == parse_multipart_signed(copy)

    opaque = pkcs7_mime_entity(signature, "signed-data")
    assert signed_parts(opaque) == ("signed-data", parse_pkcs7_mime(opaque))
    untyped = opaque.replace(b" smime-type=signed-data;", b"")
    assert signed_parts(untyped) == ("", parse_pkcs7_mime(untyped))

    # Classified but not signed: no parts, and nothing is decoded.
    assert signed_parts(pkcs7_mime_entity(b"junk", "enveloped-data")) == ("enveloped-data", None)
    assert signed_parts(b"Content-Type: text/plain\r\n\r\nx") == (None, None)
    pgp = b'Content-Type: multipart/signed; protocol="application/pgp-signature"; boundary=B\r\n'
    assert signed_parts(pgp + b"\r\n--B--\r\n") == (None, None)
