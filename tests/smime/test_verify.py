from __future__ import annotations

import datetime
import random
import time
from typing import Any

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sealrelay.smime import algorithms
from sealrelay.smime import verify as verify_module
from sealrelay.smime.asn1 import names_equal
from sealrelay.smime.errors import MalformedMessage
from sealrelay.smime.mime import multipart_signed, parse_multipart_signed, pkcs7_mime_entity
from sealrelay.smime.sign import Signer, SignMode, sign_entity, sign_message, signed_data
from sealrelay.smime.verify import (
    VerificationResult,
    verify_entity,
    verify_message,
    verify_signed_data,
)
from tests.pki import TestIdentity, TestPKI, issue_leaf, make_crl, make_root, rsa_key


NOW = datetime.datetime.now(datetime.UTC)
BODY = b"Content-Type: text/plain\r\n\r\nkeep my trailing space \r\n-- \r\nAlice\r\n"


def message_from(address: str | None, body: bytes = BODY) -> bytes:
    return f"From: Someone <{address}>\r\nSubject: test\r\n".encode() + body


def sign(
    identity: TestIdentity,
    *,
    mode: SignMode = "clear",
    chain: tuple[x509.Certificate, ...] | None = None,
    address: str | None = None,
    **kwargs: Any,
) -> bytes:
    signer = Signer(identity.key, identity.cert, identity.chain if chain is None else chain)
    from_address = address or identity.address or "nobody@example.org"
    return sign_message(message_from(from_address), signer, mode=mode, **kwargs)


def verify(pki: TestPKI, message: bytes, **kwargs: Any) -> VerificationResult:
    kwargs.setdefault("crls", [pki.crl, pki.root_crl])
    return verify_message(message, trust_anchors=pki.trust_anchors(), **kwargs)


def outcome(result: VerificationResult) -> tuple[str | None, ...]:
    return result.status, result.reason, result.crypto, result.chain, result.address


# --- crypto ------------------------------------------------------------------------------


def test_altered_content_is_reported(pki):
    signed = sign(pki.rsa2048)
    result = verify(pki, signed.replace(b"Alice\r\n", b"Alicf\r\n"))
    assert outcome(result) == ("invalid", "content-altered", "content-altered", "ok", "ok")


def test_stripping_trailing_whitespace_breaks_the_signature(pki):
    signed = sign(pki.rsa2048)
    assert b"keep my trailing space \r\n" in signed
    stripped = signed.replace(b"keep my trailing space \r\n", b"keep my trailing space\r\n")
    assert verify(pki, stripped).reason == "content-altered"


def test_bare_lf_copy_verifies_and_outer_headers_may_change(pki):
    signed = sign(pki.p256)
    stored = signed.replace(b"\r\n", b"\n").replace(b"Subject: test", b"Subject: [ext] test")
    result = verify(pki, stored)
    assert (result.status, result.crypto) == ("valid", "ok")
    assert result.content == BODY


def test_corrupted_signature_value_is_bad_signature(pki):
    signed = sign(pki.rsa2048)
    clear = parse_multipart_signed(signed)
    der = bytearray(clear.signature)
    der[-1] ^= 0x01  # the signature OCTET STRING ends the DER
    forged = multipart_signed(clear.content, bytes(der), digest="sha256")
    result = verify_entity(forged, trust_anchors=pki.trust_anchors(), expected_address=None)
    assert (result.status, result.reason, result.chain) == ("invalid", "bad-signature", "ok")


def test_signature_is_checked_over_the_signed_attributes_as_received(pki):
    moment = datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    der = signed_data(
        BODY, Signer(pki.rsa2048.key, pki.rsa2048.cert), detached=True, signing_time=moment
    )
    assert b"250102030405Z" in der
    result = verify_signed_data(
        der.replace(b"250102030405Z", b"250102030406Z"),
        BODY,
        trust_anchors=pki.trust_anchors(),
        extra_certificates=[pki.intermediate],
        expected_address=None,
    )
    assert result.reason == "bad-signature"
    assert result.signing_time is not None


