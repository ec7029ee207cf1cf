"""sealrelay encrypts, OpenSSL 3.0 (`cms -decrypt`) and gpgsm 2.2 (`--decrypt`) decrypt."""

from __future__ import annotations

import pytest

from sealrelay.smime.envelope import Recipient, encrypt_content
from tests.conftest import require_executable
from tests.pki import TestPKI
from tests.smime.peers import Gpgsm, OpenSSL


pytestmark = pytest.mark.interop

CIPHERS = ["aes128-cbc", "aes256-cbc", "aes128-gcm", "aes256-gcm"]
# Binary, with CR LF, NUL and a final byte that is not a newline: nothing may be altered.
CONTENT = b"Content-Type: application/octet-stream\r\n\r\n" + bytes(range(256)) * 40 + b"end"


@pytest.fixture
def openssl_peer(tmp_path) -> OpenSSL:
    return OpenSSL(require_executable("openssl"), tmp_path)


@pytest.fixture(scope="module")
def gpgsm_peer(tmp_path_factory, pki: TestPKI):
    peer = Gpgsm.create(tmp_path_factory.mktemp("gnupg"), pki)
    try:
        peer.import_key(pki.rsa2048)
        yield peer
    finally:
        peer.stop()


@pytest.mark.parametrize("cipher", CIPHERS)
@pytest.mark.parametrize(
    ("who", "padding"),
    [("rsa2048", "pkcs1v15"), ("rsa3072", "oaep"), ("p256", None), ("p384", None)],
)
def test_openssl_decrypts(openssl_peer: OpenSSL, pki: TestPKI, cipher, who, padding):
    identity = getattr(pki, who)
    der = encrypt_content(CONTENT, [Recipient(identity.cert, rsa_padding=padding)], cipher=cipher)
    assert openssl_peer.decrypt(der, identity) == CONTENT


@pytest.mark.parametrize("cipher", CIPHERS)
def test_openssl_decrypts_each_of_mixed_recipients(openssl_peer: OpenSSL, pki: TestPKI, cipher):
    der = encrypt_content(
        CONTENT,
        [
            pki.rsa2048.cert,
            Recipient(pki.rsa3072.cert, identifier="ski", rsa_padding="oaep"),
            Recipient(pki.p256.cert, identifier="ski"),
            pki.p384.cert,
        ],
        cipher=cipher,
    )
    for identity in (pki.rsa2048, pki.rsa3072, pki.p256, pki.p384):
        assert openssl_peer.decrypt(der, identity) == CONTENT


@pytest.mark.parametrize("cipher", ["aes128-cbc", "aes256-cbc"])
def test_gpgsm_decrypts(gpgsm_peer: Gpgsm, pki: TestPKI, cipher):
    # gpgsm 2.2 reads only issuerAndSerialNumber, RSA PKCS#1 v1.5 and CBC (no GCM, OAEP, ECDH).
    der = encrypt_content(CONTENT, [pki.rsa2048.cert, pki.p256.cert], cipher=cipher)
    assert gpgsm_peer.decrypt(der) == CONTENT
