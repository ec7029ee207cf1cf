"""ASN.1 types and object identifiers for CMS encryption that asn1crypto 1.5.1 lacks.

Nothing here is registered in asn1crypto's global OID maps: other code in the same process
(pyhanko-certvalidator, the signing side) may rely on the dotted form asn1crypto returns for
OIDs it does not know, so these names live in this module only and are compared by dotted OID.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from asn1crypto import core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from sealrelay.smime.ber import encode_header
from sealrelay.smime.memo import cached_by_identity


# Content types (RFC 5652 §4, RFC 5083 §1).
ID_DATA = "1.2.840.113549.1.7.1"
ID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
ID_AUTH_ENVELOPED_DATA = "1.2.840.113549.1.9.16.1.23"

# Key transport (RFC 8017, RFC 4055).
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
RSAES_OAEP = "1.2.840.113549.1.1.7"

# ECDH key agreement schemes of RFC 5753 §7.1.4 (SEC 1 / X9.63 KDF with the named hash):
# dhSinglePass-stdDH-sha*kdf-scheme and dhSinglePass-cofactorDH-sha*kdf-scheme.
# Standard and cofactor DH are the same computation on the cofactor-1 NIST curves.
ECDH_STD_SHA1KDF = "1.3.133.16.840.63.0.2"
ECDH_STD_SHA224KDF = "1.3.132.1.11.0"
ECDH_STD_SHA256KDF = "1.3.132.1.11.1"
ECDH_STD_SHA384KDF = "1.3.132.1.11.2"
ECDH_STD_SHA512KDF = "1.3.132.1.11.3"
ECDH_COFACTOR_SHA1KDF = "1.3.133.16.840.63.0.3"
ECDH_COFACTOR_SHA224KDF = "1.3.132.1.14.0"
ECDH_COFACTOR_SHA256KDF = "1.3.132.1.14.1"
ECDH_COFACTOR_SHA384KDF = "1.3.132.1.14.2"
ECDH_COFACTOR_SHA512KDF = "1.3.132.1.14.3"

#: KDF scheme OID -> the hash name of its X9.63 KDF (names as in `cryptography.hazmat`).
ECDH_KDF_HASHES: dict[str, str] = {
    ECDH_STD_SHA1KDF: "sha1",
    ECDH_STD_SHA224KDF: "sha224",
    ECDH_STD_SHA256KDF: "sha256",
    ECDH_STD_SHA384KDF: "sha384",
    ECDH_STD_SHA512KDF: "sha512",
    ECDH_COFACTOR_SHA1KDF: "sha1",
    ECDH_COFACTOR_SHA224KDF: "sha224",
    ECDH_COFACTOR_SHA256KDF: "sha256",
    ECDH_COFACTOR_SHA384KDF: "sha384",
    ECDH_COFACTOR_SHA512KDF: "sha512",
}

# AES key wrap (RFC 3394 / RFC 3565) -> key-encryption key length in bytes.
AES128_WRAP = "2.16.840.1.101.3.4.1.5"
AES192_WRAP = "2.16.840.1.101.3.4.1.25"
AES256_WRAP = "2.16.840.1.101.3.4.1.45"
AES_WRAP_KEY_SIZES: dict[str, int] = {AES128_WRAP: 16, AES192_WRAP: 24, AES256_WRAP: 32}
# Triple-DES key wrap (RFC 3217, RFC 3370 4.3.1): what OpenSSL uses for ECDH recipients of
# 3DES content. Unwrapped only, for mail from older clients.
CMS3DES_WRAP = "1.2.840.113549.1.9.16.3.6"
#: Every key wrap sealrelay unwraps -> key-encryption key length in bytes.
KEY_WRAP_SIZES: dict[str, int] = {**AES_WRAP_KEY_SIZES, CMS3DES_WRAP: 24}


#: Encodings up to this size are cached; larger ones (only ever from hostile input) are not.
_MAX_CACHED_ENCODING = 4096
_T = TypeVar("_T")


def cached_by_encoding(parse: Callable[[bytes], _T]) -> Callable[[bytes], _T]:
    """`parse` with an LRU cache keyed by the encoding it reads.

    For the small structures (OIDs, algorithm identifiers, names) that recur in every message
    of a sender: asn1crypto takes tens of microseconds to parse each one.
    """
    cached = functools.lru_cache(maxsize=256)(parse)

    @functools.wraps(parse)
    def lookup(encoding: bytes) -> _T:
        return cached(encoding) if len(encoding) <= _MAX_CACHED_ENCODING else parse(encoding)

    return lookup


@cached_by_encoding
def oid_dotted(encoding: bytes) -> str:
    """The dotted form of a DER OBJECT IDENTIFIER (raises ValueError for anything else)."""
    return str(core.ObjectIdentifier.load(encoding).dotted)


def names_equal(first: bytes, second: bytes) -> bool:
    """RFC 5280 7.1 comparison of two DER Names, as asn1crypto does it, made cheap for the
    common case: identical encodings are equal names, and only differing encodings go through
    asn1crypto's comparison (stringprep of every attribute, about a millisecond), cached.

    Raises ValueError or TypeError when an encoding that needs comparing is not a Name.
    """
    if first == second:
        return True
    if len(first) + len(second) > _MAX_CACHED_NAMES:
        return _compare_names(first, second)
    return _cached_compare_names(first, second)


#: Real names are a few hundred bytes; larger ones (from hostile input) are not cached.
_MAX_CACHED_NAMES = 8 * 1024


def _compare_names(first: bytes, second: bytes) -> bool:
    return bool(asn1_x509.Name.load(first) == asn1_x509.Name.load(second))


_cached_compare_names = functools.lru_cache(maxsize=1024)(_compare_names)


@cached_by_identity(maxsize=256)
def issuer_and_serial(cert: x509.Certificate) -> bytes:
    """The DER IssuerAndSerialNumber naming `cert` (as a sid or rid), made once per
    certificate: the issuer Name and serial number are copied byte for byte from the
    certificate, never rebuilt from parsed values."""
    tbs = asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))["tbs_certificate"]
    issuer, serial = bytes(tbs["issuer"].dump()), bytes(tbs["serial_number"].dump())
    return encode_header(0x30, len(issuer) + len(serial)) + issuer + serial


class GCMParameters(core.Sequence):  # type: ignore[misc]
    """RFC 5084 §3.2: the parameters of id-aes{128,192,256}-GCM."""

    _fields = [  # noqa: RUF012 -- asn1crypto's declaration style
        ("aes_nonce", core.OctetString),
        ("aes_icvlen", core.Integer, {"default": 12}),
    ]


class KeyWrapAlgorithm(core.Sequence):  # type: ignore[misc]
    """An AlgorithmIdentifier whose parameters are kept exactly as received.

    The sender's DER of this identifier goes into the ECC-CMS-SharedInfo it hashed, so it must
    be reproduced byte for byte; asn1crypto's KeyEncryptionAlgorithm would normalise it.
    """

    _fields = [  # noqa: RUF012 -- asn1crypto's declaration style
        ("algorithm", core.ObjectIdentifier),
        ("parameters", core.Any, {"optional": True}),
    ]


class EccCmsSharedInfo(core.Sequence):  # type: ignore[misc]
    """RFC 5753 §7.2 ECC-CMS-SharedInfo, the SharedInfo input of the X9.63 KDF."""

    _fields = [  # noqa: RUF012 -- asn1crypto's declaration style
        ("key_info", KeyWrapAlgorithm),
        ("entity_u_info", core.OctetString, {"explicit": 0, "optional": True}),
        # The key-encryption key length in bits, as a 32-bit big-endian number.
        ("supp_pub_info", core.OctetString, {"explicit": 2}),
    ]
