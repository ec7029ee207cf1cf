from __future__ import annotations

import datetime
from typing import Any

import pytest
from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from sealrelay.smime.errors import SigningError
from sealrelay.smime.mime import (
    get_header,
    parse_multipart_signed,
    parse_pkcs7_mime,
    split_entity,
)
from sealrelay.smime.sign import Signer, sign_entity, sign_message, signed_data
from sealrelay.smime.verify import verify_entity, verify_message
from tests.pki import TestPKI


MESSAGE = (
    "From: {address}\r\nTo: bob@example.org\r\nSubject: Grüße\r\nMIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    "Hällo Bob,  \r\n-- \r\nAlice\r\n"
)
KEY_TYPES = ["rsa2048", "rsa3072", "p256", "p384", "ed25519"]


def signer_for(pki: TestPKI, name: str, **kwargs: Any) -> Signer:
    identity = getattr(pki, name)
    return Signer(identity.key, identity.cert, identity.chain, **kwargs)


def _signer_info(der: bytes) -> Any:
    return cms.ContentInfo.load(der)["content"]["signer_infos"][0]


def _der_of(signed: bytes) -> bytes:
    if b"multipart/signed" in split_entity(signed)[0]:
        return parse_multipart_signed(signed).signature
    return parse_pkcs7_mime(signed).der


@pytest.mark.parametrize("mode", ["clear", "opaque"])
@pytest.mark.parametrize("name", KEY_TYPES)
def test_signed_message_verifies_for_every_key_type(pki, name, mode):
    address = getattr(pki, name).address
    message = MESSAGE.format(address=address).encode()
    signed = sign_message(message, signer_for(pki, name), mode=mode)
    result = verify_message(signed, trust_anchors=pki.trust_anchors(), crls=[pki.crl, pki.root_crl])
    assert (result.status, result.reason) == ("valid", None)
    assert (result.crypto, result.chain, result.address, result.revocation) == (
        "ok",
        "ok",
        "ok",
        "ok",
    )
    assert result.signer == address
    assert result.mode == mode
    assert result.signer_certificate == getattr(pki, name).cert
    assert result.digest == ("sha512" if name == "ed25519" else "sha256")
    assert b"H=C3=A4llo Bob, =20\r\n--=20\r\nAlice\r\n" in result.content


@pytest.mark.parametrize("digest", ["sha256", "sha384", "sha512"])
@pytest.mark.parametrize("padding", ["pkcs1v15", "pss"])
def test_rsa_digests_and_paddings(pki, digest, padding):
    signer = signer_for(pki, "rsa3072", digest=digest, rsa_padding=padding)
    signed = sign_entity(b"Content-Type: text/plain\r\n\r\nx\r\n", signer)
    assert f"micalg=sha-{digest[3:]}" in str(get_header(split_entity(signed)[0], "Content-Type"))
    result = verify_entity(signed, trust_anchors=pki.trust_anchors(), expected_address=None)
    assert (result.status, result.address, result.digest) == ("valid", "not-checked", digest)
    algorithm = _signer_info(_der_of(signed))["signature_algorithm"]
    if padding == "pss":
        params = algorithm["parameters"]
        assert algorithm["algorithm"].native == "rsassa_pss"
        assert params["hash_algorithm"]["algorithm"].native == digest
        assert params["mask_gen_algorithm"]["parameters"]["algorithm"].native == digest
        assert params["salt_length"].native == int(digest[3:]) // 8
    else:
        assert algorithm["algorithm"].dotted == "1.2.840.113549.1.1.1"


def test_ed25519_follows_rfc8419(pki):
    signer = signer_for(pki, "ed25519", digest="sha256")
    assert signer.effective_digest == "sha512"
    der = signed_data(b"content", signer, detached=False)
    signed = cms.ContentInfo.load(der)["content"]
    assert [d["algorithm"].native for d in signed["digest_algorithms"]] == ["sha512"]
    info = signed["signer_infos"][0]
    assert info["signature_algorithm"]["algorithm"].dotted == "1.3.101.112"
    assert info["digest_algorithm"]["algorithm"].native == "sha512"


def test_signed_data_structure(pki):
    moment = datetime.datetime(2030, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)
    der = signed_data(
        b"hello",
        signer_for(pki, "p256", digest="sha384"),
        detached=True,
        capabilities=("aes256-gcm", "aes128-cbc", "rsaes-oaep"),
        signing_time=moment,
    )
    info = cms.ContentInfo.load(der)
    assert info["content_type"].native == "signed_data"
    signed = info["content"]
    assert signed["encap_content_info"]["content"].native is None
    certs = [c.chosen for c in signed["certificates"]]
    assert sorted(c.dump() for c in certs) == sorted(
        c.public_bytes(Encoding.DER) for c in (pki.p256.cert, pki.intermediate)
    )
    signer_info = signed["signer_infos"][0]
    assert signer_info["signature_algorithm"]["algorithm"].native == "sha384_ecdsa"
    sid = signer_info["sid"].chosen
    assert sid["serial_number"].native == pki.p256.cert.serial_number
    attrs = signer_info["signed_attrs"]
    encodings = [a.dump() for a in attrs]
    assert encodings == sorted(encodings), "DER requires SET OF in sorted order"
    by_type = {a["type"].native: a["values"] for a in attrs}
    assert by_type["signing_time"][0].native == moment
    capability_ids = [c["capability_id"].native for c in by_type["smime_capabilities"][0]]
    assert capability_ids == ["aes256_gcm", "aes128_cbc", "rsaes_oaep"]


