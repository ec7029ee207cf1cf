"""What OpenSSL (`cms -sign`) and gpgsm (`--sign`, `--detach-sign`) produce, sealrelay verifies.

Not covered: Ed25519 from a peer (OpenSSL 3.0 cannot sign CMS with Ed25519, openssl#11915;
gpgsm 2.2 has no EdDSA S/MIME), and ECDSA signed by gpgsm (gpgsm 2.2 crashes importing an EC
PKCS#12, so it cannot be given an EC signing key).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sealrelay.smime.mime import multipart_signed, pkcs7_mime_entity
from sealrelay.smime.verify import verify_entity, verify_message, verify_signed_data
from tests.smime.conftest import Gpgsm, PkiFiles, run


pytestmark = pytest.mark.interop

# Bare LF on purpose: openssl canonicalises to CRLF when signing, and so must the verifier.
ENTITY = b"Content-Type: text/plain; charset=us-ascii\n\nHello from OpenSSL  \n-- \nbye\n"


def openssl_sign(openssl, files: PkiFiles, tmp_path: Path, identity, *options: str) -> bytes:
    content = tmp_path / "entity.txt"
    content.write_bytes(ENTITY)
    cert, key = files.identity(identity)
    output = tmp_path / "signed.out"
    result = run(
        [openssl, "cms", "-sign", "-signer", str(cert), "-inkey", str(key),
         "-certfile", str(files.intermediate), "-in", str(content), "-out", str(output),
         "-from", identity.address or "nobody@example.org", "-to", "bob@example.org",
         "-subject", "from openssl", *options]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    return output.read_bytes()


def check(pki, message: bytes, **kwargs):
    kwargs.setdefault("crls", [pki.crl, pki.root_crl])
    return verify_message(message, trust_anchors=pki.trust_anchors(), **kwargs)


@pytest.mark.parametrize(
    "case",
    [
        ("rsa2048", [], "clear", "sha256"),
        ("rsa2048", ["-nodetach"], "opaque", "sha256"),
        ("rsa2048", ["-stream"], "clear", "sha256"),
        ("rsa2048", ["-nodetach", "-stream"], "opaque", "sha256"),
        ("rsa3072", ["-keyopt", "rsa_padding_mode:pss", "-md", "sha384"], "clear", "sha384"),
        ("rsa2048", ["-keyid"], "clear", "sha256"),
        ("p256", [], "clear", "sha256"),
        ("p384", ["-md", "sha512", "-nodetach"], "opaque", "sha512"),
    ],
    ids=["rsa", "rsa-opaque", "rsa-stream", "rsa-opaque-stream", "pss", "keyid", "p256", "p384"],
)
def test_openssl_signed_messages_verify(pki_files: PkiFiles, openssl, tmp_path, case):
    name, options, mode, digest = case
    identity = getattr(pki_files.pki, name)
    message = openssl_sign(openssl, pki_files, tmp_path, identity, *options)
    result = check(pki_files.pki, message)
    assert (result.status, result.reason, result.revocation) == ("valid", None, "ok")
    assert (result.mode, result.digest, result.signer) == (mode, digest, identity.address)
    assert result.content.replace(b"\r\n", b"\n") == ENTITY
    assert result.signing_time is not None
    assert "aes256-cbc" in result.capabilities  # OpenSSL's default SMIMECapabilities


def test_openssl_der_ber_output_verifies(pki, pki_files, openssl, tmp_path):
    der = openssl_sign(
        openssl, pki_files, tmp_path, pki.p256, "-nodetach", "-stream", "-outform", "DER"
    )
    assert der[:2] == b"\x30\x80", "expected BER indefinite length"
    result = verify_signed_data(
        der, None, trust_anchors=pki.trust_anchors(), expected_address="carol@example.org"
    )
    assert result.status == "valid"
    assert result.content == ENTITY.replace(b"\n", b"\r\n")


def test_openssl_without_signed_attributes(pki, pki_files, openssl, tmp_path):
    result = check(pki, openssl_sign(openssl, pki_files, tmp_path, pki.rsa2048, "-noattr"))
    assert (result.status, result.signing_time, result.capabilities) == ("valid", None, ())


def test_openssl_two_signers(pki, pki_files, openssl, tmp_path):
    cert, key = pki_files.identity(pki.p256)
    message = openssl_sign(
        openssl, pki_files, tmp_path, pki.rsa2048, "-signer", str(cert), "-inkey", str(key)
    )
    assert check(pki, message).status == "valid"


def test_openssl_without_certificates(pki, pki_files, openssl, tmp_path):
    message = openssl_sign(openssl, pki_files, tmp_path, pki.rsa2048, "-nocerts")
    assert check(pki, message).reason == "no-signer-certificate"
    result = check(pki, message, extra_certificates=[pki.rsa2048.cert, pki.intermediate])
    assert result.status == "valid"


def test_openssl_sha1_is_weak(pki, pki_files, openssl, tmp_path):
    result = check(pki, openssl_sign(openssl, pki_files, tmp_path, pki.p256, "-md", "sha1"))
    assert (result.reason, result.crypto, result.digest) == (
        "weak-algorithm",
        "weak-algorithm",
        "sha1",
    )


def test_openssl_message_tampered_in_transit(pki, pki_files, openssl, tmp_path):
    message = openssl_sign(openssl, pki_files, tmp_path, pki.rsa2048)
    assert b"Hello from OpenSSL  " in message
    tampered = message.replace(b"Hello from OpenSSL  ", b"Hello from OpenSSL")
    assert check(pki, tampered).reason == "content-altered"


@pytest.mark.parametrize(
    "case",
    [
        ("expired", "expired"),
        ("revoked", "revoked"),
        ("no_email_eku", "no-email-protection-eku"),
        ("untrusted", "untrusted"),
    ],
    ids=["expired", "revoked", "no-email-eku", "untrusted"],
)
def test_openssl_signed_with_bad_certificates(pki_files: PkiFiles, openssl, tmp_path, case):
    name, reason = case
    pki = pki_files.pki
    result = check(pki, openssl_sign(openssl, pki_files, tmp_path, getattr(pki, name)))
    assert (result.status, result.reason, result.crypto, result.chain) == (
        "invalid",
        reason,
        "ok",
        reason,
    )


def test_gpgsm_detached_signature_verifies(pki, gpgsm: Gpgsm, openssl, tmp_path):
    fingerprint = gpgsm.import_secret_key(pki.rsa2048, openssl)
    entity = ENTITY.replace(b"\n", b"\r\n")
    (tmp_path / "entity").write_bytes(entity)
    signature = gpgsm.sign(fingerprint, tmp_path / "entity", tmp_path / "sig", detached=True)
    assert signature[:2] == b"\x30\x80", "gpgsm writes BER"
    message = b"From: alice@example.org\r\n" + multipart_signed(entity, signature, digest="sha256")
    result = check(pki, message)
    assert (result.status, result.mode, result.signer) == ("valid", "clear", "alice@example.org")
    assert check(pki, message.replace(b"bye", b"Bye")).reason == "content-altered"


def test_gpgsm_opaque_signature_verifies(pki, gpgsm: Gpgsm, openssl, tmp_path):
    fingerprint = gpgsm.import_secret_key(pki.rsa2048, openssl)
    entity = ENTITY.replace(b"\n", b"\r\n")
    (tmp_path / "entity").write_bytes(entity)
    der = gpgsm.sign(fingerprint, tmp_path / "entity", tmp_path / "signed", detached=False)
    result = verify_entity(
        pkcs7_mime_entity(der, "signed-data"),
        trust_anchors=pki.trust_anchors(),
        expected_address="alice@example.org",
    )
    assert (result.status, result.mode, result.content) == ("valid", "opaque", entity)
