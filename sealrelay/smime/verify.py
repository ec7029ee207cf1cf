"""Verification of S/MIME signatures: clear (multipart/signed) and opaque (pkcs7-mime).

Three independent checks, each "ok" or a reason code (DESIGN.md section 4):
- crypto: the signature value over the signed attributes *as received* and the messageDigest
  of the content (content-altered, bad-signature, weak-algorithm, ...);
- chain: a path to the caller's trust anchors, validity, revocation, EKU (`chain.py`);
- address: the expected sender address in the signer certificate.

Malformed input of any kind raises `MalformedMessage`; a well-formed but wrong signature is a
result with status "invalid", never an exception.
"""

from __future__ import annotations

import datetime
import email.utils
import functools
import hashlib
import struct
import threading
from collections.abc import Sequence
from typing import Literal, NamedTuple, cast

import attrs
from asn1crypto import algos, cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from sealrelay.core.certificate import certificate_addresses
from sealrelay.smime.algorithms import VERIFY_DIGESTS, WEAK_DIGESTS, decode_capabilities
from sealrelay.smime.asn1 import cached_by_encoding, names_equal, oid_dotted
from sealrelay.smime.ber import (
    CONTEXT,
    TAG_INTEGER,
    TAG_OCTET_STRING,
    TAG_OID,
    TAG_SEQUENCE,
    TAG_SET,
    UNIVERSAL,
    Element,
    Fields,
    Reader,
)
from sealrelay.smime.chain import Revocation, validate_signer
from sealrelay.smime.errors import MalformedMessage
from sealrelay.smime.memo import MAX_CACHED_CERTIFICATE, cached_by_identity, small_certificates
from sealrelay.smime.mime import ClearSigned, get_header, signed_parts, split_entity


#: How far a signing time may lie in the future before the signature is refused.
CLOCK_SKEW = datetime.timedelta(minutes=5)
MIN_RSA_BITS = 2048
MIN_EC_BITS = 256

_RSA_PKCS1 = "1.2.840.113549.1.1.1"
_RSA_PSS = "1.2.840.113549.1.1.10"
_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
_ED25519 = "1.3.101.112"
# Signature algorithm OID -> (scheme, digest fixed by the OID or None: from digestAlgorithm).
_SIGNATURE_ALGORITHMS: dict[str, tuple[str, str | None]] = {
    _RSA_PKCS1: ("rsa", None),
    "1.2.840.113549.1.1.4": ("rsa", "md5"),
    "1.2.840.113549.1.1.5": ("rsa", "sha1"),
    "1.2.840.113549.1.1.14": ("rsa", "sha224"),
    "1.2.840.113549.1.1.11": ("rsa", "sha256"),
    "1.2.840.113549.1.1.12": ("rsa", "sha384"),
    "1.2.840.113549.1.1.13": ("rsa", "sha512"),
    _RSA_PSS: ("pss", None),
    _EC_PUBLIC_KEY: ("ecdsa", None),
    "1.2.840.10045.4.1": ("ecdsa", "sha1"),
    "1.2.840.10045.4.3.1": ("ecdsa", "sha224"),
    "1.2.840.10045.4.3.2": ("ecdsa", "sha256"),
    "1.2.840.10045.4.3.3": ("ecdsa", "sha384"),
    "1.2.840.10045.4.3.4": ("ecdsa", "sha512"),
    _ED25519: ("ed25519", None),
}

Status = Literal["valid", "invalid"]


@attrs.frozen
class VerificationResult:
    """The outcome for one signed entity; `reason` is the first of crypto, chain, address
    that is not "ok" (address "not-checked" does not fail)."""

    status: Status
    reason: str | None
    crypto: str
    chain: str
    address: str
    revocation: Revocation
    signer: str | None  # the certificate's first e-mail address, else its subject
    signer_certificate: x509.Certificate | None
    certificates: tuple[x509.Certificate, ...]  # every certificate the message carried
    capabilities: tuple[str, ...]  # the signer's SMIMECapabilities, as sealrelay cipher names
    signing_time: datetime.datetime | None
    mode: Literal["clear", "opaque"]
    digest: str | None
    detail: str | None  # a sentence explaining `reason`, for logs and the console
    content: bytes = attrs.field(repr=False)  # the signed entity (opaque: the encapsulated one)


# --- parsing -------------------------------------------------------------------------------