def test_opaque_signature_encapsulates_the_prepared_entity(pki):
    entity = "Content-Type: text/plain; charset=utf-8\n\nä\n".encode()
    signed = sign_entity(entity, signer_for(pki, "rsa2048"), mode="opaque")
    assert parse_pkcs7_mime(signed).smime_type == "signed-data"
    content = cms.ContentInfo.load(parse_pkcs7_mime(signed).der)["content"]["encap_content_info"]
    assert content["content"].native == (
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n=C3=A4\r\n"
    )


def test_sign_message_keeps_outer_headers_outside(pki):
    message = MESSAGE.format(address="alice@example.org").encode()
    signed = sign_message(message, signer_for(pki, "rsa2048"))
    headers, _ = split_entity(signed)
    assert headers.startswith(
        "From: alice@example.org\r\nTo: bob@example.org\r\nSubject: Grüße\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/signed;".encode()
    )
    assert headers.count(b"MIME-Version") == 1
    inner = parse_multipart_signed(signed).content
    assert inner.startswith(b"Content-Type: text/plain; charset=utf-8\r\n")
    assert b"Subject" not in inner
    assert b"From:" not in inner


def test_signer_rejects_a_key_that_does_not_match_the_certificate(pki):
    with pytest.raises(SigningError, match="does not belong"):
        Signer(pki.rsa3072.key, pki.rsa2048.cert)
    with pytest.raises(SigningError, match="does not belong"):
        Signer(ec.generate_private_key(ec.SECP256R1()), pki.p256.cert)


def test_signer_rejects_unsupported_parameters(pki):
    with pytest.raises(SigningError, match="digest"):
        signer_for(pki, "rsa2048", digest="sha1")
    with pytest.raises(SigningError, match="padding"):
        signer_for(pki, "rsa2048", rsa_padding="oaep")
    with pytest.raises(SigningError, match="mode"):
        sign_entity(b"\r\nx", signer_for(pki, "rsa2048"), mode="both")  # type: ignore[arg-type]


def test_signer_repr_hides_the_private_key(pki):
    text = repr(signer_for(pki, "rsa2048"))
    assert "key=" not in text
    assert "PRIVATE" not in text


@pytest.mark.parametrize(
    ("moment", "encoding"),
    [
        # RFC 5652 11.3: UTCTime up to 2049, GeneralizedTime from 2050, always in UTC ("Z").
        (
            datetime.datetime(2049, 12, 31, 23, 59, 59, 999999, tzinfo=datetime.UTC),
            b"\x17\x0d491231235959Z",
        ),
        (datetime.datetime(2050, 1, 1, 0, 0, 0, tzinfo=datetime.UTC), b"\x18\x0f20500101000000Z"),
        (
            datetime.datetime(
                2030, 1, 1, 1, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
            ),
            b"\x17\x0d291231233000Z",
        ),
    ],
)
def test_signing_time_encoding(pki, moment, encoding):
    der = signed_data(b"hello", signer_for(pki, "rsa2048"), detached=True, signing_time=moment)
    assert encoding in der
    attrs = cms.ContentInfo.load(der)["content"]["signer_infos"][0]["signed_attrs"]
    times = [a["values"][0].native for a in attrs if a["type"].native == "signing_time"]
    assert times == [moment.replace(microsecond=0)]


def test_signing_time_must_be_timezone_aware(pki):
    with pytest.raises(ValueError, match="timezone"):
        signed_data(
            b"hello",
            signer_for(pki, "rsa2048"),
            detached=True,
            signing_time=datetime.datetime(2030, 1, 1),  # naive: the case under test
        )


def test_signing_twice_with_one_signer_gives_identical_static_parts(pki):
    # sid, algorithm identifiers and certificates come from per-certificate caches: they must
    # be the bytes asn1crypto reads back, and the same in every message.
    signer = signer_for(pki, "rsa2048", rsa_padding="pss")
    moment = datetime.datetime(2030, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)
    first = signed_data(b"one", signer, detached=True, signing_time=moment)
    second = signed_data(b"one", signer, detached=True, signing_time=moment)
    info = cms.ContentInfo.load(first)["content"]["signer_infos"][0]
    again = cms.ContentInfo.load(second)["content"]["signer_infos"][0]
    assert info["sid"].dump() == again["sid"].dump()
    cert = asn1_x509.Certificate.load(pki.rsa2048.cert.public_bytes(Encoding.DER))
    sid = info["sid"].chosen
    assert sid["issuer"].dump() == cert["tbs_certificate"]["issuer"].dump()
    assert sid["serial_number"].native == pki.rsa2048.cert.serial_number
    assert info["signature_algorithm"]["algorithm"].native == "rsassa_pss"
    assert info["signature_algorithm"]["parameters"]["salt_length"].native == 32
    assert info["digest_algorithm"]["algorithm"].native == "sha256"
