"""Revoking a certificate the built-in CA issued (issue 6): the CRL file lists it under a
higher CRL number, the store calls it revoked, the relay stops signing with it, and OpenSSL
refuses it when it checks CRLs."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from sealrelay import hookimpl
from sealrelay.core.envelope import Envelope
from sealrelay.exceptions import CommandError, SealrelayError
from tests.plugins.provisioning.conftest import ALICE, BOB, MESSAGE, OpenSSL, Relay, pem


pytestmark = pytest.mark.interop

CAROL = "carol@example.org"


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def openssl_serial(serial: int) -> str:
    """A serial number as ``openssl crl -text`` prints it: upper-case hex, whole bytes."""
    text = format(serial, "X")
    return text.zfill(len(text) + len(text) % 2)


def status_of(relay: Relay, fingerprint: str) -> str:
    [row] = [row for row in relay.admin("cert list").data if row["fingerprint"] == fingerprint]
    return str(row["status"])


def send(relay: Relay):
    return relay.bus.process_outbound(Envelope(sender=ALICE, recipients=(BOB,)), MESSAGE)


def to_alice(relay: Relay):
    message = b"From: carol@example.org\r\nTo: alice@example.org\r\nSubject: hi\r\n\r\nhi\r\n"
    return relay.bus.process_outbound(Envelope(sender=CAROL, recipients=(ALICE,)), message)


def crl_pem(relay: Relay, openssl: OpenSSL) -> Path:
    """The published CRL file, converted (and so parsed) by openssl."""
    path = openssl.workdir / "crl.pem"
    openssl("crl", "-inform", "DER", "-in", relay.crl_file, "-outform", "PEM", "-out", path)
    return path


def test_a_revoked_certificate_is_on_the_crl_and_no_longer_signs(relay: Relay, openssl: OpenSSL):
    relay.fill()
    identity = relay.provision(ALICE)
    certificate = identity.certificate.x509
    fingerprint = identity.certificate.fingerprint
    ca_file = relay.export_ca()
    ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
    leaf = openssl.file("alice.pem", pem(certificate))

    before = relay.crl()
    assert before.get_revoked_certificate_by_serial_number(certificate.serial_number) is None
    assert status_of(relay, fingerprint) == "valid"
    checked = ("verify", "-crl_check", "-purpose", "smimesign", "-CAfile", ca_file)
    assert openssl(*checked, "-CRLfile", crl_pem(relay, openssl), leaf).strip().endswith(b": OK")
    assert send(relay).messages[0].signed
    # Carol's mail to Alice must be encrypted: to Alice's certificate, while it is valid.
    relay.admin("policy add", sender=CAROL, recipient=ALICE, sign="none", encrypt="always")
    assert to_alice(relay).messages[0].encrypted

    revoked = relay.admin("cert revoke", fingerprint=fingerprint, reason="key-compromise").data
    assert revoked["address"] == ALICE
    assert revoked["crl_file"] == str(relay.crl_file)

    # The CRL file: a new CRL, signed by the CA, listing the certificate with its reason.
    after = relay.crl()
    assert crl_number(after) > crl_number(before)
    assert revoked["crl_number"] == crl_number(after)
    assert after.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert after.issuer == ca.subject
    entry = after.get_revoked_certificate_by_serial_number(certificate.serial_number)
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason == x509.ReasonFlags.key_compromise
    # ... as openssl reads it.
    text = openssl("crl", "-inform", "DER", "-in", relay.crl_file, "-noout", "-text").decode()
    assert f"Serial Number: {openssl_serial(certificate.serial_number)}" in text
    assert "Key Compromise" in text
    number = openssl("crl", "-inform", "DER", "-in", relay.crl_file, "-noout", "-crlnumber")
    assert int(number.decode().strip().removeprefix("crlNumber="), 16) == crl_number(after)
    checked_crl = openssl.attempt(
        "crl", "-inform", "DER", "-in", relay.crl_file, "-CAfile", ca_file, "-noout"
    )
    assert b"verify OK" in checked_crl.stderr + checked_crl.stdout

    # The store knows, and the relay no longer signs with it.
    assert status_of(relay, fingerprint) == "revoked"
    result = send(relay)
    assert result.messages == ()
    [deferred] = result.deferred
    assert "no signing key is known for alice@example.org" in deferred.reason

    # Nor does it encrypt to it.
    refused_to = to_alice(relay)
    assert refused_to.messages == ()
    [rejected] = refused_to.rejected
    assert "no valid certificate is known for alice@example.org" in rejected.reason

    # OpenSSL refuses the certificate once it checks the CRL.
    refused = openssl.attempt(*checked, "-CRLfile", crl_pem(relay, openssl), leaf)
    assert refused.returncode != 0
    assert b"certificate revoked" in refused.stdout + refused.stderr


@pytest.mark.parametrize("keypool_settings", [{"provision_on_send": True}], indirect=True)
def test_after_revocation_provision_on_send_gives_the_subscriber_a_new_key(
    relay: Relay, openssl: OpenSSL
):
    relay.fill()
    relay.admin("subscriber add", address=ALICE)
    old = relay.provision(ALICE)
    relay.admin("cert revoke", fingerprint=old.certificate.fingerprint)

    [copy] = send(relay).messages
    assert copy.signed
    # Verified with CRL checking: signed by a new certificate, not the revoked one.
    bundle = openssl.file(
        "ca-and-crl.pem", relay.export_ca().read_bytes() + relay.crl().public_bytes(Encoding.PEM)
    )
    message = openssl.file("signed.eml", copy.content)
    signer = openssl.workdir / "signer.pem"
    openssl("cms", "-verify", "-crl_check", "-in", message, "-CAfile", bundle, "-signer", signer)
    new = x509.load_pem_x509_certificate(signer.read_bytes())
    assert new != old.certificate.x509
    assert new.public_key() != old.certificate.x509.public_key()
    statuses = {
        row["fingerprint"]: row["status"] for row in relay.admin("cert list", address=ALICE).data
    }
    assert statuses[old.certificate.fingerprint] == "revoked"
    assert sorted(statuses.values()) == ["revoked", "valid"]


class BrokenCrlStore:
    """A store that cannot take CRLs (its disk is read-only)."""

    @hookimpl
    def sealrelay_store_revocation_list(self, crl: bytes) -> str | None:
        raise OSError("read-only file system")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_cert_revoke_names_a_store_that_did_not_take_the_crl(relay: Relay):
    relay.fill()
    identity = relay.provision(ALICE)
    relay.bus.plugins.pm.register(BrokenCrlStore(), name="cdp")
    fingerprint = identity.certificate.fingerprint
    # docs/hooks.md: "`sealrelay cert revoke` ends with exit status 1 naming the store that
    # failed" (a failure, not a usage error).
    try:
        result = relay.admin("cert revoke", fingerprint=fingerprint)
    except CommandError as error:
        pytest.fail(f"a usage error (exit status 2), not a failure: {error}")
    except SealrelayError as error:
        said, status = str(error), 1
    else:
        said, status = result.text, result.exit_status
    assert status == 1, said
    assert "cdp" in said
    # The other store took it all the same.
    assert status_of(relay, fingerprint) == "revoked"
    assert relay.crl().get_revoked_certificate_by_serial_number(
        identity.certificate.x509.serial_number
    )