def test_small_rsa_key_is_weak(pki):
    weak = pki.issue(rsa_key(1024), address="weak@example.org")
    result = verify(pki, sign(weak))
    assert outcome(result) == ("invalid", "weak-algorithm", "weak-algorithm", "ok", "ok")


def test_sha1_digest_is_weak(pki, monkeypatch):
    # sealrelay never signs with SHA-1; let the builder do it once to get such a message.
    monkeypatch.setitem(algorithms.SIGNING_DIGESTS, "sha1", hashes.SHA1)
    signer = Signer(pki.p256.key, pki.p256.cert, pki.p256.chain, digest="sha1")
    signed = sign_entity(BODY, signer, mode="opaque")
    monkeypatch.undo()
    result = verify_entity(signed, trust_anchors=pki.trust_anchors(), expected_address=None)
    assert (result.reason, result.digest) == ("weak-algorithm", "sha1")


def test_signing_time_in_the_future_is_refused(pki):
    signed = sign(pki.rsa2048, signing_time=NOW + datetime.timedelta(hours=1))
    assert verify(pki, signed).reason == "signing-time-in-future"
    slightly_ahead = sign(pki.rsa2048, signing_time=NOW + datetime.timedelta(minutes=2))
    assert verify(pki, slightly_ahead).status == "valid"


def test_missing_signer_certificate_can_come_from_the_caller(pki):
    der = signed_data(BODY, Signer(pki.rsa2048.key, pki.rsa2048.cert), detached=True)
    info = cms.ContentInfo.load(der)
    del info["content"]["certificates"]
    stripped = info.dump(force=True)
    kwargs = {"trust_anchors": pki.trust_anchors(), "expected_address": "alice@example.org"}
    result = verify_signed_data(stripped, BODY, **kwargs)
    assert (result.status, result.reason, result.certificates) == (
        "invalid",
        "no-signer-certificate",
        (),
    )
    result = verify_signed_data(
        stripped, BODY, extra_certificates=[pki.rsa2048.cert, pki.intermediate], **kwargs
    )
    assert result.status == "valid"


def test_capabilities_and_signing_time_are_reported(pki):
    moment = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    signed = sign(pki.rsa2048, capabilities=("aes128-gcm", "aes256-cbc"), signing_time=moment)
    result = verify(pki, signed)
    assert result.capabilities == ("aes128-gcm", "aes256-cbc")
    assert result.signing_time == moment


# --- chain -------------------------------------------------------------------------------


def test_unknown_root_is_untrusted_even_when_the_message_carries_it(pki):
    result = verify(pki, sign(pki.untrusted, chain=(pki.untrusted_root,)))
    assert outcome(result) == ("invalid", "untrusted", "ok", "untrusted", "ok")
    assert pki.untrusted_root in result.certificates


def test_intermediate_missing_from_message(pki):
    signed = sign(pki.rsa2048, chain=())
    assert verify(pki, signed).reason == "untrusted"
    result = verify(pki, signed, extra_certificates=[pki.intermediate])
    assert result.status == "valid"


def test_expired_certificate(pki):
    result = verify(pki, sign(pki.expired))
    assert outcome(result) == ("invalid", "expired", "ok", "expired", "ok")
    # at a moment inside its validity, the same signature is fine
    earlier = pki.expired.cert.not_valid_before_utc + datetime.timedelta(days=1)
    signed = sign(pki.expired, signing_time=earlier)
    assert verify(pki, signed, at=earlier).status == "valid"


def test_revoked_certificate(pki):
    result = verify(pki, sign(pki.revoked))
    assert outcome(result) == ("invalid", "revoked", "ok", "revoked", "ok")
    assert result.revocation == "revoked"


def test_without_crls_revocation_is_unknown_but_not_invalid(pki):
    result = verify(pki, sign(pki.revoked), crls=[])
    assert (result.status, result.chain, result.revocation) == ("valid", "ok", "unknown")
    # only the intermediate's CRL: the root's one is missing, so still unknown
    result = verify(pki, sign(pki.rsa2048), crls=[pki.crl])
    assert (result.status, result.revocation) == ("valid", "unknown")