class _SignerInfo(NamedTuple):
    """(A NamedTuple: a sender's next signature reuses the parse of an earlier one with the
    four fields that differ in every message replaced, and attrs.evolve took longer than the
    rest of that reuse.)"""

    signature: bytes
    signed_attrs: bytes | None  # re-tagged as SET: the bytes the signature covers
    message_digest: bytes | None
    signing_time: datetime.datetime | None
    sid_issuer: bytes | None  # DER Name, compared with `names_equal`
    sid_serial: int | None
    sid_key_id: bytes | None
    digest: str  # asn1crypto name or dotted OID
    signature_oid: str
    pss_params: algos.RSASSAPSSParams | None
    content_type: str | None
    capabilities: tuple[str, ...]
    #: The certificate among those the message carries that the sid names.
    carried_certificate: x509.Certificate | None


class _SignedData(NamedTuple):
    econtent: bytes | None
    certificates: tuple[x509.Certificate, ...]  # as carried, broken ones left out
    signer_infos: tuple[_SignerInfo, ...]


# A SignerInfo is read field by field with the bounded BER reader: asn1crypto's lazy parsing of
# it cost more than everything else in a verification. The small pieces asn1crypto still parses
# (algorithm identifiers, the sid, OIDs, SMIMECapabilities) are the same in every message of a
# sender, so they are cached by their encoding.


@cached_by_encoding
def _issuer_and_serial(encoding: bytes) -> tuple[bytes, int]:
    sid = cms.IssuerAndSerialNumber.load(encoding)
    issuer = sid["issuer"]
    issuer.native  # noqa: B018 -- parse now so that a bad name fails here
    return bytes(issuer.dump()), int(sid["serial_number"].native)


@cached_by_encoding
def _digest_name(encoding: bytes) -> str:
    digest = algos.DigestAlgorithm.load(encoding)["algorithm"]
    return str(digest.native if digest.native in VERIFY_DIGESTS else digest.dotted)


@cached_by_encoding
def _signature_algorithm(encoding: bytes) -> tuple[str, algos.RSASSAPSSParams | None]:
    algorithm = algos.SignedDigestAlgorithm.load(encoding)
    oid = str(algorithm["algorithm"].dotted)
    if oid != _RSA_PSS:
        return oid, None
    pss_params = algorithm["parameters"]
    pss_params.native  # noqa: B018 -- parse now so that bad parameters fail here
    return oid, pss_params


@cached_by_encoding
def _decoded_capabilities(encoding: bytes) -> tuple[str, ...]:
    # Only a hint for choosing a cipher later: a garbled one is ignored, not fatal.
    try:
        return decode_capabilities(cms.SMIMECapabilites.load(encoding))
    except (ValueError, TypeError, KeyError):
        return ()


def _single(values: list[Element], what: str) -> Element:
    if len(values) != 1:
        raise MalformedMessage(f"signed attribute {what} must occur once with one value")
    return values[0]


def _attribute_values(reader: Reader, signed_attrs: Element) -> dict[str, list[Element]]:
    """The values of each signed attribute, by dotted attribute type."""
    values: dict[str, list[Element]] = {}
    for attribute in reader.children(signed_attrs):
        if not attribute.is_(UNIVERSAL, TAG_SEQUENCE):
            raise MalformedMessage("a signed attribute is not a SEQUENCE")
        # SEQUENCE { type OID, values SET }, read without a Fields object: this runs for
        # every attribute of every signature.
        end = attribute.content_end
        oid = reader.element(attribute.content_start, end, 1)
        value_set = reader.element(oid.end, end, 1) if oid.end < end else oid
        if not (oid.is_(UNIVERSAL, TAG_OID) and value_set.is_(UNIVERSAL, TAG_SET)):
            raise MalformedMessage("a signed attribute is not a type and a SET of values")
        if value_set.end != end:
            raise MalformedMessage("unexpected field at the end of a signed attribute")
        kind = oid_dotted(reader.bytes_of(oid))
        if kind in values:
            raise MalformedMessage(f"signed attribute {kind} occurs twice")
        values[kind] = list(reader.children(value_set))
    return values


# messageDigest and signingTime differ in every message, so caching cannot spare their
# parsing; asn1crypto's took a tenth of a verification. Their DER forms (a short primitive
# OCTET STRING, a UTCTime YYMMDDHHMMSSZ) are read directly, anything else by asn1crypto.


def _octets(encoding: bytes) -> bytes:
    if len(encoding) >= 2 and encoding[0] == 0x04 and encoding[1] == len(encoding) - 2 < 0x80:
        return encoding[2:]
    return bytes(core.OctetString.load(encoding).native)


