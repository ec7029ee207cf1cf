"""Find which RecipientInfo is ours and recover the content-encryption key from it.

Matching is by recipient identifier only (issuerAndSerialNumber or subjectKeyIdentifier),
before any private-key operation. Once a RecipientInfo matched, key recovery never fails
visibly: a bad RSA block, OAEP error, invalid ECDH point or failed key unwrap all yield a
random key of the right size (RSA implicit rejection), so that every failure surfaces as the
same content decryption error later.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Sequence
from typing import Any, cast

import attrs
from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

from sealrelay.smime.asn1 import (
    AES_WRAP_KEY_SIZES,
    ECDH_KDF_HASHES,
    RSA_ENCRYPTION,
    RSAES_OAEP,
    KeyWrapAlgorithm,
    names_equal,
)
from sealrelay.smime.errors import NoMatchingKey, UnsupportedAlgorithm
from sealrelay.smime.keyagree import derive_kek


#: One of our keys with its certificate: what a RecipientInfo can point at.
KeyPair = tuple[x509.Certificate, PrivateKeyTypes]

_OAEP_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


@attrs.frozen
class Candidate:
    """One of our key pairs, with the identifiers a RecipientInfo may name it by."""

    certificate: x509.Certificate
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = attrs.field(repr=False)
    issuer: asn1_x509.Name
    serial: int
    subject_key_identifier: bytes


@attrs.frozen
class Match:
    """A RecipientInfo that names one of our keys, with what is needed to unwrap the key."""

    certificate: x509.Certificate
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = attrs.field(repr=False)
    #: "rsa-pkcs1v15", "rsa-oaep" or "ecdh".
    scheme: str
    encrypted_key: bytes = attrs.field(repr=False)
    #: The KeyTransRecipientInfo or KeyAgreeRecipientInfo (asn1crypto object).
    info: Any = attrs.field(repr=False)


def decryption_candidates(keys: Sequence[KeyPair]) -> list[Candidate]:
    """The RSA and EC pairs among `keys`, in the same order.

    Other key types cannot receive encrypted mail and are left out; a key that does not belong
    to its certificate is a configuration error (ValueError).
    """
    return [c for c in (_candidate(cert, key) for cert, key in keys) if c is not None]


def find_recipient(infos: cms.RecipientInfos, candidates: Sequence[Candidate]) -> Match:
    """The first candidate (in the caller's order of preference) that a RecipientInfo names.

    Raises NoMatchingKey when no RecipientInfo names any of them, UnsupportedAlgorithm when
    the only ones that do use a key management scheme sealrelay lacks. asn1crypto errors from
    malformed RecipientInfos propagate for the caller to map; everything key recovery reads
    from the RecipientInfo is parsed here, so that recovery itself meets no such error.
    """
    unsupported: list[str] = []
    for candidate in candidates:
        for info in infos:
            for encrypted_key, chosen in _entries_for(info, candidate):
                problem = _unsupported_reason(chosen, info.name, candidate)
                if problem is None:
                    return Match(
                        certificate=candidate.certificate,
                        key=candidate.key,
                        scheme=_scheme(chosen, info.name),
                        encrypted_key=encrypted_key,
                        info=chosen,
                    )
                unsupported.append(problem)
    if unsupported:
        raise UnsupportedAlgorithm(
            "the message is encrypted to our key, but with " + "; ".join(sorted(set(unsupported)))
        )
    held = ", ".join(c.certificate.subject.rfc4514_string() for c in candidates) or "none usable"
    raise NoMatchingKey(f"the message is not encrypted to any of our keys ({held})")


def recover_key(match: Match, key_size: int) -> bytes:
    """The content-encryption key, or a random key of `key_size` bytes on any failure."""
    try:
        key: bytes | None = _unwrap(match)
    except (ValueError, InvalidUnwrap):
        key = None
    if key is None or len(key) != key_size:
        return os.urandom(key_size)
    return key


def _candidate(cert: x509.Certificate, key: PrivateKeyTypes) -> Candidate | None:
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        return None  # signing-only key types (Ed25519, ...) never receive encrypted mail
    if key.public_key() != cert.public_key():
        raise ValueError(
            f"the private key given for {cert.subject.rfc4514_string()} does not belong to"
            " its certificate"
        )
    return Candidate(cert, key, *_identifiers(cert))


@functools.lru_cache(maxsize=256)
def _identifiers(cert: x509.Certificate) -> tuple[asn1_x509.Name, int, bytes]:
    """Issuer, serial number and subject key identifier of one of our certificates: parsed
    once per certificate rather than once per message (public data only, no key)."""
    parsed = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    try:
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        # What OpenSSL and RFC 5280 §4.2.1.2 method 1 would put there.
        ski = x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
    return parsed.issuer, int(parsed.serial_number), ski


def _entries_for(info: cms.RecipientInfo, candidate: Candidate) -> Iterator[tuple[bytes, Any]]:
    """(encrypted key, RecipientInfo) for every identifier in `info` naming `candidate`."""
    chosen = info.chosen
    if info.name == "ktri" and isinstance(candidate.key, rsa.RSAPrivateKey):
        if _names(chosen["rid"], candidate):
            yield cast(bytes, chosen["encrypted_key"].native), chosen
    elif info.name == "kari" and isinstance(candidate.key, ec.EllipticCurvePrivateKey):
        for entry in chosen["recipient_encrypted_keys"]:
            if _names(entry["rid"], candidate):
                yield cast(bytes, entry["encrypted_key"].native), chosen


def _names(rid: Any, candidate: Candidate) -> bool:
    if rid.name == "issuer_and_serial_number":
        return bool(
            rid.chosen["serial_number"].native == candidate.serial
            and names_equal(rid.chosen["issuer"].dump(), candidate.issuer.dump())
        )
    if rid.name == "subject_key_identifier":
        return bool(rid.chosen.native == candidate.subject_key_identifier)
    if rid.name == "r_key_id":
        return bool(rid.chosen["subject_key_identifier"].native == candidate.subject_key_identifier)
    return False


def _scheme(chosen: Any, kind: str) -> str:
    if kind == "kari":
        return "ecdh"
    algorithm = chosen["key_encryption_algorithm"]["algorithm"].dotted
    return "rsa-oaep" if algorithm == RSAES_OAEP else "rsa-pkcs1v15"


def _unsupported_reason(chosen: Any, kind: str, candidate: Candidate) -> str | None:
    algorithm = chosen["key_encryption_algorithm"]
    oid = algorithm["algorithm"].dotted
    if kind == "kari":
        return _unsupported_key_agreement(chosen, candidate)
    if oid == RSAES_OAEP:
        return _unsupported_oaep(algorithm["parameters"])
    return None if oid == RSA_ENCRYPTION else f"key transport algorithm {oid}"


def _unsupported_key_agreement(kari: Any, candidate: Candidate) -> str | None:
    algorithm = kari["key_encryption_algorithm"]
    oid = algorithm["algorithm"].dotted
    if oid not in ECDH_KDF_HASHES:
        return f"key agreement algorithm {oid}"
    if kari["originator"].name != "originator_key":
        return "static-static ECDH (originator identified by certificate)"
    if not isinstance(kari["originator"].chosen["public_key"].native, bytes):
        raise ValueError("ECDH originator key is not an EC point")
    if kari["ukm"].native is not None and not isinstance(kari["ukm"].native, bytes):
        raise ValueError("ECDH ukm is not an OCTET STRING")
    wrap = algorithm["parameters"].parse(KeyWrapAlgorithm)["algorithm"].dotted
    if wrap not in AES_WRAP_KEY_SIZES:
        return f"key wrap algorithm {wrap}"
    curve = cast(ec.EllipticCurvePrivateKey, candidate.key).curve
    if not isinstance(curve, ec.SECP256R1 | ec.SECP384R1 | ec.SECP521R1):
        return f"ECDH on curve {curve.name}"
    return None


def _unsupported_oaep(params: Any) -> str | None:
    digest = params["hash_algorithm"]["algorithm"].native
    mgf = params["mask_gen_algorithm"]
    if digest not in _OAEP_HASHES:
        return f"RSA-OAEP with hash {digest}"
    if mgf["algorithm"].native != "mgf1":
        return f"RSA-OAEP with mask generation {mgf['algorithm'].dotted}"
    if mgf["parameters"]["algorithm"].native not in _OAEP_HASHES:
        return f"RSA-OAEP with MGF1 hash {mgf['parameters']['algorithm'].dotted}"
    source = params["p_source_algorithm"]
    if source["algorithm"].native != "p_specified" or not isinstance(
        source["parameters"].native, bytes
    ):
        return "RSA-OAEP with a label source other than pSpecified"
    return None


def _unwrap(match: Match) -> bytes:
    key = match.key
    if isinstance(key, rsa.RSAPrivateKey):
        if match.scheme == "rsa-oaep":
            params = match.info["key_encryption_algorithm"]["parameters"]
            mgf_hash = _OAEP_HASHES[params["mask_gen_algorithm"]["parameters"]["algorithm"].native]
            label = params["p_source_algorithm"]["parameters"].native or None
            oaep = padding.OAEP(
                mgf=padding.MGF1(mgf_hash()),
                algorithm=_OAEP_HASHES[params["hash_algorithm"]["algorithm"].native](),
                label=label,
            )
            return key.decrypt(match.encrypted_key, oaep)
        # With OpenSSL >= 3.2 (bundled with cryptography) this already applies implicit
        # rejection: a bad block decrypts to a deterministic pseudo-random message.
        return key.decrypt(match.encrypted_key, padding.PKCS1v15())
    kari = match.info
    originator = kari["originator"].chosen
    peer = ec.EllipticCurvePublicKey.from_encoded_point(
        key.curve, bytes(originator["public_key"].native)
    )
    algorithm = kari["key_encryption_algorithm"]
    wrap = algorithm["parameters"].parse(KeyWrapAlgorithm)
    kek = derive_kek(
        key,
        peer,
        kdf_hash=ECDH_KDF_HASHES[algorithm["algorithm"].dotted],
        wrap=wrap,
        ukm=kari["ukm"].native,
    )
    return aes_key_unwrap(kek, match.encrypted_key)