def test_a_crl_not_signed_by_the_issuer_is_ignored(pki):
    _, other_key = make_root("Impostor")
    forged = make_crl(pki.intermediate, other_key, [pki.rsa2048.cert])
    result = verify(pki, sign(pki.rsa2048), crls=[forged, pki.root_crl])
    assert (result.status, result.revocation) == ("valid", "unknown")


def test_stale_crl_still_revokes_but_no_longer_vouches(pki):
    later = NOW + datetime.timedelta(days=40)  # past the CRLs' nextUpdate, certs still valid
    result = verify(pki, sign(pki.rsa2048, signing_time=later), at=later)
    assert (result.status, result.revocation) == ("valid", "unknown")
    assert verify(pki, sign(pki.revoked, signing_time=later), at=later).reason == "revoked"


def test_certificate_without_email_protection_eku(pki):
    result = verify(pki, sign(pki.no_email_eku))
    assert outcome(result) == (
        "invalid",
        "no-email-protection-eku",
        "ok",
        "no-email-protection-eku",
        "ok",
    )


def test_certificate_without_any_eku_is_acceptable(pki):
    identity = pki.issue(
        ec.generate_private_key(ec.SECP256R1()), address="any@example.org", eku=None
    )
    assert verify(pki, sign(identity)).status == "valid"
    any_eku = pki.issue(
        ec.generate_private_key(ec.SECP256R1()),
        address="any@example.org",
        eku=[ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE],
    )
    assert verify(pki, sign(any_eku)).status == "valid"


# --- address -----------------------------------------------------------------------------


def test_from_address_not_in_certificate(pki):
    result = verify(pki, sign(pki.rsa2048, address="mallory@example.org"))
    assert outcome(result) == ("invalid", "address-mismatch", "ok", "ok", "address-mismatch")
    assert result.signer == "alice@example.org"


def test_certificate_without_address(pki):
    result = verify(pki, sign(pki.no_address, address="someone@example.org"))
    assert outcome(result) == ("invalid", "no-address-in-cert", "ok", "ok", "no-address-in-cert")
    assert result.signer == "CN=No Address,O=Sealrelay Test PKI"


def test_address_domain_is_case_insensitive_local_part_is_not(pki):
    assert verify(pki, sign(pki.rsa2048, address="alice@Example.ORG")).address == "ok"
    assert verify(pki, sign(pki.rsa2048, address="Alice@example.org")).address == (
        "address-mismatch"
    )


def test_address_from_subject_email_attribute(pki):
    identity = pki.issue(rsa_key(), address=None, subject_address="sam@example.org")
    result = verify(pki, sign(identity))
    assert (result.status, result.address, result.signer) == ("valid", "ok", "sam@example.org")


def test_message_without_from_does_not_pass(pki):
    signer = Signer(pki.rsa2048.key, pki.rsa2048.cert, pki.rsa2048.chain)
    signed = sign_message(b"Subject: no sender\r\n" + BODY, signer)
    assert verify(pki, signed).reason == "address-mismatch"


def test_first_valid_signer_is_reported(pki):
    good = signed_data(
        BODY, Signer(pki.rsa2048.key, pki.rsa2048.cert, pki.rsa2048.chain), detached=True
    )
    bad = signed_data(
        BODY, Signer(pki.expired.key, pki.expired.cert, pki.expired.chain), detached=True
    )
    both = cms.ContentInfo.load(bad)
    good_signed = cms.ContentInfo.load(good)["content"]
    both["content"]["signer_infos"] = [
        both["content"]["signer_infos"][0],
        good_signed["signer_infos"][0],
    ]
    both["content"]["certificates"] = [
        *both["content"]["certificates"],
        *good_signed["certificates"],
    ]
    result = verify_signed_data(
        both.dump(force=True),
        BODY,
        trust_anchors=pki.trust_anchors(),
        expected_address="alice@example.org",
    )
    assert (result.status, result.signer) == ("valid", "alice@example.org")


# --- malformed input ---------------------------------------------------------------------


def p7m(der: bytes) -> bytes:
    return pkcs7_mime_entity(der, "signed-data")


def _not_signed_data() -> bytes:
    return bytes(cms.ContentInfo({"content_type": "data", "content": b"x"}).dump())


