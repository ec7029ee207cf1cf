"""A throw-away test PKI, generated with `cryptography` when the tests run (no committed keys).

Layout: root -> intermediate -> leaf identities (one per key type and per failure mode), plus an
unrelated root with one leaf of its own for "untrusted" cases, and CRLs from the root and the
intermediate. `build_test_pki()` is cached because RSA key generation is the slow part.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Sequence
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


ORGANISATION = "Sealrelay Test PKI"


def _name(common_name: str, email: str | None = None) -> x509.Name:
    attributes = [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ]
    if email is not None:
        attributes.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, email))
    return x509.Name(attributes)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def _signing_hash(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | None:
    # Ed25519 issuers sign without a separate hash; everything else uses SHA-256.
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _key_usage(key: PrivateKeyTypes) -> x509.KeyUsage:
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    is_ec = isinstance(key, ec.EllipticCurvePrivateKey)
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=is_rsa,
        data_encipherment=False,
        key_agreement=is_ec,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def make_root(common_name: str) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A self-signed RSA-2048 CA (RSA so that gpgsm 2.2 can check the whole chain)."""
    key = rsa_key()
    name = _name(common_name)
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1000))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_intermediate(
    common_name: str, issuer: x509.Certificate, issuer_key: CertificateIssuerPrivateKeyTypes
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = rsa_key()
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1000))
        .not_valid_after(now + datetime.timedelta(days=1825))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(issuer_key, _signing_hash(issuer_key))
    )
    return cert, key


def issue_leaf(
    issuer: x509.Certificate,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    key: PrivateKeyTypes,
    *,
    common_name: str,
    san_address: str | None,
    subject_address: str | None = None,
    eku: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.EMAIL_PROTECTION,),
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> x509.Certificate:
    """An end-entity certificate; `eku=None` leaves the EKU extension out entirely."""
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, subject_address))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - datetime.timedelta(days=1))
        .not_valid_after(not_after or now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(key), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if san_address is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(san_address)]), critical=False
        )
    return builder.sign(issuer_key, _signing_hash(issuer_key))


def make_crl(
    issuer: x509.Certificate,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    revoked: Sequence[x509.Certificate] = (),
) -> x509.CertificateRevocationList:
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(now - datetime.timedelta(hours=1))
        .next_update(now + datetime.timedelta(days=30))
        .add_extension(x509.CRLNumber(1), critical=False)
    )
    for cert in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(cert.serial_number)
            .revocation_date(now - datetime.timedelta(hours=2))
            .build()
        )
    return builder.sign(issuer_key, _signing_hash(issuer_key))


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@attrs.frozen
class TestIdentity:
    """One end entity: its address, key, certificate and the intermediates above it."""

    __test__ = False  # not a pytest test class despite the name

    address: str | None
    key: PrivateKeyTypes = attrs.field(repr=False)
    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...]

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def cert_pem(self) -> bytes:
        return _pem(self.cert)

    def chain_pem(self) -> bytes:
        return b"".join(_pem(c) for c in self.chain)

    def write_pem_files(self, directory: Path) -> tuple[Path, Path]:
        """Writes (certificate followed by the chain, PEM) and (unencrypted key, PEM)."""
        stem = (self.address or "no-address").replace("@", "_at_")
        cert_path = directory / f"{stem}.cert.pem"
        key_path = directory / f"{stem}.key.pem"
        cert_path.write_bytes(self.cert_pem() + self.chain_pem())
        key_path.write_bytes(self.key_pem())
        return cert_path, key_path


@attrs.frozen
class TestPKI:
    __test__ = False  # not a pytest test class despite the name

    root: x509.Certificate
    root_key: rsa.RSAPrivateKey = attrs.field(repr=False)
    intermediate: x509.Certificate
    intermediate_key: rsa.RSAPrivateKey = attrs.field(repr=False)
    rsa2048: TestIdentity
    rsa3072: TestIdentity
    p256: TestIdentity
    p384: TestIdentity
    ed25519: TestIdentity
    expired: TestIdentity
    revoked: TestIdentity
    no_email_eku: TestIdentity
    no_address: TestIdentity
    untrusted: TestIdentity
    untrusted_root: x509.Certificate
    crl: x509.CertificateRevocationList
    root_crl: x509.CertificateRevocationList

    def trust_anchors(self) -> tuple[x509.Certificate, ...]:
        return (self.root,)

    def issue(
        self,
        key: PrivateKeyTypes,
        *,
        address: str | None,
        subject_address: str | None = None,
        eku: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.EMAIL_PROTECTION,),
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> TestIdentity:
        """A further identity under the intermediate, for one-off cases (weak keys, odd names)."""
        cert = issue_leaf(
            self.intermediate,
            self.intermediate_key,
            key,
            common_name=address or subject_address or "Someone",
            san_address=address,
            subject_address=subject_address,
            eku=eku,
            not_before=not_before,
            not_after=not_after,
        )
        return TestIdentity(
            address=address or subject_address, key=key, cert=cert, chain=(self.intermediate,)
        )


@functools.cache
def build_test_pki() -> TestPKI:
    root, root_key = make_root("Sealrelay Test Root CA")
    intermediate, intermediate_key = make_intermediate(
        "Sealrelay Test Intermediate CA", root, root_key
    )
    untrusted_root, untrusted_root_key = make_root("Sealrelay Untrusted Root CA")

    def leaf(address: str | None, key: PrivateKeyTypes, **kwargs: object) -> TestIdentity:
        cert = issue_leaf(
            intermediate,
            intermediate_key,
            key,
            common_name=address or "No Address",
            san_address=address,
            **kwargs,  # type: ignore[arg-type]
        )
        return TestIdentity(address=address, key=key, cert=cert, chain=(intermediate,))

    now = _now()
    revoked = leaf("grace@example.org", rsa_key())
    untrusted_key = rsa_key()
    untrusted = TestIdentity(
        address="ivan@example.org",
        key=untrusted_key,
        cert=issue_leaf(
            untrusted_root,
            untrusted_root_key,
            untrusted_key,
            common_name="ivan@example.org",
            san_address="ivan@example.org",
        ),
        chain=(),
    )
    return TestPKI(
        root=root,
        root_key=root_key,
        intermediate=intermediate,
        intermediate_key=intermediate_key,
        rsa2048=leaf("alice@example.org", rsa_key(2048)),
        rsa3072=leaf("bob@example.org", rsa_key(3072)),
        p256=leaf("carol@example.org", ec.generate_private_key(ec.SECP256R1())),
        p384=leaf("dave@example.org", ec.generate_private_key(ec.SECP384R1())),
        ed25519=leaf("erin@example.org", ed25519.Ed25519PrivateKey.generate()),
        expired=leaf(
            "frank@example.org",
            rsa_key(),
            not_before=now - datetime.timedelta(days=400),
            not_after=now - datetime.timedelta(days=30),
        ),
        revoked=revoked,
        no_email_eku=leaf("heidi@example.org", rsa_key(), eku=(ExtendedKeyUsageOID.CLIENT_AUTH,)),
        no_address=leaf(None, rsa_key()),
        untrusted=untrusted,
        untrusted_root=untrusted_root,
        crl=make_crl(intermediate, intermediate_key, [revoked.cert]),
        root_crl=make_crl(root, root_key),
    )