#: The six two-digit numbers of a UTCTime YYMMDDHHMMSS, cut in one call.
_UTC_TIME_FIELDS = struct.Struct("2s2s2s2s2s2s")


def _time(encoding: bytes) -> datetime.datetime:
    digits = encoding[2:14]
    if encoding[:2] == b"\x17\x0d" and encoding[14:] == b"Z" and digits.isdigit():
        year, month, day, hour, minute, second = map(int, _UTC_TIME_FIELDS.unpack(digits))
        # RFC 5280 4.1.2.5.1: two-digit years from 50 are 19xx, below 50 are 20xx.
        year += 1900 if year >= 50 else 2000
        return datetime.datetime(year, month, day, hour, minute, second, tzinfo=datetime.UTC)
    return cast(datetime.datetime, cms.Time.load(encoding).native)


class _Slots(NamedTuple):
    """Where the values of a SignerInfo that differ in every message lie in the encoding."""

    signed_attrs: Element | None
    message_digest: Element | None
    signing_time: Element | None
    signature: Element


def _parse_signer_info(
    reader: Reader, signer_info: Element, certificates: Sequence[_Carried]
) -> tuple[_SignerInfo, _Slots]:
    """RFC 5652 5.3 SignerInfo (DER or BER), with the one of `certificates` it names."""
    if not signer_info.is_(UNIVERSAL, TAG_SEQUENCE):
        raise MalformedMessage("a SignerInfo is not a SEQUENCE")
    fields = Fields(reader, signer_info, 7)
    fields.require(UNIVERSAL, TAG_INTEGER)  # version: implied by the sid
    issuer = serial = key_id = None
    sid = fields.take(UNIVERSAL, TAG_SEQUENCE, optional=True)
    if sid is not None:
        issuer, serial = _issuer_and_serial(reader.bytes_of(sid))
    else:  # [0] IMPLICIT SubjectKeyIdentifier
        key_id = reader.octets(fields.require(CONTEXT, 0))
    digest = _digest_name(reader.bytes_of(fields.require(UNIVERSAL, TAG_SEQUENCE)))
    signed_attrs = fields.take(CONTEXT, 0, optional=True)
    signature_oid, pss_params = _signature_algorithm(
        reader.bytes_of(fields.require(UNIVERSAL, TAG_SEQUENCE))
    )
    signature_element = fields.require(UNIVERSAL, TAG_OCTET_STRING)
    signature = reader.octets(signature_element)
    fields.take(CONTEXT, 1, optional=True)  # unsignedAttrs
    fields.end()
    raw_attrs = content_type = message_digest = signing_time = None
    digest_element = time_element = None
    capabilities: tuple[str, ...] = ()
    if signed_attrs is not None:
        if not signed_attrs.constructed:
            raise MalformedMessage("signed attributes are not a SET")
        # The signature covers the SET OF encoding of the received bytes (RFC 5652 5.4).
        raw_attrs = b"\x31" + reader.bytes_of(signed_attrs)[1:]
        values = _attribute_values(reader, signed_attrs)
        if "1.2.840.113549.1.9.3" in values:
            content_type = oid_dotted(
                reader.bytes_of(_single(values["1.2.840.113549.1.9.3"], "contentType"))
            )
        if "1.2.840.113549.1.9.4" in values:
            digest_element = _single(values["1.2.840.113549.1.9.4"], "messageDigest")
            message_digest = _octets(reader.bytes_of(digest_element))
        if "1.2.840.113549.1.9.5" in values:
            time_element = _single(values["1.2.840.113549.1.9.5"], "signingTime")
            signing_time = _time(reader.bytes_of(time_element))
        capability_values = values.get("1.2.840.113549.1.9.15", [])
        if len(capability_values) == 1:
            capabilities = _decoded_capabilities(reader.bytes_of(capability_values[0]))
    signer = _SignerInfo(
        signature=signature,
        signed_attrs=raw_attrs,
        message_digest=message_digest,
        signing_time=signing_time,
        sid_issuer=issuer,
        sid_serial=serial,
        sid_key_id=key_id,
        digest=digest,
        signature_oid=signature_oid,
        pss_params=pss_params,
        content_type=content_type,
        capabilities=capabilities,
        carried_certificate=None,
    )
    signer = signer._replace(carried_certificate=_find_signer(signer, certificates))
    return signer, _Slots(signed_attrs, digest_element, time_element, signature_element)


