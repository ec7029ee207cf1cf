"""Certificates the built-in CA issues (issue 6): what OpenSSL makes of them against the CA
certificate ``ca export`` writes, and the S/MIME extensions RFC 8550 asks for."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sealrelay.core.key_types import key_type_of
from tests.plugins.provisioning.conftest import ALICE, CRL_URL, OpenSSL, Relay, pem, public_der


pytestmark = [pytest.mark.interop, pytest.mark.parametrize("backend", ["sqlite"], indirect=True)]

RSA_USAGE = {"digital_signature": True, "key_encipherment": True, "key_agreement": False}
EC_USAGE = {"digital_signature": True, "key_encipherment": False, "key_agreement": True}
NEVER = ("content_commitment", "data_encipherment", "key_cert_sign", "crl_sign")


def extension(certificate: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension[Any]:
    return certificate.extensions.get_extension_for_class(kind)


KEY_TYPES = [
    pytest.param({"key_type": "rsa2048"}, {"key_type": "rsa2048"}, RSA_USAGE, id="rsa2048"),
    pytest.param({"key_type": "ec-p256"}, {"key_type": "ec-p256"}, EC_USAGE, id="ec-p256"),
]


@pytest.mark.parametrize(
    ("keypool_settings", "ca_settings", "usage"),
    KEY_TYPES,
    indirect=["keypool_settings", "ca_settings"],
)
def test_an_issued_certificate_is_an_smime_certificate_openssl_accepts(
    relay: Relay, openssl: OpenSSL, keypool_settings, usage
):
    relay.fill()
    identity = relay.provision(ALICE)
    certificate = identity.certificate.x509
    ca_file = relay.export_ca()
    ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
    leaf = openssl.file("alice.pem", pem(certificate))

    # The key is of the configured type, and the certificate is for it.
    assert key_type_of(certificate.public_key()) == keypool_settings["key_type"]
    assert public_der(identity.private_key) == public_der(certificate.public_key())
    # Issued by the exported CA, within its validity, for the address.
    certificate.verify_directly_issued_by(ca)
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == ALICE
    assert certificate.not_valid_after_utc <= ca.not_valid_after_utc
    assert certificate.not_valid_before_utc <= dt.datetime.now(dt.UTC)
    san = extension(certificate, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == [ALICE]
    eku = extension(certificate, x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.EMAIL_PROTECTION]
    key_usage = extension(certificate, x509.KeyUsage)
    assert key_usage.critical
    assert {name: getattr(key_usage.value, name) for name in usage} == usage
    assert not any(getattr(key_usage.value, name) for name in NEVER)
    constraints = extension(certificate, x509.BasicConstraints).value
    assert not constraints.ca
    [point] = extension(certificate, x509.CRLDistributionPoints).value
    assert point.full_name == [x509.UniformResourceIdentifier(CRL_URL)]

    # OpenSSL agrees: a signing certificate, and (RSA) an encryption certificate.
    assert openssl("verify", "-purpose", "smimesign", "-CAfile", ca_file, leaf).strip() == (
        f"{leaf}: OK".encode()
    )
    if keypool_settings["key_type"].startswith("rsa"):
        assert openssl("verify", "-purpose", "smimeencrypt", "-CAfile", ca_file, leaf).strip() == (
            f"{leaf}: OK".encode()
        )
    text = openssl("x509", "-in", leaf, "-noout", "-text").decode()
    assert f"email:{ALICE}" in text
    assert "E-mail Protection" in text
    assert f"URI:{CRL_URL}" in text


@pytest.mark.xfail(
    strict=True,
    reason="OpenSSL's smimeencrypt purpose requires keyEncipherment, which RFC 5480 forbids "
    "for EC keys (they have keyAgreement); an EC certificate's use for encryption is proved "
    "by openssl encrypting to it instead (test_messages.py)",
)
def test_openssl_verify_purpose_smimeencrypt_for_an_ec_certificate(relay: Relay, openssl: OpenSSL):
    relay.fill()
    leaf = openssl.file("alice.pem", pem(relay.provision(ALICE).certificate.x509))
    ca_file = relay.export_ca()
    openssl("verify", "-purpose", "smimeencrypt", "-CAfile", ca_file, leaf)


@pytest.mark.parametrize("ca_settings", [{"crl_distribution_point": ""}], indirect=True)
def test_no_crl_distribution_point_unless_configured(relay: Relay, openssl: OpenSSL):
    certificate = relay.provision(ALICE).certificate.x509
    with pytest.raises(x509.ExtensionNotFound):
        certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    leaf = openssl.file("alice.pem", pem(certificate))
    openssl("verify", "-purpose", "smimesign", "-CAfile", relay.export_ca(), leaf)
