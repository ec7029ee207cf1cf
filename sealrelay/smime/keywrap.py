"""Triple-DES key unwrap (RFC 3217 section 3.2), for ECDH mail with 3DES content.

OpenSSL wraps the content key of a 3DES message for an ECDH recipient with id-alg-CMS3DESwrap
instead of an AES key wrap; older clients send such mail. sealrelay never wraps with it.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes


#: The IV of the outer encryption (RFC 3217 section 3.1 step 7).
_OUTER_IV = bytes.fromhex("4adda22c79e82105")
_KEY_SIZE = 24
_CHECKSUM_SIZE = 8
_BLOCK = 8


def des3_key_unwrap(kek: bytes, wrapped: bytes) -> bytes:
    """The 24-byte 3DES content key wrapped under `kek` (24 bytes); ValueError if `wrapped`
    is not a key wrapped under `kek` (wrong length or key checksum)."""
    if len(wrapped) != _BLOCK + _KEY_SIZE + _CHECKSUM_SIZE:
        raise ValueError("a 3DES-wrapped key is 40 bytes")
    # Undo the outer encryption and the octet reversal: the first block is the inner IV.
    inner = _cbc_decrypt(kek, _OUTER_IV, wrapped)[::-1]
    key_and_checksum = _cbc_decrypt(kek, inner[:_BLOCK], inner[_BLOCK:])
    key, checksum = key_and_checksum[:_KEY_SIZE], key_and_checksum[_KEY_SIZE:]
    # CMS key checksum (RFC 3217 section 2): the first 8 octets of the key's SHA-1.
    expected = hashlib.sha1(key, usedforsecurity=False).digest()[:_CHECKSUM_SIZE]
    if not hmac.compare_digest(checksum, expected):
        raise ValueError("the 3DES-wrapped key fails its checksum")
    return key


def _cbc_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    decryptor = Cipher(TripleDES(key), modes.CBC(iv)).decryptor()
    return decryptor.update(data) + decryptor.finalize()