#: A certificate with the DER of its issuer Name, as received (for matching a sid).
_Carried = tuple[bytes, x509.Certificate]


def _load_certificate(der: bytes) -> _Carried | None:
    """The certificate, or None if it is broken.

    Cached by encoding: senders attach the same few certificates to every message, and the
    same certificate object lets the chain validation reuse its signature checks.
    """
    if len(der) > MAX_CACHED_CERTIFICATE:
        return _parse_certificate(der)
    return _cached_certificate(der)


#: cryptography's parse errors that are no ValueError.
_CERTIFICATE_ERRORS = (
    x509.DuplicateExtension,
    x509.InvalidVersion,
    x509.UnsupportedGeneralNameType,
)


def _parse_certificate(der: bytes) -> _Carried | None:
    # cryptography parses fields lazily, so every field used later is touched here rather
    # than failing in the middle of path building.
    try:
        tbs = asn1_x509.Certificate.load(der)["tbs_certificate"]
        if tbs["serial_number"].native <= 0:
            return None  # forbidden by RFC 5280; cryptography warns now and will refuse later
        issuer = bytes(tbs["issuer"].dump())
        cert = x509.load_der_x509_certificate(der)
        for field in ("subject", "issuer", "extensions", "not_valid_before_utc"):
            getattr(cert, field)
    except (ValueError, TypeError, *_CERTIFICATE_ERRORS):
        return None
    return issuer, cert


_cached_certificate = functools.lru_cache(maxsize=1024)(_parse_certificate)


def _parse_certificates(reader: Reader, certificate_set: Element) -> tuple[_Carried, ...]:
    certificates = []
    for choice in reader.children(certificate_set):
        if choice.is_(UNIVERSAL, TAG_SEQUENCE):
            loaded = _load_certificate(reader.bytes_of(choice))
            if loaded is not None:
                certificates.append(loaded)
        elif not (choice.tag_class == CONTEXT and choice.tag <= 3):
            raise MalformedMessage("unknown kind of certificate in SignedData")
        # [0]-[3]: extended and attribute certificates play no part in S/MIME
    return tuple(certificates)


def _parse_signed_data(der: bytes) -> _SignedData:
    """Eagerly parses everything verification needs (DER or BER), inside the one place that
    turns parse failures into MalformedMessage; an encoding shaped like an earlier one reuses
    its parse (see "reusing the parse" below)."""
    try:
        template = _template_for(der)
        if template is not None:
            return _refill(template, der)
        signed, slots = _read_signed_data(der)
    except MalformedMessage:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError) as exc:
        raise MalformedMessage(f"malformed CMS SignedData: {exc}") from None
    except RecursionError:
        raise MalformedMessage("malformed CMS SignedData: nested too deeply") from None
    _remember(der, signed, slots)
    return signed


