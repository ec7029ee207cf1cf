from __future__ import annotations

import pytest

from sealrelay.core import headers


PLAIN = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nbody\r\n"


@pytest.mark.parametrize(
    ("content_type", "layer"),
    [
        (b"text/plain", "plain"),
        (b'multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256', "signed"),
        (b'multipart/signed; protocol="application/x-pkcs7-signature"', "signed"),
        (b'multipart/signed; protocol="application/pgp-signature"', "plain"),
        (b"application/pkcs7-mime; smime-type=signed-data; name=smime.p7m", "signed"),
        (b"application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m", "enveloped"),
        (b"application/pkcs7-mime; smime-type=authEnveloped-data", "enveloped"),
        (b'application/x-pkcs7-mime; name="smime.p7m"', "enveloped"),
        (b"application/pkcs7-mime; smime-type=certs-only", "plain"),
    ],
)
def test_classify(content_type, layer):
    message = b"From: a@example.org\r\nContent-Type: " + content_type + b"\r\n\r\nx\r\n"
    assert headers.classify(message) == layer


def test_security_headers_are_removed_with_their_continuation_lines():
    forged = (
        b"X-Sealrelay-Signature: valid;\r\n signer=ceo@example.org\r\n"
        b"x-sealrelay-decryption: decrypted\r\n" + PLAIN
    )
    assert headers.remove_headers(forged, headers.SECURITY_HEADER_PREFIX) == PLAIN


def test_body_is_never_touched_when_removing_headers():
    message = b"Subject: s\n\nX-Sealrelay-Signature: in the body stays\n"
    assert headers.remove_headers(message, "X-Sealrelay-") == message


def test_add_headers_uses_the_message_line_ending():
    assert headers.add_headers(b"A: 1\n\nb\n", [("X", "y")]) == b"X: y\nA: 1\n\nb\n"
    assert headers.add_headers(PLAIN, [("X", "y")]).startswith(b"X: y\r\nFrom:")


def test_visible_recipients_and_from():
    message = (
        b"From: Alice <Alice@Example.ORG>\r\nTo: Bob <bob@example.net>, c@example.net\r\n"
        b"Cc: =?utf-8?q?D=C3=B6rte?= <d@b\xc3\xbccher.example>\r\n\r\nx\r\n"
    )
    assert headers.recipients_named(headers.parse_headers(message)) == {
        "bob@example.net",
        "c@example.net",
        "d@bücher.example",
    }
    assert headers.from_address(message) == "Alice@example.org"


def test_merge_entity_keeps_envelope_headers_and_takes_content_headers_from_inside():
    outer = (
        b"From: a@example.org\r\nSubject: outer\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\nMIIB...\r\n"
    )
    inner = b"Content-Type: text/plain; charset=utf-8\r\nSubject: protected\r\n\r\nhello\r\n"
    merged = headers.merge_entity(outer, inner)
    assert merged == (
        b"From: a@example.org\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nSubject: protected\r\n\r\nhello\r\n"
    )


def test_split_message_without_body():
    assert headers.split_message(b"Subject: x\r\n") == (b"Subject: x\r\n", b"")
    assert headers.split_message(b"A: 1\r\n\r\nbody") == (b"A: 1\r\n", b"body")


def test_names_and_prefixes_are_matched_on_the_field_name():
    message = (
        b"X-Sealrelay-Signature : valid\r\nBCC: hidden@example.net\r\n"
        b"Bcc-Note: kept\r\nSubject: s\r\n\r\nBcc: in the body stays\r\n"
    )
    assert headers.remove_headers(message, "X-Sealrelay-", "Bcc") == (
        b"Bcc-Note: kept\r\nSubject: s\r\n\r\nBcc: in the body stays\r\n"
    )
