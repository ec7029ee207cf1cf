"""CMS SignedData (RFC 5652) and S/MIME signing (RFC 8551) for RSA, RSASSA-PSS, ECDSA, Ed25519.

One hand-written builder for every key type: cryptography's PKCS7SignatureBuilder cannot sign
with Ed25519, cannot produce an opaque application/pkcs7-mime entity and silently drops
certificates when called in the wrong order.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from typing import Literal, cast

import attrs
from asn1crypto import algos, cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from sealrelay.smime.algorithms import SIGNING_DIGESTS, encode_capabilities
from sealrelay.smime.ciphers import DECRYPTABLE_CAPABILITIES
from sealrelay.smime.errors import SigningError
from sealrelay.smime.mime import (
    attach_content,
    detach_content,
    multipart_signed,
    pkcs7_mime_entity,
    prepare_for_signing,
)


SignMode = Literal["clear", "opaque"]
RsaPadding = Literal["pkcs1v15", "pss"]
SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def _spki(public_key: object) -> bytes:
    return public_key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


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

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.key, SigningKey):
            raise SigningError(f"cannot sign with a {type(self.key).__name__} key")
        if self.digest not in SIGNING_DIGESTS:
            raise SigningError(
                f"unsupported digest {self.digest!r}; use one of {list(SIGNING_DIGESTS)}"
            )
        if self.rsa_padding not in ("pkcs1v15", "pss"):
            raise SigningError(f"unknown RSA padding {self.rsa_padding!r}")
        if _spki(self.key.public_key()) != _spki(self.certificate.public_key()):
            subject = self.certificate.subject.rfc4514_string()
            raise SigningError(f"the private key does not belong to the certificate {subject}")

    @property
    def effective_digest(self) -> str:
        return "sha512" if isinstance(self.key, ed25519.Ed25519PrivateKey) else self.digest

    def _signature_algorithm(self) -> algos.SignedDigestAlgorithm:
        digest = self.effective_digest
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            return algos.SignedDigestAlgorithm({"algorithm": "ed25519"})
        if isinstance(self.key, ec.EllipticCurvePrivateKey):
            return algos.SignedDigestAlgorithm({"algorithm": f"{digest}_ecdsa"})
        if self.rsa_padding == "pss":
            digest_algorithm = algos.DigestAlgorithm({"algorithm": digest})
            params = algos.RSASSAPSSParams(
                {
                    "hash_algorithm": digest_algorithm,
                    "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": digest_algorithm},
                    "salt_length": SIGNING_DIGESTS[digest].digest_size,
                }
            )
            return algos.SignedDigestAlgorithm({"algorithm": "rsassa_pss", "parameters": params})
        # rsaEncryption + digestAlgorithm is what every S/MIME implementation emits and accepts.
        return algos.SignedDigestAlgorithm({"algorithm": "rsassa_pkcs1v15"})

    def _sign(self, data: bytes) -> bytes:
        key = cast(SigningKey, self.key)  # checked in __attrs_post_init__
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign(data)
        digest = SIGNING_DIGESTS[self.effective_digest]()
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(data, ec.ECDSA(digest))
        if self.rsa_padding == "pss":
            # Salt = digest length: gpgsm 2.2 rejects (and crashes on) the maximum salt length.
            pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
            return key.sign(data, pss, digest)
        return key.sign(data, padding.PKCS1v15(), digest)


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


@attrs.frozen
class _Tlv:
    """A constructed DER element whose parts are joined only once, at the very end: the
    content of an opaque signature may be megabytes and should not be copied per level."""

    tag: int
    parts: tuple[_Tlv | bytes, ...]

    def length(self) -> int:
        return sum(len(p) if isinstance(p, bytes) else p.encoded_length() for p in self.parts)

    def encoded_length(self) -> int:
        length = self.length()
        return len(_header(self.tag, length)) + length

    def emit(self, out: list[bytes]) -> None:
        out.append(_header(self.tag, self.length()))
        for part in self.parts:
            if isinstance(part, bytes):
                out.append(part)
            else:
                part.emit(out)


def _time(moment: datetime.datetime) -> cms.Time:
    # RFC 5652 11.3: UTCTime for 1950-2049, GeneralizedTime otherwise.
    if 1950 <= moment.year < 2050:
        return cms.Time({"utc_time": moment})
    return cms.Time({"generalized_time": moment})


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
        _attribute(_ID_CONTENT_TYPE, _der(0x06, _ID_DATA)),
        _attribute(_ID_SIGNING_TIME, _time(moment.replace(microsecond=0)).dump()),
        _attribute(_ID_MESSAGE_DIGEST, _der(0x04, hasher.finalize())),
    ]
    if capabilities:
        attributes.append(
            _attribute(_ID_SMIME_CAPABILITIES, encode_capabilities(tuple(capabilities)))
        )
    # SignedAttributes as a SET (0x31) in DER order: exactly the bytes the signature covers.
    # (Built by hand: asn1crypto spends milliseconds copying nested values here.)
    signed_attrs = _der(0x31, b"".join(sorted(attributes)))
    signature = signer._sign(signed_attrs)

    signer_der = signer.certificate.public_bytes(serialization.Encoding.DER)
    signer_cert = asn1_x509.Certificate.load(signer_der)
    digest_algorithm = algos.DigestAlgorithm({"algorithm": digest_name}).dump()
    tbs = signer_cert["tbs_certificate"]
    # issuer and serial are copied byte for byte from the certificate, as the sid requires.
    issuer_and_serial = _der(0x30, tbs["issuer"].dump() + tbs["serial_number"].dump())
    signer_info = _der(
        0x30,
        b"".join(
            [
                _der(0x02, b"\x01"),  # version 1: issuerAndSerialNumber
                issuer_and_serial,
                digest_algorithm,
                b"\xa0" + signed_attrs[1:],  # [0] IMPLICIT SET OF Attribute
                signer._signature_algorithm().dump(),
                _der(0x04, signature),
            ]
        ),
    )
    certificates = [signer_der, *(c.public_bytes(serialization.Encoding.DER) for c in signer.chain)]
    # The outer layers are framed by hand: asn1crypto would re-encode every certificate and
    # copy the content several times, which dominated the cost of signing.
    encap: list[_Tlv | bytes] = [_der(0x06, _ID_DATA)]
    if not detached:
        encap.append(_Tlv(0xA0, (_Tlv(0x04, (content,)),)))
    signed = _Tlv(
        0x30,
        (
            _der(0x02, b"\x01"),  # version 1: issuerAndSerialNumber sid, id-data content
            _der(0x31, digest_algorithm),
            _Tlv(0x30, tuple(encap)),
            _der(0xA0, b"".join(sorted(set(certificates)))),  # DER orders a SET OF
            _der(0x31, signer_info),
        ),
    )
    out: list[bytes] = []
    _Tlv(0x30, (_der(0x06, _ID_SIGNED_DATA), _Tlv(0xA0, (signed,)))).emit(out)
    return b"".join(out)


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
    if mode not in ("clear", "opaque"):
        raise SigningError(f"unknown signing mode {mode!r}; use 'clear' or 'opaque'")
    prepared = prepare_for_signing(entity)
    der = signed_data(
        prepared,
        signer,
        detached=mode == "clear",
        capabilities=capabilities,
        signing_time=signing_time,
    )
    if mode == "clear":
        return multipart_signed(prepared, der, digest=signer.effective_digest)
    return pkcs7_mime_entity(der, "signed-data")


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
    signed = sign_entity(
        entity, signer, mode=mode, capabilities=capabilities, signing_time=signing_time
    )
    return attach_content(outer, signed)