def _read_signed_data(der: bytes) -> tuple[_SignedData, tuple[_Slots, ...]]:
    """The SignedData with where each SignerInfo's per-message values lie. The layers down to
    the SignerInfos are read with the bounded BER reader: asn1crypto's lazy parsing of them
    cost more than the RSA verification."""
    # As in decryption: ample for real CMS, tight for a flood of tiny elements.
    reader = Reader(memoryview(der).cast("B"), max_reads=100_000 + len(der) // 64)
    top = reader.element(0, len(der))
    if top.end != len(der) or not top.is_(UNIVERSAL, TAG_SEQUENCE):
        raise MalformedMessage("not a CMS ContentInfo")
    content_info = Fields(reader, top, 2)
    content_type = oid_dotted(reader.bytes_of(content_info.require(UNIVERSAL, TAG_OID)))
    if content_type != "1.2.840.113549.1.7.2":
        name = cms.ContentType.map(content_type)
        raise MalformedMessage(f"CMS content is {name}, not signed-data")
    explicit = Fields(reader, content_info.require(CONTEXT, 0), 1)
    content_info.end()
    body = Fields(reader, explicit.require(UNIVERSAL, TAG_SEQUENCE), 6)
    explicit.end()
    body.require(UNIVERSAL, TAG_INTEGER)  # version: implied by the fields that follow
    body.require(UNIVERSAL, TAG_SET)  # digestAlgorithms: each SignerInfo names its own
    encap = Fields(reader, body.require(UNIVERSAL, TAG_SEQUENCE), 2)
    certificate_set = body.take(CONTEXT, 0, optional=True)
    body.take(CONTEXT, 1, optional=True)  # crls: revocation comes from the caller
    signer_info_set = body.require(UNIVERSAL, TAG_SET)
    body.end()

    econtent_type = oid_dotted(reader.bytes_of(encap.require(UNIVERSAL, TAG_OID)))
    if econtent_type != "1.2.840.113549.1.7.1":
        name = cms.ContentType.map(econtent_type)
        raise MalformedMessage(f"signed content is {name}, not data")
    econtent = None
    wrapper = encap.take(CONTEXT, 0, optional=True)
    encap.end()
    if wrapper is not None:
        octets = Fields(reader, wrapper, 1)
        econtent = reader.octets(octets.require(UNIVERSAL, TAG_OCTET_STRING))
        octets.end()
    certificates = (
        _parse_certificates(reader, certificate_set) if certificate_set is not None else ()
    )
    signers = [
        _parse_signer_info(reader, signer_info, certificates)
        for signer_info in reader.children(signer_info_set)
    ]
    if not signers:
        raise MalformedMessage("CMS SignedData without any signer")
    signed = _SignedData(
        econtent,
        tuple(cert for _, cert in certificates),
        tuple(signer for signer, _ in signers),
    )
    return signed, tuple(slots for _, slots in signers)


# --- reusing the parse of a sender's earlier signature --------------------------------------
#
# A sender's detached signatures differ from one message to the next only inside three
# primitive elements of each SignerInfo: the signingTime and messageDigest values and the
# signature value, whose lengths stay the same. The reader never looks inside a primitive
# element, so two encodings of the same length that agree in every byte outside those contents
# have the same tags and lengths everywhere and parse alike, but for those three values: they,
# and the signed attributes holding two of them, are read from each message anew; the rest
# (certificates, signer identifiers, algorithms, capabilities) comes from the earlier parse.


@attrs.frozen
class _Template:
    #: (offset, bytes) of every stretch of the encoding outside the per-message contents.
    fixed: tuple[tuple[int, bytes], ...]
    parsed: _SignedData
    slots: tuple[_Slots, ...]


#: Templates by the length of their encoding, the newest first.
_TEMPLATES: dict[int, tuple[_Template, ...]] = {}
_MAX_TEMPLATE_LENGTHS = 64
_TEMPLATES_PER_LENGTH = 4
#: A signature with its certificates takes a few KiB; larger ones are parsed every time, so
#: that the templates hold at most 64 * 4 encodings of 16 KiB and their parses.
_MAX_TEMPLATE_ENCODING = 16 * 1024
_templates_lock = threading.Lock()


def _template_for(der: bytes) -> _Template | None:
    for template in _TEMPLATES.get(len(der), ()):
        for offset, piece in template.fixed:
            if not der.startswith(piece, offset):
                break
        else:
            return template
    return None


def _refill(template: _Template, der: bytes) -> _SignedData:
    """The template's SignedData with the per-message values of `der`."""
    signer_infos = tuple(
        _refill_signer(signer, slots, der)
        for signer, slots in zip(template.parsed.signer_infos, template.slots, strict=True)
    )
    return _SignedData(None, template.parsed.certificates, signer_infos)


def _refill_signer(signer: _SignerInfo, slots: _Slots, der: bytes) -> _SignerInfo:
    signature, signed_attrs = slots.signature, slots.signed_attrs
    digest, time = slots.message_digest, slots.signing_time
    return signer._replace(
        signature=der[signature.content_start : signature.content_end],
        signed_attrs=None
        if signed_attrs is None
        else b"\x31" + der[signed_attrs.start + 1 : signed_attrs.end],
        message_digest=None if digest is None else _octets(der[digest.start : digest.end]),
        signing_time=None if time is None else _time(der[time.start : time.end]),
    )


def _remember(der: bytes, signed: _SignedData, slots: tuple[_Slots, ...]) -> None:
    """Keeps the parse of `der` as a template, if it can serve as one."""
    if signed.econtent is not None or len(der) > _MAX_TEMPLATE_ENCODING:
        return  # encapsulated content changes its length with every message
    variable = []
    for slot in slots:
        for element in (slot.message_digest, slot.signing_time, slot.signature):
            if element is None:
                continue
            if element.constructed:
                return  # BER chunks: the reader looked inside
            variable.append((element.content_start, element.content_end))
    fixed, position = [], 0
    for start, end in sorted(variable):
        fixed.append((position, der[position:start]))
        position = end
    fixed.append((position, der[position:]))
    template = _Template(tuple(fixed), signed, slots)
    with _templates_lock:
        others = _TEMPLATES.pop(len(der), ())
        if len(_TEMPLATES) >= _MAX_TEMPLATE_LENGTHS:
            _TEMPLATES.pop(next(iter(_TEMPLATES)))
        _TEMPLATES[len(der)] = (template, *others[: _TEMPLATES_PER_LENGTH - 1])


# --- the signature itself ------------------------------------------------------------------


class _CryptoFailure(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _hash(name: str) -> hashes.HashAlgorithm:
    return VERIFY_DIGESTS[name]()


def _pss_padding(params: algos.RSASSAPSSParams | None) -> tuple[padding.PSS, str]:
    if params is None:
        raise _CryptoFailure("bad-signature", "RSASSA-PSS without parameters")
    hash_name = params["hash_algorithm"]["algorithm"].native
    mgf = params["mask_gen_algorithm"]
    if mgf["algorithm"].native != "mgf1" or params["trailer_field"].native != "trailer_field_bc":
        raise _CryptoFailure(
            "unsupported-algorithm", "RSASSA-PSS with a mask generation other than MGF1"
        )
    mgf_hash = mgf["parameters"]["algorithm"].native
    if hash_name not in VERIFY_DIGESTS or mgf_hash not in VERIFY_DIGESTS:
        raise _CryptoFailure("unsupported-algorithm", f"RSASSA-PSS with {hash_name}/{mgf_hash}")
    pss = padding.PSS(
        mgf=padding.MGF1(_hash(mgf_hash)), salt_length=int(params["salt_length"].native)
    )
    return pss, hash_name


def _check_signature(key: PublicKeyTypes, si: _SignerInfo, data: bytes) -> str:
    """Verifies si.signature over `data`; returns the hash name used (for the weakness check)."""
    scheme, fixed_hash = _SIGNATURE_ALGORITHMS.get(si.signature_oid, ("", None))
    hash_name = fixed_hash or si.digest
    try:
        if scheme == "rsa" and isinstance(key, rsa.RSAPublicKey) and hash_name in VERIFY_DIGESTS:
            key.verify(si.signature, data, padding.PKCS1v15(), _hash(hash_name))
        elif scheme == "pss" and isinstance(key, rsa.RSAPublicKey):
            pss, hash_name = _pss_padding(si.pss_params)
            key.verify(si.signature, data, pss, _hash(hash_name))
        elif (
            scheme == "ecdsa"
            and isinstance(key, ec.EllipticCurvePublicKey)
            and hash_name in VERIFY_DIGESTS
        ):
            key.verify(si.signature, data, ec.ECDSA(_hash(hash_name)))
        elif scheme == "ed25519" and isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(si.signature, data)
            hash_name = "sha512"
        elif scheme == "":
            raise _CryptoFailure("unsupported-algorithm", f"signature algorithm {si.signature_oid}")
        else:
            raise _CryptoFailure(
                "bad-signature",
                f"signature algorithm {si.signature_oid} ({hash_name}) does not fit the signer key",
            )
    except InvalidSignature:
        raise _CryptoFailure("bad-signature", "the signature value does not verify") from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. absurd PSS parameters
        raise _CryptoFailure("bad-signature", f"unusable signature parameters: {exc}") from None
    except UnsupportedAlgorithm as exc:
        raise _CryptoFailure("weak-algorithm", f"algorithm refused by the backend: {exc}") from None
    return hash_name


def _weakness(key: PublicKeyTypes, digest: str, signature_hash: str) -> str | None:
    if digest in WEAK_DIGESTS or signature_hash in WEAK_DIGESTS:
        return f"signed with {digest if digest in WEAK_DIGESTS else signature_hash}"
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        return f"RSA key of {key.key_size} bits"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.key_size < MIN_EC_BITS:
        return f"EC key of {key.key_size} bits"
    return None


def _check_crypto(
    si: _SignerInfo, cert: x509.Certificate, content: bytes, at: datetime.datetime
) -> None:
    """Raises _CryptoFailure with the reason code of the first failing check."""
    if si.digest not in VERIFY_DIGESTS:
        raise _CryptoFailure("unsupported-algorithm", f"digest algorithm {si.digest}")
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise _CryptoFailure("unsupported-algorithm", f"signer key: {exc}") from None
    if si.signed_attrs is None:
        signed_bytes = content
    else:
        if si.content_type != "1.2.840.113549.1.7.1" or si.message_digest is None:
            raise _CryptoFailure("bad-signature", "contentType or messageDigest attribute missing")
        # hashlib: the same OpenSSL digests, under the names VERIFY_DIGESTS uses, without the
        # microsecond a `hashes.Hash` object adds.
        if hashlib.new(si.digest, content).digest() != si.message_digest:
            raise _CryptoFailure("content-altered", "the content does not match its messageDigest")
        signed_bytes = si.signed_attrs
    signature_hash = _check_signature(key, si, signed_bytes)
    weakness = _weakness(key, si.digest, signature_hash)
    if weakness is not None:
        raise _CryptoFailure("weak-algorithm", weakness)
    if si.signing_time is not None and si.signing_time > at + CLOCK_SKEW:
        raise _CryptoFailure("signing-time-in-future", f"signing time {si.signing_time} is ahead")


# --- certificates and addresses ------------------------------------------------------------


def _find_signer(si: _SignerInfo, certificates: Sequence[_Carried]) -> x509.Certificate | None:
    for issuer, cert in certificates:
        if si.sid_key_id is not None:
            try:
                ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            except (x509.ExtensionNotFound, ValueError):
                continue
            if ski.value.digest == si.sid_key_id:
                return cert
        elif cert.serial_number == si.sid_serial and _same_name(issuer, si.sid_issuer):
            return cert
    return None


def _same_name(issuer: bytes, sid_issuer: bytes | None) -> bool:
    # Names compare as RFC 5280 7.1 says (case and string types normalised).
    try:
        return sid_issuer is not None and names_equal(issuer, sid_issuer)
    except (ValueError, TypeError):
        return False


def _normalise(address: str) -> str:
    # RFC 5321: the local part may be case-sensitive, the domain never is.
    local, at, domain = address.strip().rpartition("@")
    return f"{local}{at}{domain.lower()}" if at else address.strip()


@cached_by_identity(maxsize=1024, admit=small_certificates)
def _addresses(cert: x509.Certificate) -> tuple[str, ...]:
    # Read once per certificate: cryptography decodes the SAN and the subject anew each time.
    return tuple(certificate_addresses(cert))


def _check_address(addresses: Sequence[str], expected: str | None) -> tuple[str, str | None]:
    """The address check against the signer certificate's `addresses`."""
    if expected is None:
        return "not-checked", None
    if not expected:
        return "address-mismatch", "the message has no From address to compare"
    if not addresses:
        return "no-address-in-cert", "the signer certificate names no e-mail address"
    if _normalise(expected) in {_normalise(a) for a in addresses}:
        return "ok", None
    return "address-mismatch", f"{expected} is not in the certificate ({', '.join(addresses)})"


def _signer_name(cert: x509.Certificate, addresses: Sequence[str]) -> str:
    return addresses[0] if addresses else cert.subject.rfc4514_string()


# --- putting it together -------------------------------------------------------------------


def _to_cryptography_certificates(certificates: Sequence[x509.Certificate]) -> tuple[_Carried, ...]:
    return tuple((_issuer_der(c), c) for c in certificates)


@functools.lru_cache(maxsize=1024)
def _issuer_der(cert: x509.Certificate) -> bytes:
    der = cert.public_bytes(serialization.Encoding.DER)
    return bytes(asn1_x509.Certificate.load(der)["tbs_certificate"]["issuer"].dump())


def _verify_one(
    si: _SignerInfo,
    signed: _SignedData,
    content: bytes,
    *,
    mode: Literal["clear", "opaque"],
    trust_anchors: Sequence[x509.Certificate],
    crls: Sequence[x509.CertificateRevocationList],
    extra_certificates: Sequence[x509.Certificate],
    expected_address: str | None,
    at: datetime.datetime,
) -> VerificationResult:
    carried = signed.certificates
    cert = si.carried_certificate or _find_signer(
        si, _to_cryptography_certificates(extra_certificates)
    )
    common = {
        "certificates": carried,
        "capabilities": si.capabilities,
        "signing_time": si.signing_time,
        "mode": mode,
        "digest": si.digest,
        "content": content,
    }
    if cert is None:
        return VerificationResult(
            status="invalid",
            reason="no-signer-certificate",
            crypto="no-signer-certificate",
            chain="untrusted",
            address="not-checked",
            revocation="unknown",
            signer=None,
            signer_certificate=None,
            detail="the signer's certificate is neither in the message nor known",
            **common,  # type: ignore[arg-type]
        )
    crypto, crypto_detail = "ok", None
    try:
        _check_crypto(si, cert, content, at)
    except _CryptoFailure as failure:
        crypto, crypto_detail = failure.code, failure.detail
    chain = validate_signer(
        cert,
        trust_anchors=trust_anchors,
        intermediates=(*carried, *extra_certificates),
        crls=crls,
        at=at,
    )
    addresses = _addresses(cert)
    address, address_detail = _check_address(addresses, expected_address)
    failures = [
        (code, detail)
        for code, detail in (
            (crypto, crypto_detail),
            (chain.status, chain.detail),
            (address, address_detail),
        )
        if code not in ("ok", "not-checked")
    ]
    reason, detail = failures[0] if failures else (None, None)
    return VerificationResult(
        status="invalid" if failures else "valid",
        reason=reason,
        crypto=crypto,
        chain=chain.status,
        address=address,
        revocation=chain.revocation,
        signer=_signer_name(cert, addresses),
        signer_certificate=cert,
        detail=detail,
        **common,  # type: ignore[arg-type]
    )


def verify_signed_data(
    der: bytes,
    detached_content: bytes | None,
    *,
    trust_anchors: Sequence[x509.Certificate],
    crls: Sequence[x509.CertificateRevocationList] = (),
    extra_certificates: Sequence[x509.Certificate] = (),
    expected_address: str | None,
    at: datetime.datetime | None = None,
) -> VerificationResult:
    """Verifies a CMS SignedData (DER or BER). `detached_content` is the signed content for a
    detached signature (None: the content is encapsulated). `extra_certificates` help find the
    signer and intermediates (e.g. from a certificate store) but are never trust anchors.

    With several signers, the first valid one is reported, else the first one.
    """
    signed = _parse_signed_data(der)
    mode: Literal["clear", "opaque"] = "opaque" if detached_content is None else "clear"
    content = detached_content if detached_content is not None else signed.econtent
    if content is None:
        raise MalformedMessage("detached signature without the signed content")
    moment = at or datetime.datetime.now(datetime.UTC)
    results = [
        _verify_one(
            si,
            signed,
            content,
            mode=mode,
            trust_anchors=trust_anchors,
            crls=crls,
            extra_certificates=extra_certificates,
            expected_address=expected_address,
            at=moment,
        )
        for si in signed.signer_infos
    ]
    return next((r for r in results if r.status == "valid"), results[0])


def verify_entity(
    entity: bytes,
    *,
    trust_anchors: Sequence[x509.Certificate],
    crls: Sequence[x509.CertificateRevocationList] = (),
    extra_certificates: Sequence[x509.Certificate] = (),
    expected_address: str | None,
    at: datetime.datetime | None = None,
) -> VerificationResult:
    """Verifies a multipart/signed or application/pkcs7-mime signed-data entity (or message).

    Bare-LF input is canonicalised to CRLF before the clear-signed part is digested.
    `expected_address` None skips the address check (reported as "not-checked").
    """
    kind, parts = signed_parts(entity)
    if isinstance(parts, ClearSigned):
        der, detached = parts.signature, parts.content
    elif parts is not None:
        der, detached = parts.der, None
    else:
        raise MalformedMessage(f"not a signed S/MIME entity (smime-type {kind!r})")
    return verify_signed_data(
        der,
        detached,
        trust_anchors=trust_anchors,
        crls=crls,
        extra_certificates=extra_certificates,
        expected_address=expected_address,
        at=at,
    )


def sender_address(message: bytes) -> str | None:
    """The first address of the From field, or None."""
    value = get_header(split_entity(message)[0], "From")
    if value is None:
        return None
    addresses = [addr for _, addr in email.utils.getaddresses([value]) if "@" in addr]
    return addresses[0] if addresses else None


def verify_message(
    message: bytes,
    *,
    trust_anchors: Sequence[x509.Certificate],
    crls: Sequence[x509.CertificateRevocationList] = (),
    extra_certificates: Sequence[x509.Certificate] = (),
    at: datetime.datetime | None = None,
) -> VerificationResult:
    """Verifies a signed RFC 5322 message, binding the signature to its From address."""
    address = sender_address(message)
    return verify_entity(
        message,
        trust_anchors=trust_anchors,
        crls=crls,
        extra_certificates=extra_certificates,
        expected_address=address or "",
        at=at,
    )
