"""Algorithm names shared by signing and verification: digests and SMIMECapabilities.

sealrelay names ciphers with short lower-case strings (``aes256-gcm``); this module is the one
place that maps them to and from the OIDs carried in CMS.
"""

from __future__ import annotations

import functools

from asn1crypto import algos, cms, core
from cryptography.hazmat.primitives import hashes


#: Digests sealrelay signs with, by asn1crypto name.
SIGNING_DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

#: Digests sealrelay can compute when verifying; the weak ones only to report `weak-algorithm`.
VERIFY_DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    **SIGNING_DIGESTS,
    "sha224": hashes.SHA224,
    "sha1": hashes.SHA1,
    "md5": hashes.MD5,
}
WEAK_DIGESTS = frozenset({"sha1", "md5"})

_CAPABILITY_OIDS = {
    "aes256-gcm": "2.16.840.1.101.3.4.1.46",
    "aes192-gcm": "2.16.840.1.101.3.4.1.26",
    "aes128-gcm": "2.16.840.1.101.3.4.1.6",
    "aes256-cbc": "2.16.840.1.101.3.4.1.42",
    "aes192-cbc": "2.16.840.1.101.3.4.1.22",
    "aes128-cbc": "2.16.840.1.101.3.4.1.2",
    "des-ede3-cbc": "1.2.840.113549.3.7",
    "rsaes-oaep": "1.2.840.113549.1.1.7",
}
_CAPABILITY_NAMES = {oid: name for name, oid in _CAPABILITY_OIDS.items()}


def _oaep_sha256_params() -> algos.RSAESOAEPParams:
    # Announcing OAEP with SHA-256 (not the SHA-1 default) asks senders for the stronger variant.
    sha256 = algos.DigestAlgorithm({"algorithm": "sha256"})
    return algos.RSAESOAEPParams(
        {
            "hash_algorithm": sha256,
            "mask_gen_algorithm": algos.MaskGenAlgorithm(
                {"algorithm": "mgf1", "parameters": sha256}
            ),
        }
    )


@functools.lru_cache(maxsize=64)
def encode_capabilities(names: tuple[str, ...]) -> bytes:
    """The DER SMIMECapabilities attribute value for `names`, in the given (preference) order.

    Cached: policies use a handful of lists and asn1crypto takes milliseconds to build one.
    """
    entries = []
    for name in names:
        oid = _CAPABILITY_OIDS.get(name)
        if oid is None:
            raise ValueError(
                f"unknown S/MIME capability {name!r}; known: {sorted(_CAPABILITY_OIDS)}"
            )
        entry: dict[str, object] = {"capability_id": oid}
        if name == "rsaes-oaep":
            entry["parameters"] = core.Any(_oaep_sha256_params())
        entries.append(cms.SMIMECapabilityIdentifier(entry))
    return bytes(cms.SMIMECapabilites(entries).dump())


def decode_capabilities(value: cms.SMIMECapabilites) -> tuple[str, ...]:
    """The capability names sealrelay knows, in the sender's order; unknown ones are skipped."""
    names = []
    for entry in value:
        name = _CAPABILITY_NAMES.get(entry["capability_id"].dotted)
        if name is not None and name not in names:
            names.append(name)
    return tuple(names)
