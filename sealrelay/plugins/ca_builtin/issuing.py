"""The certificates and CRLs the built-in CA signs, as pure functions of their inputs.

Issued certificates follow RFC 8550 for S/MIME: the address as SAN rfc822Name, the
emailProtection EKU, and key usage digitalSignature with keyEncipherment (RSA) or
keyAgreement (EC), so that one key both signs and receives mail.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Final

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
    PublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sealrelay.plugins.ca_builtin.errors import CaError


#: Certificates start this long before they are made, so that a peer whose clock is slow
#: does not see them as not yet valid.
CLOCK_SKEW: Final = dt.timedelta(minutes=5)

#: RFC 5280 reason codes by the names ``cert revoke --reason`` takes.
REASONS: Final = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key-compromise": x509.ReasonFlags.key_compromise,
    "affiliation-changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation-of-operation": x509.ReasonFlags.cessation_of_operation,
}


@attrs.frozen(kw_only=True)
class Revocation:
    serial: int
    revoked_at: dt.datetime
    reason: str


def _digest(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | hashes.SHA384:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


def _no_usage() -> dict[str, bool]:
    return {
        "digital_signature": False,
        "content_commitment": False,
        "key_encipherment": False,
        "data_encipherment": False,
        "key_agreement": False,
        "key_cert_sign": False,
        "crl_sign": False,
        "encipher_only": False,
        "decipher_only": False,
    }


def ca_certificate(
    key: CertificateIssuerPrivateKeyTypes, name: str, now: dt.datetime, days: int
) -> x509.Certificate:
    """A self-signed root that may sign certificates and CRLs, and no other CA."""
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sealrelay"),
        ]
    )
    usage = {**_no_usage(), "digital_signature": True, "key_cert_sign": True, "crl_sign": True}
    public_key = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(**usage), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(key, _digest(key))
    )


def check_ca_certificate(
    certificate: x509.Certificate, key: PrivateKeyTypes
) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    """CaError unless *certificate* is a CA certificate for *key* that may sign
    certificates and CRLs (for ``ca import``)."""
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CaError(
            f"the CA's key is {type(key).__name__.removeprefix('_')}: mail clients check S/MIME "
            "certificates issued by RSA or EC CAs only; import an RSA or EC CA"
        )
    if certificate.public_key() != key.public_key():
        raise CaError("the private key does not belong to the CA certificate")
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CaError(
            f"{certificate.subject.rfc4514_string()} is not a CA certificate (no "
            "basicConstraints CA:TRUE)"
        )
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return key
    if not (usage.key_cert_sign and usage.crl_sign):
        raise CaError(
            f"{certificate.subject.rfc4514_string()} may not sign certificates and CRLs (its "
            "keyUsage lacks keyCertSign or cRLSign)"
        )
    return key


def subscriber_certificate(
    *,
    ca: x509.Certificate,
    ca_key: CertificateIssuerPrivateKeyTypes,
    address: str,
    public_key: PublicKeyTypes,
    serial: int,
    now: dt.datetime,
    days: int,
    crl_distribution_point: str,
) -> x509.Certificate:
    """An S/MIME certificate for *address*, never outliving its CA."""
    if isinstance(public_key, rsa.RSAPublicKey):
        usage = {**_no_usage(), "digital_signature": True, "key_encipherment": True}
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        usage = {**_no_usage(), "digital_signature": True, "key_agreement": True}
    else:
        raise CaError(
            f"cannot certify a {type(public_key).__name__} for S/MIME: only RSA and EC keys "
            "sign and receive mail"
        )
    not_after = min(now + dt.timedelta(days=days), ca.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)]))
        .issuer_name(ca.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(**usage), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public_key),
            critical=False,
        )
        .add_extension(_authority_key_identifier(ca), critical=False)
    )
    if crl_distribution_point:
        point = x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(crl_distribution_point)],
            relative_name=None,
            reasons=None,
            crl_issuer=None,
        )
        builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    return builder.sign(ca_key, _digest(ca_key))


def revocation_list(
    *,
    ca: x509.Certificate,
    ca_key: CertificateIssuerPrivateKeyTypes,
    revoked: Iterable[Revocation],
    number: int,
    now: dt.datetime,
    days: int,
) -> x509.CertificateRevocationList:
    """A CRL of *ca* listing *revoked*, valid for *days*."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=days))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(_authority_key_identifier(ca), critical=False)
    )
    for entry in revoked:
        item = (
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial)
            .revocation_date(entry.revoked_at)
            .add_extension(x509.CRLReason(REASONS[entry.reason]), critical=False)
            .build()
        )
        builder = builder.add_revoked_certificate(item)
    return builder.sign(ca_key, _digest(ca_key))


def _authority_key_identifier(ca: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
