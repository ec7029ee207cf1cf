"""The CMS content-encryption algorithms sealrelay knows, by OID and by sealrelay name."""

from __future__ import annotations

from typing import Literal

import attrs
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import BlockCipherAlgorithm, algorithms

from sealrelay.smime.asn1 import AES128_WRAP, AES192_WRAP, AES256_WRAP


#: The ciphers sealrelay encrypts with.
EncryptionCipherName = Literal["aes128-cbc", "aes256-cbc", "aes128-gcm", "aes256-gcm"]


@attrs.frozen
class ContentCipher:
    name: str
    oid: str
    key_size: int
    block_size: int
    authenticated: bool
    #: The AES key wrap of matching strength for ECDH recipients (RFC 5753 §7.1.5).
    wrap_oid: str | None

    def algorithm(self, key: bytes) -> BlockCipherAlgorithm:
        return TripleDES(key) if self.name == "des-ede3-cbc" else algorithms.AES(key)


_ALL = (
    ContentCipher("aes256-gcm", "2.16.840.1.101.3.4.1.46", 32, 16, True, AES256_WRAP),
    ContentCipher("aes192-gcm", "2.16.840.1.101.3.4.1.26", 24, 16, True, AES192_WRAP),
    ContentCipher("aes128-gcm", "2.16.840.1.101.3.4.1.6", 16, 16, True, AES128_WRAP),
    ContentCipher("aes256-cbc", "2.16.840.1.101.3.4.1.42", 32, 16, False, AES256_WRAP),
    ContentCipher("aes192-cbc", "2.16.840.1.101.3.4.1.22", 24, 16, False, AES192_WRAP),
    ContentCipher("aes128-cbc", "2.16.840.1.101.3.4.1.2", 16, 16, False, AES128_WRAP),
    # Decrypt only: old mail and old clients (RFC 9216's samples still use it).
    ContentCipher("des-ede3-cbc", "1.2.840.113549.3.7", 24, 8, False, None),
)

#: Every cipher sealrelay decrypts, strongest first, keyed by dotted OID.
BY_OID: dict[str, ContentCipher] = {c.oid: c for c in _ALL}
#: The same, keyed by sealrelay name.
BY_NAME: dict[str, ContentCipher] = {c.name: c for c in _ALL}

#: What sealrelay can decrypt and asks senders to use, strongest first, in the names of
#: `sealrelay.smime.algorithms` (SMIMECapabilities, RFC 8551 §2.5.2): RSA-OAEP key transport
#: included. AES-192 and 3DES are decrypted but not announced, so that senders pick the others.
DECRYPTABLE_CAPABILITIES: tuple[str, ...] = (
    "aes256-gcm",
    "aes128-gcm",
    "aes256-cbc",
    "aes128-cbc",
    "rsaes-oaep",
)
