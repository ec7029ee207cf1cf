"""CMS SignedData (RFC 5652) and S/MIME signing (RFC 8551) for RSA, RSASSA-PSS, ECDSA, Ed25519.

One hand-written builder for every key type: cryptography's PKCS7SignatureBuilder cannot sign
with Ed25519, cannot produce an opaque application/pkcs7-mime entity and silently drops
certificates when called in the wrong order.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Iterable, Sequence
from typing import Literal, cast

import attrs
from asn1crypto import algos
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from sealrelay.smime.algorithms import SIGNING_DIGESTS, encode_capabilities
from sealrelay.smime.asn1 import issuer_and_serial
from sealrelay.smime.ciphers import DECRYPTABLE_CAPABILITIES
from sealrelay.smime.errors import SigningError
from sealrelay.smime.memo import cached_by_identity
from sealrelay.smime.mime import (
    attach_pieces,
    detach_content,
    multipart_signed_pieces,
    pkcs7_mime_pieces,
    prepare_canonical_for_signing,
    prepare_for_signing,
)


SignMode = Literal["clear", "opaque"]
RsaPadding = Literal["pkcs1v15", "pss"]


def _certificates(value: Iterable[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    return tuple(value)


@attrs.frozen
class Signer:
    """A signing identity: private key, its certificate and the intermediates to send along.

    The key is checked against the certificate up front: a mismatch would otherwise produce a
    signature nobody can verify. For Ed25519 the digest is always SHA-512 (RFC 8419 3.1).
    """

    key: PrivateKeyTypes = attrs.field(repr=False)
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = attrs.field(default=(), converter=_certificates)
    digest: str = "sha256"
    rsa_padding: RsaPadding = "pkcs1v15"
    # The key type, found once: isinstance checks against the key ABCs cost about a
    # microsecond each, and signing asked half a dozen of them.
    _scheme: Literal["rsa", "ecdsa", "ed25519"] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if isinstance(self.key, rsa.RSAPrivateKey):
            scheme: Literal["rsa", "ecdsa", "ed25519"] = "rsa"
        elif isinstance(self.key, ec.EllipticCurvePrivateKey):
            scheme = "ecdsa"
        elif isinstance(self.key, ed25519.Ed25519PrivateKey):
            scheme = "ed25519"
        else:
            raise SigningError(f"cannot sign with a {type(self.key).__name__} key")
        object.__setattr__(self, "_scheme", scheme)
        if self.digest not in SIGNING_DIGESTS:
            raise SigningError(
                f"unsupported digest {self.digest!r}; use one of {list(SIGNING_DIGESTS)}"
            )
        if self.rsa_padding not in ("pkcs1v15", "pss"):
            raise SigningError(f"unknown RSA padding {self.rsa_padding!r}")
        # Public key equality compares the key material (as the SubjectPublicKeyInfo would)
        # without serialising either key.
        if self.key.public_key() != self.certificate.public_key():
            subject = self.certificate.subject.rfc4514_string()
            raise SigningError(f"the private key does not belong to the certificate {subject}")

    @property
    def effective_digest(self) -> str:
        return "sha512" if self._scheme == "ed25519" else self.digest

    def _signature_algorithm(self) -> bytes:
        """The DER signatureAlgorithm of the SignerInfo."""
        if self._scheme == "rsa":
            return _signature_algorithm_der(self.rsa_padding, self.digest)
        return _signature_algorithm_der(self._scheme, self.effective_digest)

    def _sign(self, data: bytes) -> bytes:
        if self._scheme == "ed25519":
            return cast(ed25519.Ed25519PrivateKey, self.key).sign(data)
        digest = SIGNING_DIGESTS[self.digest]()
        if self._scheme == "ecdsa":
            return cast(ec.EllipticCurvePrivateKey, self.key).sign(data, ec.ECDSA(digest))
        key = cast(rsa.RSAPrivateKey, self.key)
        if self.rsa_padding == "pss":
            # Salt = digest length: gpgsm 2.2 rejects (and crashes on) the maximum salt length.
            pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
            return key.sign(data, pss, digest)
        return key.sign(data, padding.PKCS1v15(), digest)


# The DER of the few AlgorithmIdentifiers and certificate fields a signature needs is built
# once (by asn1crypto, which takes tens of microseconds per structure) and reused.


@functools.cache
def _signature_algorithm_der(scheme: str, digest: str) -> bytes:
    if scheme == "ed25519":
        return bytes(algos.SignedDigestAlgorithm({"algorithm": "ed25519"}).dump())
    if scheme == "ecdsa":
        return bytes(algos.SignedDigestAlgorithm({"algorithm": f"{digest}_ecdsa"}).dump())
    if scheme == "pss":
        digest_algorithm = algos.DigestAlgorithm({"algorithm": digest})
        params = algos.RSASSAPSSParams(
            {
                "hash_algorithm": digest_algorithm,
                "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": digest_algorithm},
                "salt_length": SIGNING_DIGESTS[digest].digest_size,
            }
        )
        algorithm = algos.SignedDigestAlgorithm({"algorithm": "rsassa_pss", "parameters": params})
        return bytes(algorithm.dump())
    # rsaEncryption + digestAlgorithm is what every S/MIME implementation emits and accepts.
    return bytes(algos.SignedDigestAlgorithm({"algorithm": "rsassa_pkcs1v15"}).dump())


@functools.cache
def _digest_algorithm_der(digest: str) -> bytes:
    return bytes(algos.DigestAlgorithm({"algorithm": digest}).dump())


@cached_by_identity(maxsize=256)
def _certificates_field(*certificates: x509.Certificate) -> bytes:
    """The [0] IMPLICIT CertificateSet of SignedData: signer and chain, in DER SET OF order."""
    encodings = {c.public_bytes(serialization.Encoding.DER) for c in certificates}
    return _der(0xA0, b"".join(sorted(encodings)))


_ID_DATA = bytes.fromhex("2a864886f70d010701")  # 1.2.840.113549.1.7.1
_ID_SIGNED_DATA = bytes.fromhex("2a864886f70d010702")  # 1.2.840.113549.1.7.2
_ID_CONTENT_TYPE = bytes.fromhex("2a864886f70d010903")  # 1.2.840.113549.1.9.3
_ID_MESSAGE_DIGEST = bytes.fromhex("2a864886f70d010904")  # 1.2.840.113549.1.9.4
_ID_SIGNING_TIME = bytes.fromhex("2a864886f70d010905")  # 1.2.840.113549.1.9.5
_ID_SMIME_CAPABILITIES = bytes.fromhex("2a864886f70d01090f")  # 1.2.840.113549.1.9.15


def _header(tag: int, length: int) -> bytes:
    if length < 0x80:
        return bytes((tag, length))
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size


def _der(tag: int, content: bytes) -> bytes:
    """One DER TLV with a single-byte tag."""
    return _header(tag, len(content)) + content


def _attribute(oid: bytes, value: bytes) -> bytes:
    """Attribute ::= SEQUENCE { attrType OID, attrValues SET OF value } with one value."""
    return _der(0x30, _der(0x06, oid) + _der(0x31, value))


def _framed(tag: int, parts: list[bytes]) -> list[bytes]:
    """`parts` preceded by the header of the element they make up: the parts are joined only
    once, at the very end, since an opaque signature's content may be megabytes."""
    return [_header(tag, sum(map(len, parts))), *parts]