def _no_signers(pki: TestPKI) -> bytes:
    info = cms.ContentInfo.load(
        signed_data(b"x", Signer(pki.p256.key, pki.p256.cert), detached=False)
    )
    info["content"]["signer_infos"] = []
    return bytes(info.dump(force=True))


@pytest.mark.parametrize(
    "make",
    [
        lambda pki: (
            b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n%%%%\r\n"
        ),
        lambda pki: p7m(b"\x30\x84\xff\xff\xff\xf0\x06\x09"),
        lambda pki: p7m(b"\x30\x80" * 50_000),
        lambda pki: p7m(bytes(range(256)) * 10),
        lambda pki: p7m(
            signed_data(b"x", Signer(pki.p256.key, pki.p256.cert), detached=False)[:-40]
        ),
        lambda pki: p7m(_not_signed_data()),
        lambda pki: p7m(_no_signers(pki)),
        lambda pki: p7m(signed_data(b"x", Signer(pki.p256.key, pki.p256.cert), detached=True)),
        lambda pki: pkcs7_mime_entity(b"\x30\x00", "enveloped-data"),
        lambda pki: b"Content-Type: text/plain\r\n\r\nnot signed at all\r\n",
        lambda pki: sign(pki.rsa2048).replace(b"--\r\n", b"\r\n"),
    ],
    ids=[
        "broken-base64",
        "enormous-length",
        "deep-nesting",
        "garbage",
        "truncated",
        "not-signed-data",
        "no-signers",
        "detached-without-content",
        "enveloped-data",
        "not-smime",
        "no-closing-delimiter",
    ],
)
def test_malformed_input_raises_one_error_type(pki, make):
    with pytest.raises(MalformedMessage):
        verify_entity(make(pki), trust_anchors=pki.trust_anchors(), expected_address=None)


def test_a_leaf_certificate_cannot_act_as_a_ca(pki):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue_leaf(
        pki.rsa2048.cert, pki.rsa2048.key, key, common_name="x", san_address="x@example.org"
    )
    identity = TestIdentity("x@example.org", key, cert, (pki.rsa2048.cert, pki.intermediate))
    result = verify(pki, sign(identity))
    assert (result.reason, result.chain) == ("untrusted", "untrusted")
    assert result.detail is not None
    assert "not a CA" in result.detail


def test_path_search_is_bounded_for_hostile_certificate_sets(pki):
    # 40 CA certificates with one name and one key all "issue" each other: an unbounded
    # search would try 40! paths.
    key = ec.generate_private_key(ec.SECP256R1())
    loop_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Loop")])
    now = datetime.datetime.now(datetime.UTC)
    cas = [
        x509.CertificateBuilder()
        .subject_name(loop_name)
        .issuer_name(loop_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
        for _ in range(40)
    ]
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = issue_leaf(cas[0], key, leaf_key, common_name="l", san_address="l@example.org")
    identity = TestIdentity("l@example.org", leaf_key, leaf, tuple(cas))
    started = time.perf_counter()
    result = verify(pki, sign(identity))
    assert result.reason == "untrusted"
    assert time.perf_counter() - started < 2


def test_mutated_signatures_never_crash(pki):
    der = signed_data(BODY, Signer(pki.p256.key, pki.p256.cert, pki.p256.chain), detached=False)
    rng = random.Random(8551)  # noqa: S311 -- reproducible mutations, not key material
    outcomes = set()
    for _ in range(400):
        mutated = bytearray(der)
        for _ in range(rng.randint(1, 3)):
            position = rng.randrange(len(mutated))
            if rng.random() < 0.7:
                mutated[position] = rng.randrange(256)
            else:
                del mutated[position : position + rng.randint(1, 40)]
        try:
            result = verify_signed_data(
                bytes(mutated), None, trust_anchors=pki.trust_anchors(), expected_address=None
            )
            outcomes.add(result.reason)
        except MalformedMessage:
            outcomes.add("malformed")
    assert "malformed" in outcomes
    assert "bad-signature" in outcomes or "content-altered" in outcomes


def test_cryptography_pkcs7_builder_output_verifies(pki):
    # x-pkcs7-signature protocol, random boundary, its own attribute set: another producer.
    signed = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(BODY)
        .add_signer(pki.p384.cert, pki.p384.key, hashes.SHA384())
        .add_certificate(pki.intermediate)
        .sign(Encoding.SMIME, [pkcs7.PKCS7Options.DetachedSignature])
    )
    assert b"application/x-pkcs7-signature" in signed
    result = verify(pki, b"From: dave@example.org\r\n" + signed)
    assert (result.status, result.digest, result.content) == ("valid", "sha384", BODY)
    assert result.capabilities == ("aes256-cbc", "aes192-cbc", "aes128-cbc")


