"""Find which RecipientInfo is ours and recover the content-encryption key from it.

Matching is by recipient identifier only (issuerAndSerialNumber or subjectKeyIdentifier),
before any private-key operation. Once a RecipientInfo matched, key recovery never fails
visibly: a bad RSA block, OAEP error, invalid ECDH point or failed key unwrap all yield a
random key of the right size (RSA implicit rejection), so that every failure surfaces as the
same content decryption error later.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple, cast

import attrs
from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

from sealrelay.smime.asn1 import (
    CMS3DES_WRAP,
    ECDH_KDF_HASHES,
    KEY_WRAP_SIZES,
    RSA_ENCRYPTION,
    RSAES_OAEP,
    KeyWrapAlgorithm,
    cached_by_encoding,
    names_equal,
)
from sealrelay.smime.ber import (
    CONTEXT,
    TAG_INTEGER,
    TAG_OCTET_STRING,
    TAG_SEQUENCE,
    UNIVERSAL,
    Element,
    Fields,
    Reader,
    encode_header,
)
from sealrelay.smime.errors import MalformedMessage, NoMatchingKey, UnsupportedAlgorithm
from sealrelay.smime.keyagree import derive_kek
from sealrelay.smime.keywrap import des3_key_unwrap
from sealrelay.smime.memo import cached_by_identity


#: One of our keys with its certificate: what a RecipientInfo can point at.
KeyPair = tuple[x509.Certificate, PrivateKeyTypes]

_TAG_GENERALIZED_TIME = 24
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
    #: The kind of RecipientInfo the key opens: "ktri" (RSA) or "kari" (EC).
    kind: str
    #: DER IssuerAndSerialNumber made of the certificate's own encodings: a RecipientInfo
    #: naming us with exactly these bytes (as every sender copying our certificate does) is
    #: matched without parsing its identifier.
    issuer_and_serial: bytes
    issuer: bytes  # DER Name, compared with `names_equal`
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
    #: The OAEP parameters of an "rsa-oaep" key transport.
    oaep: padding.OAEP | None = attrs.field(default=None, repr=False)
    #: The KeyAgreeRecipientInfo (asn1crypto object) of an "ecdh" key agreement.
    kari: Any = attrs.field(default=None, repr=False)


class _Parsed(NamedTuple):
    """A ktri or kari read far enough to match it."""

    #: (rid, encryptedKey) of each recipient it is for.
    entries: list[tuple[Element, Element]]
    #: The keyEncryptionAlgorithm of a ktri: read only once the ktri matched.
    algorithm: Element | None = None


def decryption_candidates(keys: Sequence[KeyPair]) -> list[Candidate]:
    """The RSA and EC pairs among `keys`, in the same order.

    Other key types cannot receive encrypted mail and are left out; a key that does not belong
    to its certificate is a configuration error (ValueError).
    """
    return [c for c in (_candidate(cert, key) for cert, key in keys) if c is not None]


def find_recipient(reader: Reader, infos: Element, candidates: Sequence[Candidate]) -> Match:
    """The first candidate (in the caller's order of preference) that a RecipientInfo names.

    `infos` is the RecipientInfos SET in `reader`. Raises NoMatchingKey when no RecipientInfo
    names any of our candidates, UnsupportedAlgorithm when the only ones that do use a key
    management scheme sealrelay lacks, MalformedMessage for a broken RecipientInfo met on the
    way. asn1crypto errors from the parameters of a matching one propagate for the caller to
    map; everything key recovery reads is parsed here, so that recovery itself meets no error.

    The RecipientInfos are read with the bounded BER reader, each only when the search
    reaches it with a key of its kind, as asn1crypto's lazy parsing did: a kind our keys cannot
    open, or one addressed to someone else after ours, is never looked into.
    """
    elements = [(_kind(info), info) for info in reader.children(infos)]
    parsed: dict[int, _Parsed] = {}
    unsupported: list[str] = []
    for candidate in candidates:
        for index, (kind, element) in enumerate(elements):
            if kind != candidate.kind:
                continue
            if index not in parsed:
                parsed[index] = _parse_info(reader, element)
            info = parsed[index]
            for rid, encrypted_key in info.entries:
                if not _names(reader, rid, candidate, kind):
                    continue
                match = _match(reader, element, info, candidate, encrypted_key)
                if isinstance(match, Match):
                    return match
                unsupported.append(match)
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
    # Each isinstance with one of cryptography's key ABCs takes a third of a microsecond: the
    # kind is decided here once.
    if isinstance(key, rsa.RSAPrivateKey):
        kind = "ktri"
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        kind = "kari"
    else:
        return None  # signing-only key types (Ed25519, ...) never receive encrypted mail
    if key.public_key() != cert.public_key():
        raise ValueError(
            f"the private key given for {cert.subject.rfc4514_string()} does not belong to"
            " its certificate"
        )
    return Candidate(cert, key, kind, *_identifiers(cert))


@cached_by_identity(maxsize=256)
def _identifiers(cert: x509.Certificate) -> tuple[bytes, bytes, int, bytes]:
    """IssuerAndSerialNumber, issuer, serial number and subject key identifier of one of our
    certificates: parsed once per certificate rather than once per message (public data only,
    no key)."""
    tbs = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    tbs = tbs["tbs_certificate"]
    issuer, serial = bytes(tbs["issuer"].dump()), bytes(tbs["serial_number"].dump())
    try:
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        # What OpenSSL and RFC 5280 §4.2.1.2 method 1 would put there.
        ski = x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
    issuer_and_serial = encode_header(0x30, len(issuer) + len(serial)) + issuer + serial
    return issuer_and_serial, issuer, int(tbs["serial_number"].native), ski


def _kind(info: Element) -> str:
    """ "ktri", "kari" or "other" (kekri, pwri, ori: no key of ours can open them)."""
    if info.is_(UNIVERSAL, TAG_SEQUENCE):
        return "ktri"
    if info.tag_class == CONTEXT and info.constructed and info.tag in (1, 2, 3, 4):
        return "kari" if info.tag == 1 else "other"
    raise MalformedMessage("unknown kind of RecipientInfo")


def _parse_info(reader: Reader, info: Element) -> _Parsed:
    if info.tag_class == UNIVERSAL:  # ktri
        fields = Fields(reader, info, 4)
        fields.require(UNIVERSAL, TAG_INTEGER)  # version: implied by the rid
        rid = fields.take(UNIVERSAL, TAG_SEQUENCE, optional=True) or fields.require(CONTEXT, 0)
        algorithm = fields.require(UNIVERSAL, TAG_SEQUENCE)
        encrypted_key = fields.require(UNIVERSAL, TAG_OCTET_STRING)
        fields.end()
        return _Parsed([(rid, encrypted_key)], algorithm)
    # kari: [1] IMPLICIT KeyAgreeRecipientInfo
    fields = Fields(reader, info, 5)
    fields.require(UNIVERSAL, TAG_INTEGER)
    fields.require(CONTEXT, 0)  # originator
    fields.take(CONTEXT, 1, optional=True)  # ukm
    fields.require(UNIVERSAL, TAG_SEQUENCE)  # keyEncryptionAlgorithm
    keys = fields.require(UNIVERSAL, TAG_SEQUENCE)
    fields.end()
    entries = []
    for entry in reader.children(keys):
        if not entry.is_(UNIVERSAL, TAG_SEQUENCE):
            raise MalformedMessage("a RecipientEncryptedKey is not a SEQUENCE")
        pair = Fields(reader, entry, 2)
        rid = pair.take(UNIVERSAL, TAG_SEQUENCE, optional=True) or pair.require(CONTEXT, 0)
        entries.append((rid, pair.require(UNIVERSAL, TAG_OCTET_STRING)))
        pair.end()
    return _Parsed(entries)


def _names(reader: Reader, rid: Element, candidate: Candidate, kind: str) -> bool:
    """Whether a rid (KeyTransRecipientInfo's or KeyAgreeRecipientIdentifier) names us."""
    if rid.tag_class == UNIVERSAL:  # issuerAndSerialNumber
        if reader.bytes_of(rid) == candidate.issuer_and_serial:
            return True
        fields = Fields(reader, rid, 2)
        issuer = fields.require(UNIVERSAL, TAG_SEQUENCE)
        serial = fields.require(UNIVERSAL, TAG_INTEGER)
        fields.end()
        if serial.constructed:
            raise MalformedMessage("constructed INTEGER in a recipient identifier")
        number = int.from_bytes(reader.buf[serial.content_start : serial.content_end], signed=True)
        # Names compare as RFC 5280 7.1 says (case and string types normalised).
        return number == candidate.serial and names_equal(reader.definite(issuer), candidate.issuer)
    if kind == "kari":  # [0] IMPLICIT RecipientKeyIdentifier
        fields = Fields(reader, rid, 3)
        key_id = fields.require(UNIVERSAL, TAG_OCTET_STRING)
        fields.take(UNIVERSAL, _TAG_GENERALIZED_TIME, optional=True)  # date
        fields.take(UNIVERSAL, TAG_SEQUENCE, optional=True)  # other
        fields.end()
    else:  # [0] IMPLICIT SubjectKeyIdentifier
        key_id = rid
    return reader.octets(key_id) == candidate.subject_key_identifier


def _match(
    reader: Reader, element: Element, info: _Parsed, candidate: Candidate, encrypted_key: Element
) -> Match | str:
    """The Match for a RecipientInfo that names `candidate`, or why sealrelay cannot use it."""
    key = reader.octets(encrypted_key)
    if info.algorithm is None:  # kari: rare, and its ECDH dwarfs asn1crypto's parsing
        kari = cms.RecipientInfo.load(reader.definite(element)).chosen
        problem = _unsupported_key_agreement(kari, candidate)
        if problem is not None:
            return problem
        return Match(candidate.certificate, candidate.key, "ecdh", key, kari=kari)
    problem, oaep = _key_transport(reader.definite(info.algorithm))
    if problem is not None:
        return problem
    scheme = "rsa-pkcs1v15" if oaep is None else "rsa-oaep"
    return Match(candidate.certificate, candidate.key, scheme, key, oaep=oaep)


@cached_by_encoding
def _key_transport(encoding: bytes) -> tuple[str | None, padding.OAEP | None]:
    """(why sealrelay cannot use it or None, the OAEP padding for RSA-OAEP) of a key transport
    AlgorithmIdentifier: the same few encodings recur in every message."""
    algorithm = cms.KeyEncryptionAlgorithm.load(encoding)
    oid = algorithm["algorithm"].dotted
    if oid == RSA_ENCRYPTION:
        return None, None
    if oid != RSAES_OAEP:
        return f"key transport algorithm {oid}", None
    params = algorithm["parameters"]
    problem = _unsupported_oaep(params)
    if problem is not None:
        return problem, None
    oaep = padding.OAEP(
        mgf=padding.MGF1(
            _OAEP_HASHES[params["mask_gen_algorithm"]["parameters"]["algorithm"].native]()
        ),
        algorithm=_OAEP_HASHES[params["hash_algorithm"]["algorithm"].native](),
        label=params["p_source_algorithm"]["parameters"].native or None,
    )
    return None, oaep


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
    if wrap not in KEY_WRAP_SIZES:
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
        # With OpenSSL >= 3.2 (bundled with cryptography) PKCS#1 v1.5 already applies implicit
        # rejection: a bad block decrypts to a deterministic pseudo-random message.
        return key.decrypt(match.encrypted_key, match.oaep or padding.PKCS1v15())
    kari = match.kari
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
    if wrap["algorithm"].dotted == CMS3DES_WRAP:
        return des3_key_unwrap(kek, match.encrypted_key)
    return aes_key_unwrap(kek, match.encrypted_key)