_ID_DATA_DER = _der(0x06, _ID_DATA)
_ID_SIGNED_DATA_DER = _der(0x06, _ID_SIGNED_DATA)
_CONTENT_TYPE_DATA = _attribute(_ID_CONTENT_TYPE, _ID_DATA_DER)


@functools.lru_cache(maxsize=64)
def _capabilities_attribute(capabilities: tuple[str, ...]) -> bytes:
    return _attribute(_ID_SMIME_CAPABILITIES, encode_capabilities(capabilities))


def _time(moment: datetime.datetime) -> bytes:
    """The DER Time of a moment in UTC, whole seconds: RFC 5652 11.3 wants UTCTime for
    1950-2049 and GeneralizedTime otherwise, both in the "Z" form DER requires."""
    if moment.tzinfo is None:
        raise ValueError("the signing time must be timezone aware")
    moment = moment.astimezone(datetime.UTC)
    if 1950 <= moment.year < 2050:
        return _der(0x17, moment.strftime("%y%m%d%H%M%SZ").encode("ascii"))
    return _der(0x18, f"{moment.year:04d}{moment.strftime('%m%d%H%M%S')}Z".encode("ascii"))


def signed_data(
    content: bytes,
    signer: Signer,
    *,
    detached: bool,
    capabilities: Sequence[str] = DECRYPTABLE_CAPABILITIES,
    signing_time: datetime.datetime | None = None,
) -> bytes:
    """A DER ContentInfo holding SignedData over `content` (id-data), one signer, signed attrs.

    `capabilities` are announced in SMIMECapabilities, strongest first; `detached` leaves the
    content out (for multipart/signed).
    """
    digest_name = signer.effective_digest
    hasher = hashes.Hash(SIGNING_DIGESTS[digest_name]())
    hasher.update(content)
    moment = signing_time or datetime.datetime.now(datetime.UTC)
    attributes = [
        _CONTENT_TYPE_DATA,
        _attribute(_ID_SIGNING_TIME, _time(moment)),
        _attribute(_ID_MESSAGE_DIGEST, _der(0x04, hasher.finalize())),
    ]
    if capabilities:
        attributes.append(_capabilities_attribute(tuple(capabilities)))
    # SignedAttributes as a SET (0x31) in DER order: exactly the bytes the signature covers.
    # (Built by hand: asn1crypto spends milliseconds copying nested values here.)
    signed_attrs = _der(0x31, b"".join(sorted(attributes)))
    signature = signer._sign(signed_attrs)

    digest_algorithm = _digest_algorithm_der(digest_name)
    signer_info = _der(
        0x30,
        b"".join(
            [
                b"\x02\x01\x01",  # version 1: issuerAndSerialNumber
                issuer_and_serial(signer.certificate),
                digest_algorithm,
                b"\xa0" + signed_attrs[1:],  # [0] IMPLICIT SET OF Attribute
                signer._signature_algorithm(),
                _der(0x04, signature),
            ]
        ),
    )
    # The outer layers are framed by hand: asn1crypto would re-encode every certificate and
    # copy the content several times, which dominated the cost of signing.
    encap = [_ID_DATA_DER]
    if not detached:
        encap = [*encap, *_framed(0xA0, _framed(0x04, [content]))]
    signed = _framed(
        0x30,
        [
            b"\x02\x01\x01",  # version 1: issuerAndSerialNumber sid, id-data content
            _der(0x31, digest_algorithm),
            *_framed(0x30, encap),
            _certificates_field(signer.certificate, *signer.chain),
            _der(0x31, signer_info),
        ],
    )
    return b"".join(_framed(0x30, [_ID_SIGNED_DATA_DER, *_framed(0xA0, signed)]))