# --- further chain and algorithm reason codes --------------------------------------------


def _leaf_with_key_usage(pki: TestPKI, address: str, **usage: bool) -> TestIdentity:
    """A leaf under the test intermediate whose keyUsage has exactly the given bits set."""
    key = rsa_key()
    flags = dict.fromkeys(
        [
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ],
        False,
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)]))
        .issuer_name(pki.intermediate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(**(flags | usage)), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(pki.intermediate.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(pki.intermediate_key, hashes.SHA256())
    )
    return TestIdentity(address=address, key=key, cert=cert, chain=(pki.intermediate,))


def test_certificate_not_yet_valid(pki):
    identity = pki.issue(
        rsa_key(),
        address="early@example.org",
        not_before=NOW + datetime.timedelta(days=2),
        not_after=NOW + datetime.timedelta(days=400),
    )
    result = verify(pki, sign(identity))
    assert outcome(result) == ("invalid", "not-yet-valid", "ok", "not-yet-valid", "ok")
    later = NOW + datetime.timedelta(days=3)
    assert verify(pki, sign(identity, signing_time=later), at=later).status == "valid"


def test_certificate_whose_key_usage_does_not_allow_signing(pki):
    encipher_only = _leaf_with_key_usage(pki, "kim@example.org", key_encipherment=True)
    result = verify(pki, sign(encipher_only))
    assert outcome(result) == ("invalid", "bad-key-usage", "ok", "bad-key-usage", "ok")
    # nonRepudiation (contentCommitment) alone is a signing usage too
    committing = _leaf_with_key_usage(pki, "kim@example.org", content_commitment=True)
    assert verify(pki, sign(committing)).status == "valid"


@pytest.mark.parametrize(
    ("field", "oid"),
    [
        ("digest_algorithm", "2.16.840.1.101.3.4.2.8"),  # SHA3-256: not implemented here
        ("signature_algorithm", "1.3.6.1.4.1.55555.1"),  # no such signature algorithm
    ],
)
def test_unknown_algorithm_is_unsupported(pki, field, oid):
    clear = parse_multipart_signed(sign(pki.rsa2048))
    info = cms.ContentInfo.load(clear.signature)
    info["content"]["signer_infos"][0][field] = {"algorithm": oid}
    forged = message_from("alice@example.org", b"") + multipart_signed(
        clear.content, info.dump(force=True), digest="sha256"
    )
    result = verify(pki, forged)
    expected = ("invalid", "unsupported-algorithm", "unsupported-algorithm", "ok", "ok")
    assert outcome(result) == expected


def test_names_compare_by_rfc_5280_rules_beyond_identical_encodings():
    def name_der(value: str, string_type: x509.name._ASN1Type) -> bytes:
        attribute = x509.NameAttribute(NameOID.COMMON_NAME, value, _type=string_type)
        return x509.Name([attribute]).public_bytes()

    printable = name_der("Example  CA", x509.name._ASN1Type.PrintableString)
    utf8 = name_der("example ca", x509.name._ASN1Type.UTF8String)
    assert printable != utf8
    assert names_equal(printable, printable)
    assert names_equal(printable, utf8)  # case and inner whitespace folded, string type ignored
    assert not names_equal(printable, name_der("Other CA", x509.name._ASN1Type.UTF8String))


def _indefinite(identifier: int, *parts: bytes) -> bytes:
    return bytes((identifier, 0x80)) + b"".join(parts) + b"\x00\x00"


def _streamed(der: bytes, *, extra_certificate: bytes = b"") -> bytes:
    """`der` re-encoded as a streaming BER encoder writes it (gpgsm, openssl -stream): every
    outer length indefinite, the content in 10-byte chunks. SignerInfos and certificates stay
    DER, as their signatures require; `extra_certificate` joins the certificate set."""
    signed = cms.ContentInfo.load(der)["content"]
    encap = signed["encap_content_info"]
    parts = [encap["content_type"].dump()]
    if encap["content"].native is not None:
        content = encap["content"].native
        chunks = [content[i : i + 10] for i in range(0, len(content), 10)]
        octets = _indefinite(0x24, *(b"\x04" + bytes((len(c),)) + c for c in chunks))
        parts.append(_indefinite(0xA0, octets))
    body = _indefinite(
        0x30,
        signed["version"].dump(),
        signed["digest_algorithms"].dump(),
        _indefinite(0x30, *parts),
        _indefinite(0xA0, *(c.dump() for c in signed["certificates"]), extra_certificate),
        _indefinite(0x31, *(si.dump() for si in signed["signer_infos"])),
    )
    return _indefinite(0x30, cms.ContentType("signed_data").dump(), _indefinite(0xA0, body))


def test_ber_signed_data_with_indefinite_lengths_and_chunked_content(pki):
    signer = Signer(pki.rsa2048.key, pki.rsa2048.cert, pki.rsa2048.chain)
    ber = _streamed(signed_data(BODY, signer, detached=False))
    result = verify_entity(p7m(ber), trust_anchors=pki.trust_anchors(), expected_address=None)
    assert (result.status, result.mode, result.content) == ("valid", "opaque", BODY)
    assert len(result.certificates) == 2


@pytest.mark.parametrize(
    ("extra", "valid"),
    [
        (b"\xa2\x03\x02\x01\x00", True),  # [2] v2AttrCert: no part in S/MIME, skipped
        (b"\x04\x00", False),  # no CertificateChoices alternative
    ],
)
def test_certificate_set_skips_attribute_certificates_and_rejects_unknown_kinds(pki, extra, valid):
    signer = Signer(pki.rsa2048.key, pki.rsa2048.cert, pki.rsa2048.chain)
    ber = _streamed(signed_data(BODY, signer, detached=True), extra_certificate=extra)
    if not valid:
        with pytest.raises(MalformedMessage):
            verify_signed_data(ber, BODY, trust_anchors=pki.trust_anchors(), expected_address=None)
        return
    result = verify_signed_data(ber, BODY, trust_anchors=pki.trust_anchors(), expected_address=None)
    assert result.status == "valid"


@pytest.mark.parametrize(
    "encoding",
    [
        b"\x17\x0d" + b"260101120000Z",
        b"\x17\x0d" + b"491231235959Z",  # 2049
        b"\x17\x0d" + b"500101000000Z",  # 1950
        b"\x17\x0b" + b"2601011200Z",  # BER: no seconds
        b"\x17\x11" + b"260101120000+0200",
        b"\x18\x0f" + b"20260101120000Z",
    ],
)
def test_signing_time_read_directly_or_by_asn1crypto_alike(encoding):
    assert verify_module._time(encoding) == cms.Time.load(encoding).native


@pytest.mark.parametrize(
    "encoding", [b"\x17\x0d" + b"261301120000Z", b"\x17\x0d" + b"2601011200ZZZ", b"\x04\x00"]
)
def test_broken_signing_times_raise_value_error(encoding):
    with pytest.raises(ValueError, match=r"month|Error parsing|did not match"):
        verify_module._time(encoding)


@pytest.mark.parametrize(
    "encoding", [b"\x04\x20" + bytes(range(32)), b"\x04\x00", b"\x04\x81\x80" + bytes(128)]
)
def test_message_digest_read_directly_or_by_asn1crypto_alike(encoding):
    assert verify_module._octets(encoding) == cms.OctetString.load(encoding).native


def test_a_message_digest_that_is_no_octet_string_is_refused():
    with pytest.raises(ValueError, match="tag should have been 4"):
        verify_module._octets(b"\x05\x00")
