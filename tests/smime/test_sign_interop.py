"""What sealrelay signs, OpenSSL's `cms -verify` and gpgsm `--verify` accept (and reject alike).

Not covered by the peers: Ed25519 (OpenSSL 3.0 has no Ed25519 CMS support, openssl#11915;
gpgsm 2.2 has none either) -- Ed25519 is checked against sealrelay's own verifier only.
"""

from __future__ import annotations

import pytest

from sealrelay.smime.mime import parse_multipart_signed, parse_pkcs7_mime
from sealrelay.smime.sign import Signer, sign_message
from tests.smime.conftest import Gpgsm, PkiFiles, run


pytestmark = pytest.mark.interop

MESSAGE = (
    "From: {address}\r\nTo: bob@example.org\r\nSubject: interop\r\n"
    "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    "Grüße aus dem Relay  \r\n-- \r\nsealrelay\r\n"
)


def signed_by(pki, name, *, mode, **kwargs):
    identity = getattr(pki, name)
    signer = Signer(identity.key, identity.cert, identity.chain, **kwargs)
    message = MESSAGE.format(address=identity.address or "x@example.org").encode()
    return sign_message(message, signer, mode=mode)


ROWS: list[tuple[str, dict[str, str]]] = [
    ("rsa2048", {}),
    ("rsa2048", {"digest": "sha512"}),
    ("rsa3072", {"rsa_padding": "pss"}),
    ("rsa3072", {"rsa_padding": "pss", "digest": "sha384"}),
    ("p256", {}),
    ("p384", {"digest": "sha384"}),
]
ROW_IDS = ["rsa2048", "rsa2048-sha512", "rsa3072-pss", "rsa3072-pss-sha384", "p256", "p384"]


@pytest.mark.parametrize("mode", ["clear", "opaque"])
@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_openssl_verifies_what_we_sign(pki_files: PkiFiles, openssl, tmp_path, row, mode):
    name, options = row
    message = tmp_path / "signed.eml"
    message.write_bytes(signed_by(pki_files.pki, name, mode=mode, **options))
    out = tmp_path / "content"
    result = run(
        [openssl, "cms", "-verify", "-CAfile", str(pki_files.root_and_crls), "-crl_check_all",
         "-in", str(message), "-out", str(out)]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    assert b"Verification successful" in result.stderr
    assert b"Gr=C3=BC=C3=9Fe aus dem Relay =20\r\n--=20\r\nsealrelay" in out.read_bytes()


@pytest.mark.parametrize(
    "case",
    [
        ("expired", b"certificate has expired"),
        ("revoked", b"certificate revoked"),
        ("no_email_eku", b"unsuitable certificate purpose"),
        ("untrusted", b"unable to get local issuer certificate"),
    ],
    ids=["expired", "revoked", "no-email-eku", "untrusted"],
)
def test_openssl_rejects_what_we_reject(pki_files: PkiFiles, openssl, tmp_path, case):
    name, openssl_error = case
    message = tmp_path / "signed.eml"
    message.write_bytes(signed_by(pki_files.pki, name, mode="clear"))
    result = run(
        [openssl, "cms", "-verify", "-CAfile", str(pki_files.root_and_crls), "-crl_check_all",
         "-in", str(message), "-out", str(tmp_path / "content")]
    )  # fmt: skip
    assert result.returncode != 0
    assert openssl_error in result.stderr


def test_openssl_sees_a_tampered_message(pki, pki_files, openssl, tmp_path):
    message = tmp_path / "signed.eml"
    message.write_bytes(signed_by(pki, "rsa2048", mode="clear").replace(b"Relay =20", b"Relay=20"))
    result = run(
        [openssl, "cms", "-verify", "-CAfile", str(pki_files.root), "-in", str(message),
         "-out", str(tmp_path / "content")]
    )  # fmt: skip
    assert result.returncode != 0
    assert b"CMS_SignerInfo_verify_content" in result.stderr


@pytest.mark.parametrize("mode", ["clear", "opaque"])
@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_gpgsm_verifies_what_we_sign(gpgsm: Gpgsm, tmp_path, row, mode):
    name, options = row
    signed = signed_by(gpgsm.files.pki, name, mode=mode, **options)
    if mode == "clear":
        clear = parse_multipart_signed(signed)
        (tmp_path / "content").write_bytes(clear.content)
        (tmp_path / "sig.p7s").write_bytes(clear.signature)
        result = gpgsm.run("--verify", str(tmp_path / "sig.p7s"), str(tmp_path / "content"))
    else:
        (tmp_path / "msg.p7m").write_bytes(parse_pkcs7_mime(signed).der)
        out = tmp_path / "out"
        result = gpgsm.run("-o", str(out), "--verify", str(tmp_path / "msg.p7m"))
        assert b"Gr=C3=BC=C3=9Fe aus dem Relay =20" in out.read_bytes()
    status = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert "[GNUPG:] GOODSIG" in status
    assert "[GNUPG:] VALIDSIG" in status
    assert "[GNUPG:] TRUST_FULLY" in status


def test_gpgsm_rejects_a_tampered_signature(pki, gpgsm: Gpgsm, tmp_path):
    clear = parse_multipart_signed(signed_by(pki, "p256", mode="clear"))
    (tmp_path / "content").write_bytes(clear.content.replace(b"Relay", b"Relax"))
    (tmp_path / "sig.p7s").write_bytes(clear.signature)
    result = gpgsm.run("--verify", str(tmp_path / "sig.p7s"), str(tmp_path / "content"))
    assert result.returncode != 0
    assert "[GNUPG:] BADSIG" in result.stdout.decode()
