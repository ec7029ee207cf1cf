"""RFC 3217 Triple-DES key unwrap: a round trip through the RFC's wrapping steps, and every
damaged or foreign wrapped key refused with the ValueError that key recovery turns into a
random key (so that it fails like any other decryption)."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from sealrelay.smime.keywrap import des3_key_unwrap


KEK = bytes(range(1, 25))
CEK = bytes(range(100, 124))


def wrap(kek: bytes, cek: bytes, iv: bytes) -> bytes:
    """RFC 3217 section 3.1, steps 2 to 7 (the key parity of step 1 plays no part)."""
    checksum = hashlib.sha1(cek, usedforsecurity=False).digest()[:8]
    inner = Cipher(TripleDES(kek), modes.CBC(iv)).encryptor().update(cek + checksum)
    reversed_ = (iv + inner)[::-1]
    outer_iv = bytes.fromhex("4adda22c79e82105")
    return Cipher(TripleDES(kek), modes.CBC(outer_iv)).encryptor().update(reversed_)


def test_a_wrapped_key_unwraps():
    assert des3_key_unwrap(KEK, wrap(KEK, CEK, bytes(8))) == CEK
    assert des3_key_unwrap(KEK, wrap(KEK, CEK, b"\xa5" * 8)) == CEK


@pytest.mark.parametrize("index", [0, 7, 8, 20, 39])
def test_any_flipped_bit_is_refused(index):
    damaged = bytearray(wrap(KEK, CEK, bytes(8)))
    damaged[index] ^= 0x01
    with pytest.raises(ValueError, match="checksum"):
        des3_key_unwrap(KEK, bytes(damaged))


def test_another_kek_and_other_lengths_are_refused():
    with pytest.raises(ValueError, match="checksum"):
        des3_key_unwrap(bytes(range(2, 26)), wrap(KEK, CEK, bytes(8)))
    for length in (32, 48):
        with pytest.raises(ValueError, match="40 bytes"):
            des3_key_unwrap(KEK, bytes(length))
