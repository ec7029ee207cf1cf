"""Reading certificates, CRLs and PKCS#12 files, what the store records about each, and
writing PKCS#12 files for mail clients."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import secrets
from pathlib import Path
from typing import Final

import attrs
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7, pkcs12

from sealrelay.core.certificate import Certificate, certificate_addresses
from sealrelay.plugins.policy_sql.errors import StoreError


_PEM_BLOCK: Final = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----", re.DOTALL)
#: PBKDF iterations of an exported PKCS#12 (OpenSSL's default is 2048; clients accept more).
_PKCS12_ROUNDS: Final = 100_000
_KEY_USAGES: Final = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
)


def name_hash(name: x509.Name) -> str:
    return hashlib.sha256(name.public_bytes()).hexdigest()


def naive_utc(moment: dt.datetime) -> dt.datetime:
    """How the database keeps times: naive UTC (TIMESTAMP without a zone, on both backends)."""
    return moment.astimezone(dt.UTC).replace(tzinfo=None)


@attrs.frozen(kw_only=True)
class CertificateFacts:
    """What the store records about a certificate, read from its DER."""

    der: bytes = attrs.field(repr=False)
    fingerprint: str
    subject: str
    issuer: str
    subject_hash: str
    issuer_hash: str
    serial: str
    not_before: dt.datetime
    not_after: dt.datetime
    key_usages: tuple[str, ...]
    is_ca: bool
    addresses: tuple[str, ...]

    @classmethod
    def of(cls, certificate: x509.Certificate | bytes) -> CertificateFacts:
        if isinstance(certificate, bytes):
            certificate = _load_der(certificate, "certificate")
        wrapped = Certificate(der=certificate.public_bytes(Encoding.DER))
        try:
            usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
            usages = tuple(name for name in _KEY_USAGES if getattr(usage, name))
        except x509.ExtensionNotFound:
            usages = ()
        try:
            constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
            is_ca = constraints.value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        return cls(
            der=wrapped.der,
            fingerprint=wrapped.fingerprint,
            subject=certificate.subject.rfc4514_string(),
            issuer=certificate.issuer.rfc4514_string(),
            subject_hash=name_hash(certificate.subject),
            issuer_hash=name_hash(certificate.issuer),
            serial=format(certificate.serial_number, "x"),
            not_before=naive_utc(certificate.not_valid_before_utc),
            not_after=naive_utc(certificate.not_valid_after_utc),
            key_usages=usages,
            is_ca=is_ca,
            addresses=wrapped.addresses,
        )


def _load_der(der: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as error:
        raise StoreError(f"a stored {what} is not a valid certificate: {error}") from None


def read_certificates(data: bytes, source: str) -> list[x509.Certificate]:
    """Every certificate in a PEM file (CERTIFICATE and PKCS7 blocks), a DER certificate or
    a DER PKCS#7 bundle; StoreError naming *source* when there is none."""
    found: list[x509.Certificate] = []
    try:
        if b"-----BEGIN" in data:
            for block in _PEM_BLOCK.finditer(data):
                kind = block.group(1)
                if kind in (b"CERTIFICATE", b"X509 CERTIFICATE", b"TRUSTED CERTIFICATE"):
                    found.append(x509.load_pem_x509_certificate(block.group(0)))
                elif kind == b"PKCS7":
                    found.extend(pkcs7.load_pem_pkcs7_certificates(block.group(0)))
        else:
            try:
                found.append(x509.load_der_x509_certificate(data))
            except ValueError:
                found.extend(pkcs7.load_der_pkcs7_certificates(data))
    except (ValueError, UnsupportedAlgorithm) as error:
        raise StoreError(f"{source}: not a readable certificate file: {error}") from None
    if not found:
        raise StoreError(f"{source}: no certificate found (expected PEM, DER or a PKCS#7 bundle)")
    return found


def read_crl(data: bytes, source: str) -> x509.CertificateRevocationList:
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as error:
        raise StoreError(f"{source}: not a CRL in PEM or DER: {error}") from None


@attrs.frozen
class Pkcs12Contents:
    key: PrivateKeyTypes = attrs.field(repr=False)
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]


def read_pkcs12(data: bytes, password: bytes | None, source: str) -> Pkcs12Contents:
    """The key, its certificate and the other certificates of a PKCS#12 file (modern AES
    or the legacy 3DES/RC2 kind older clients export)."""
    try:
        loaded = pkcs12.load_pkcs12(data, password)
    except ValueError:
        raise StoreError(
            f"{source}: cannot open the PKCS#12 file: the password is wrong (give it with "
            "--password-file) or the file is damaged"
        ) from None
    if loaded.key is None or loaded.cert is None:
        raise StoreError(f"{source}: the PKCS#12 file holds no private key with a certificate")
    certificate = loaded.cert.certificate
    if loaded.key.public_key() != certificate.public_key():
        raise StoreError(f"{source}: the private key does not belong to the certificate")
    chain = tuple(extra.certificate for extra in loaded.additional_certs)
    return Pkcs12Contents(key=loaded.key, certificate=certificate, chain=chain)


def pkcs12_bytes(contents: Pkcs12Contents, password: str, *, legacy: bool) -> bytes:
    """A password-protected PKCS#12 file a mail client imports: AES-256-CBC with SHA-256, or
    with *legacy* the 3DES/SHA-1 kind that older clients need."""
    builder = serialization.PrivateFormat.PKCS12.encryption_builder().kdf_rounds(_PKCS12_ROUNDS)
    if legacy:
        builder = builder.key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        builder = builder.hmac_hash(hashes.SHA1())  # noqa: S303 - what --legacy asks for
    else:
        builder = builder.key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        builder = builder.hmac_hash(hashes.SHA256())
    addresses = certificate_addresses(contents.certificate)
    return pkcs12.serialize_key_and_certificates(
        name=(addresses[0] if addresses else "sealrelay").encode(),
        key=contents.key,  # type: ignore[arg-type]
        cert=contents.certificate,
        cas=list(contents.chain) or None,
        encryption_algorithm=builder.build(password.encode()),
    )


def new_export_password() -> str:
    """A random password for an exported key: 120 bits, typed by a person from a screen."""
    return "-".join(secrets.token_hex(3) for _ in range(5))


def write_private_file(path: Path, data: bytes) -> None:
    """Write a new file that only its owner can read; an existing file is never replaced."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise StoreError(f"{path} exists already: choose another file or remove it") from None
    except OSError as error:
        raise StoreError(f"cannot write {path}: {error.strerror}") from None
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when *issuer*'s key signed *certificate* (names and signature checked)."""
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def crl_signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    if crl.issuer != issuer.subject:
        return False
    try:
        return crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except (TypeError, UnsupportedAlgorithm):
        return False
