"""Certificates and private-key identities as the core hands them between plugins."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging

import attrs
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sealrelay.core.address import Address, AddressError


log = logging.getLogger(__name__)

#: Where a certificate came from.
SOURCES = ("imported", "harvested", "issued", "message")


def certificate_addresses(cert: x509.Certificate) -> list[str]:
    """The e-mail addresses a certificate names, as written: SAN rfc822Name first, then the
    subject's emailAddress. A SAN that does not decode names none."""
    addresses: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        addresses.extend(san.value.get_values_for_type(x509.RFC822Name))
    except (x509.ExtensionNotFound, ValueError):
        pass
    for attribute in cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS):
        if isinstance(attribute.value, str):
            addresses.append(attribute.value)
    return addresses


@attrs.frozen(kw_only=True)
class Certificate:
    """One X.509 certificate, with what a store knows about it.

    ``trusted`` is the store's word that the certificate chains to a trust anchor or was
    trusted explicitly by an operator; the core never trusts a certificate by itself.
    """

    der: bytes = attrs.field(repr=False)
    source: str = attrs.field(default="imported", validator=attrs.validators.in_(SOURCES))
    trusted: bool = False
    revoked: bool = False
    #: Content ciphers the holder announced (SMIMECapabilities of its last signed mail),
    #: strongest first, in the names Policy.cipher uses; empty when unknown.
    capabilities: tuple[str, ...] = ()

    @functools.cached_property
    def x509(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.der)

    @functools.cached_property
    def fingerprint(self) -> str:
        """SHA-256 of the DER encoding, lower-case hex."""
        return hashlib.sha256(self.der).hexdigest()

    @functools.cached_property
    def addresses(self) -> tuple[str, ...]:
        """Normalised addresses (lookup keys) from SAN rfc822Name and the subject's emailAddress."""
        addresses: list[str] = []
        for text in certificate_addresses(self.x509):
            try:
                key = Address.parse(text).lookup_key
            except AddressError:
                continue
            if key not in addresses:
                addresses.append(key)
        return tuple(addresses)

    @property
    def not_before(self) -> dt.datetime:
        return self.x509.not_valid_before_utc

    @property
    def not_after(self) -> dt.datetime:
        return self.x509.not_valid_after_utc

    @property
    def subject(self) -> str:
        return self.x509.subject.rfc4514_string()

    def valid_at(self, moment: dt.datetime) -> bool:
        return self.not_before <= moment <= self.not_after

    @functools.cached_property
    def can_encrypt(self) -> bool:
        """Usable to encrypt mail to: key usage allows it and the EKU, when present, is e-mail."""
        key = self.x509.public_key()
        if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            return False
        try:
            usage = self.x509.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            usage = None
        if usage is not None:
            allowed = (
                usage.key_encipherment if isinstance(key, rsa.RSAPublicKey) else usage.key_agreement
            )
            if not allowed:
                return False
        try:
            eku = self.x509.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            return True
        return (
            ExtendedKeyUsageOID.EMAIL_PROTECTION in eku
            or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in eku
        )

    def matches(self, address: str) -> bool:
        """True when *address* is one of the certificate's addresses (case-folded lookup)."""
        return Address.parse(address).lookup_key in self.addresses


def best_encryption_certificate(
    candidates: list[Certificate], address: str, moment: dt.datetime
) -> Certificate | None:
    """The certificate to encrypt to *address*: trusted, valid now, not revoked, usable for
    encryption, bound to the address; among those the one that expires last."""
    usable = [cert for cert in candidates if _usable(cert, address, moment)]
    return max(usable, key=lambda cert: cert.not_after, default=None)


def _usable(cert: Certificate, address: str, moment: dt.datetime) -> bool:
    try:
        return (
            cert.trusted
            and not cert.revoked
            and cert.valid_at(moment)
            and cert.can_encrypt
            and cert.matches(address)
        )
    except ValueError:
        # One broken row in a store must not stop mail to everyone else.
        log.warning("ignoring a certificate that does not parse (sha256 %s)", cert.fingerprint)
        return False


@attrs.frozen(kw_only=True)
class Identity:
    """A private key with its certificate and chain: what signs for or decrypts for an address."""

    address: str
    certificate: Certificate
    #: Intermediate CA certificates, leaf first order, not including the trust anchor.
    chain: tuple[Certificate, ...] = ()
    private_key: PrivateKeyTypes = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class IssuedCertificate:
    """What a certificate authority answers when it has issued a certificate."""

    certificate: Certificate
    #: Intermediate CA certificates between the certificate and the authority, leaf first.
    chain: tuple[Certificate, ...] = ()
    #: The trust anchor the certificate chains to: the relay's own CA, which stores keep as
    #: a trust anchor so that mail between subscribers verifies and encrypts.
    authority: Certificate