def sign_entity(
    entity: bytes,
    signer: Signer,
    *,
    mode: SignMode = "clear",
    capabilities: Sequence[str] = DECRYPTABLE_CAPABILITIES,
    signing_time: datetime.datetime | None = None,
) -> bytes:
    """A signed MIME entity wrapping `entity`: multipart/signed ("clear") or pkcs7-mime ("opaque").

    The entity is first made 7-bit safe and CRLF (RFC 8551 3.1); the result is CRLF throughout.
    """
    return b"".join(
        _signed_pieces(
            entity,
            signer,
            mode=mode,
            capabilities=capabilities,
            signing_time=signing_time,
            canonical=False,
        )
    )


def _signed_pieces(
    entity: bytes,
    signer: Signer,
    *,
    mode: SignMode,
    capabilities: Sequence[str],
    signing_time: datetime.datetime | None,
    canonical: bool,
) -> list[bytes]:
    """`sign_entity` as pieces to join; `canonical` says `entity` is CRLF already."""
    if mode not in ("clear", "opaque"):
        raise SigningError(f"unknown signing mode {mode!r}; use 'clear' or 'opaque'")
    prepared = prepare_canonical_for_signing(entity) if canonical else prepare_for_signing(entity)
    der = signed_data(
        prepared,
        signer,
        detached=mode == "clear",
        capabilities=capabilities,
        signing_time=signing_time,
    )
    if mode == "clear":
        return multipart_signed_pieces(prepared, der, digest=signer.effective_digest)
    return pkcs7_mime_pieces(der, "signed-data")


def sign_message(
    message: bytes,
    signer: Signer,
    *,
    mode: SignMode = "clear",
    capabilities: Sequence[str] = DECRYPTABLE_CAPABILITIES,
    signing_time: datetime.datetime | None = None,
) -> bytes:
    """Signs an RFC 5322 message: its content (with the Content-* fields) becomes the signed
    entity, and the other header fields (From, To, Subject, ...) stay outside, unchanged."""
    outer, entity = detach_content(message)
    pieces = _signed_pieces(
        entity,
        signer,
        mode=mode,
        capabilities=capabilities,
        signing_time=signing_time,
        canonical=True,
    )
    # An opaque signature carries the entity base64-encoded: let the plain copy go before the
    # message is joined (a clear signature's pieces still hold it).
    del entity
    return attach_pieces(outer, pieces)
