"""The ECDH key-encryption key of RFC 5753 §3.1.1, shared by encryption and decryption."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF

from sealrelay.smime.asn1 import KEY_WRAP_SIZES, EccCmsSharedInfo, KeyWrapAlgorithm


_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def derive_kek(
    private_key: ec.EllipticCurvePrivateKey,
    peer_key: ec.EllipticCurvePublicKey,
    *,
    kdf_hash: str,
    wrap: KeyWrapAlgorithm,
    ukm: bytes | None,
) -> bytes:
    """The key-wrap key: X9.63 KDF over the ECDH secret and the ECC-CMS-SharedInfo.

    `wrap` must be the key-wrap AlgorithmIdentifier as it appears (or will appear) in the
    KeyAgreeRecipientInfo, since its encoding is part of the KDF input.
    """
    key_size = KEY_WRAP_SIZES[wrap["algorithm"].dotted]
    shared_info = EccCmsSharedInfo(
        {
            "key_info": wrap,
            "entity_u_info": ukm,
            "supp_pub_info": (key_size * 8).to_bytes(4, "big"),
        }
    ).dump()
    secret = private_key.exchange(ec.ECDH(), peer_key)
    kdf = X963KDF(algorithm=_HASHES[kdf_hash](), length=key_size, sharedinfo=shared_info)
    return kdf.derive(secret)
