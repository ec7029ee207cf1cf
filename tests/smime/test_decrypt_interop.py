"""OpenSSL 3.0 (`cms -encrypt`) and gpgsm 2.2 (`--encrypt`, BER) encrypt, sealrelay decrypts."""

from __future__ import annotations

import pytest

from sealrelay.smime.decrypt import decrypt_content
from tests.conftest import require_executable
from tests.pki import TestIdentity, TestPKI
from tests.smime.peers import Gpgsm, OpenSSL


pytestmark = pytest.mark.interop

CONTENT = b"Content-Type: application/octet-stream\r\n\r\n" + bytes(range(256)) * 40 + b"end"
CMS3DES_WRAP_OID = bytes.fromhex("060b2a864886f70d0109100306")  # 1.2.840.113549.1.9.16.3.6
# OpenSSL option -> the cipher sealrelay reports.
OPENSSL_CIPHERS = {
    "-aes128": "aes128-cbc",
    "-aes192": "aes192-cbc",
    "-aes256": "aes256-cbc",
    "-des3": "des-ede3-cbc",
    "-aes-128-gcm": "aes128-gcm",
    "-aes-256-gcm": "aes256-gcm",
}
# name -> (identity attribute, -keyopt options, key management sealrelay reports)
OPENSSL_RECIPIENTS = {
    "rsa-pkcs1v15": ("rsa2048", [], "rsa-pkcs1v15"),
    "rsa-oaep-sha1": ("rsa2048", ["rsa_padding_mode:oaep"], "rsa-oaep"),
    "rsa-oaep-sha256": (
        "rsa3072",
        ["rsa_padding_mode:oaep", "rsa_oaep_md:sha256", "rsa_mgf1_md:sha256"],
        "rsa-oaep",
    ),
    "p256-sha1kdf": ("p256", [], "ecdh"),
    "p256-sha256kdf": ("p256", ["ecdh_kdf_md:sha256"], "ecdh"),
    "p384-sha384kdf": ("p384", ["ecdh_kdf_md:sha384"], "ecdh"),
    "p384-sha512kdf": ("p384", ["ecdh_kdf_md:sha512"], "ecdh"),
}


def keys_of(*identities: TestIdentity):
    return [(identity.cert, identity.key) for identity in identities]


@pytest.fixture
def openssl_peer(tmp_path) -> OpenSSL:
    return OpenSSL(require_executable("openssl"), tmp_path)


@pytest.mark.parametrize("option", list(OPENSSL_CIPHERS))
@pytest.mark.parametrize("recipient", list(OPENSSL_RECIPIENTS))
def test_openssl_encrypted(openssl_peer: OpenSSL, pki: TestPKI, option, recipient):
    who, keyopts, scheme = OPENSSL_RECIPIENTS[recipient]
    identity: TestIdentity = getattr(pki, who)
    der = openssl_peer.encrypt(CONTENT, [(identity, keyopts)], [option])
    if option == "-des3" and scheme == "ecdh":
        # OpenSSL wraps a 3DES key with the RFC 3217 3DES key wrap, not an AES key wrap.
        assert CMS3DES_WRAP_OID in der

    result = decrypt_content(der, keys_of(identity))

    assert result.content == CONTENT
    assert result.cipher == OPENSSL_CIPHERS[option]
    assert result.key_management == scheme
    assert result.authenticated == ("gcm" in option)


@pytest.mark.parametrize("option", ["-aes256", "-aes-128-gcm"])
@pytest.mark.parametrize("extra", [["-keyid"], ["-stream"], ["-keyid", "-stream"]])
def test_openssl_mixed_recipients_keyid_and_stream(
    openssl_peer: OpenSSL, pki: TestPKI, option, extra
):
    recipients = [
        (pki.rsa2048, []),
        (pki.p256, ["ecdh_kdf_md:sha256"]),
        (pki.rsa3072, ["rsa_padding_mode:oaep"]),
        (pki.p384, []),
    ]
    der = openssl_peer.encrypt(CONTENT, recipients, [option, *extra])
    if "-stream" in extra:
        assert der[1] == 0x80  # BER, indefinite length
    for identity, _ in recipients:
        assert decrypt_content(der, keys_of(identity)).content == CONTENT
    # A mixed key ring finds its entry whichever key comes first.
    assert decrypt_content(der, keys_of(pki.ed25519, pki.p384, pki.rsa2048)).content == CONTENT


def test_openssl_large_streamed_message(openssl_peer: OpenSSL, pki: TestPKI):
    content = bytes(range(256)) * 8192  # 2 MiB: 512 chunks of 4 KiB in -stream output
    der = openssl_peer.encrypt(content, [(pki.p256, [])], ["-aes-256-gcm", "-stream"])
    assert decrypt_content(der, keys_of(pki.p256)).content == content


@pytest.fixture(scope="module")
def gpgsm_peer(tmp_path_factory, pki: TestPKI):
    peer = Gpgsm.create(tmp_path_factory.mktemp("gnupg"), pki)
    try:
        peer.import_certificate(pki.rsa3072)
        yield peer
    finally:
        peer.stop()


@pytest.mark.parametrize(
    ("cipher_algo", "cipher"),
    [
        (None, "aes128-cbc"),
        ("AES", "aes128-cbc"),
        ("AES192", "aes192-cbc"),
        ("AES256", "aes256-cbc"),
        ("3DES", "des-ede3-cbc"),
    ],
)
def test_gpgsm_encrypted(gpgsm_peer: Gpgsm, pki: TestPKI, cipher_algo, cipher):
    content = CONTENT * 10  # several of gpgsm's BER chunks
    der = gpgsm_peer.encrypt(content, "bob@example.org", cipher_algo)
    assert der[:2] == b"\x30\x80"  # gpgsm always writes BER with indefinite lengths

    result = decrypt_content(der, keys_of(pki.rsa3072))

    assert result.content == content
    assert result.cipher == cipher
    assert result.key_management == "rsa-pkcs1v15"
