"""Private keys sealed under the master key, for storing them in a database.

A sealed key is AES-256-GCM over the key's PKCS#8 DER encoding, with a fresh 96-bit nonce,
under a key derived from the master key (HKDF-SHA256, so the master key itself is never used
directly and other uses of it stay separate). The associated data binds the sealed bytes to
what they belong to (a certificate fingerprint, a key-pool row): a sealed key copied into
another row does not unseal there.

Layout: ``b"SRK1" | master key id (8) | nonce (12) | ciphertext and tag``. The master key id
(also derived with HKDF) lets a wrong master key be told apart from damaged data, so the
operator gets an error that says which one it is.
"""

from __future__ import annotations

import secrets
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sealrelay.exceptions import SealrelayError


MAGIC: Final = b"SRK1"
KEY_ID_BYTES: Final = 8
NONCE_BYTES: Final = 12
_HEADER: Final = len(MAGIC) + KEY_ID_BYTES + NONCE_BYTES


class SealedKeyError(SealrelayError):
    """A sealed private key cannot be opened (wrong master key, or altered data)."""


def _derive(master_key: bytes, purpose: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=purpose).derive(
        master_key
    )


def master_key_id(master_key: bytes) -> str:
    """A short public identifier of the master key (hex), safe to store and to show."""
    return _derive(master_key, b"sealrelay master key id v1", KEY_ID_BYTES).hex()


def _aad(binding: str) -> bytes:
    return b"sealrelay sealed private key v1\x00" + binding.encode("utf-8")


def seal_private_key(master_key: bytes, key: PrivateKeyTypes, *, binding: str) -> bytes:
    """Encrypt *key* under *master_key*, bound to *binding* (e.g. the certificate's
    fingerprint): unsealing needs the same master key and the same binding."""
    plaintext = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    nonce = secrets.token_bytes(NONCE_BYTES)
    aead = AESGCM(_derive(master_key, b"sealrelay private keys v1", 32))
    key_id = bytes.fromhex(master_key_id(master_key))
    return MAGIC + key_id + nonce + aead.encrypt(nonce, plaintext, _aad(binding))


def unseal_private_key(master_key: bytes, sealed: bytes, *, binding: str) -> PrivateKeyTypes:
    """The private key sealed by :func:`seal_private_key`; SealedKeyError when the master key
    is not the one it was sealed with, or the data or its binding was altered."""
    if len(sealed) <= _HEADER or not sealed.startswith(MAGIC):
        raise SealedKeyError(
            f"the sealed private key for {binding} is not in a format this sealrelay knows; "
            "re-import the identity"
        )
    key_id = sealed[len(MAGIC) : len(MAGIC) + KEY_ID_BYTES].hex()
    if key_id != master_key_id(master_key):
        raise SealedKeyError(
            f"the private key for {binding} was sealed under another master key (id {key_id}, "
            f"the configured one is {master_key_id(master_key)}): set SEALRELAY_MASTER_KEY or "
            "[security] master_key_file to the key this database was created with"
        )
    nonce = sealed[len(MAGIC) + KEY_ID_BYTES : _HEADER]
    aead = AESGCM(_derive(master_key, b"sealrelay private keys v1", 32))
    try:
        plaintext = aead.decrypt(nonce, sealed[_HEADER:], _aad(binding))
    except InvalidTag:
        raise SealedKeyError(
            f"the sealed private key for {binding} does not authenticate: its row was altered "
            "or copied from another row; re-import the identity from its PKCS#12 file"
        ) from None
    # The key was validated when it was imported and has just authenticated under the
    # master key; skipping RSA validation again saves tens of milliseconds per key.
    return serialization.load_der_private_key(
        plaintext, password=None, unsafe_skip_rsa_key_validation=True
    )
