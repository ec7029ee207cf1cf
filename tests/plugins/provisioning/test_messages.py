"""Mail with provisioned keys (issue 6): what the relay signs verifies in OpenSSL against the
exported CA, what OpenSSL encrypts to a provisioned certificate the relay decrypts, and
``[keypool] provision_on_send`` gives a sending subscriber a key at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from sealrelay.core.envelope import Envelope
from sealrelay.core.results import OutboundResult
from tests.plugins.provisioning.conftest import ALICE, BOB, MESSAGE, OpenSSL, Relay, pem


pytestmark = [pytest.mark.interop, pytest.mark.parametrize("backend", ["sqlite"], indirect=True)]

CAROL = "carol@example.org"


def send(relay: Relay, sender: str = ALICE) -> OutboundResult:
    message = MESSAGE.replace(b"Alice <alice@example.org>", sender.encode())
    return relay.bus.process_outbound(Envelope(sender=sender, recipients=(BOB,)), message)


def verify(openssl: OpenSSL, signed: bytes, ca_file: Path) -> tuple[bytes, x509.Certificate]:
    """The content of a signed message checked by openssl against *ca_file* as an S/MIME
    signature, and the signer's certificate."""
    message = openssl.file("signed.eml", signed)
    signer = openssl.workdir / "signer.pem"
    content = openssl(
        "cms", "-verify", "-in", message, "-CAfile", ca_file, "-purpose", "smimesign",
        "-signer", signer,
    )  # fmt: skip
    return content, x509.load_pem_x509_certificate(signer.read_bytes())


SUBSCRIBER_KEYS = [
    pytest.param({"key_type": "rsa2048"}, id="rsa2048"),
    pytest.param({"key_type": "ec-p256"}, id="ec-p256"),
]


@pytest.mark.parametrize("keypool_settings", SUBSCRIBER_KEYS, indirect=True)
def test_mail_signed_with_a_provisioned_key_verifies_in_openssl(relay: Relay, openssl: OpenSSL):
    relay.fill()
    identity = relay.provision(ALICE)
    result = send(relay)
    assert (result.deferred, result.rejected) == ((), ())
    [copy] = result.messages
    assert (copy.signed, copy.sign_mode, copy.encrypted) == (True, "clear", False)
    content, signer = verify(openssl, copy.content, relay.export_ca())
    assert b"Signed with a key from the pool." in content
    assert signer == identity.certificate.x509


@pytest.mark.parametrize("keypool_settings", SUBSCRIBER_KEYS, indirect=True)
def test_mail_openssl_encrypts_to_a_provisioned_certificate_is_decrypted(
    relay: Relay, openssl: OpenSSL
):
    relay.fill()
    recipient = openssl.file("alice.pem", pem(relay.provision(ALICE).certificate.x509))
    plain = openssl.file(
        "plain.txt", b"Content-Type: text/plain\r\n\r\nFor Alice's new key only.\r\n"
    )
    encrypted = openssl("cms", "-encrypt", "-aes256", "-in", plain, recipient)
    message = (
        b"From: bob@partner.example\r\nTo: alice@example.org\r\nSubject: secret\r\n" + encrypted
    )
    result = relay.bus.process_inbound(
        Envelope(sender=BOB, recipients=(ALICE,), direction="inbound"), message, ALICE
    )
    assert (result.decrypted, result.decryption_error) == (True, None)
    assert b"For Alice's new key only." in result.content
    assert b"application/pkcs7-mime" not in result.content


# -- provision_on_send -------------------------------------------------------------------


@pytest.mark.parametrize("keypool_settings", [{"provision_on_send": True}], indirect=True)
def test_a_subscriber_without_a_key_who_sends_is_given_one(relay: Relay, openssl: OpenSSL):
    relay.fill()
    relay.admin("subscriber add", address=ALICE)
    assert relay.admin("cert list", address=ALICE).data == []

    result = send(relay)
    assert (result.deferred, result.rejected) == ((), ())
    [copy] = result.messages
    assert copy.signed
    _, signer = verify(openssl, copy.content, relay.export_ca())
    [stored] = relay.admin("cert list", address=ALICE).data
    assert stored["private_key"]
    assert stored["source"] == "issued"
    assert stored["fingerprint"] == signer.fingerprint(hashes.SHA256()).hex()
    assert relay.status()["handed_out_last_hour"] == 1

    # The next message is signed with the same key: one key per subscriber, not per message.
    [again] = send(relay).messages
    assert verify(openssl, again.content, relay.export_ca())[1] == signer
    assert relay.admin("ca show").data["issued"] == 1

    # Someone who is not a subscriber gets no key: the message waits.
    refused = send(relay, CAROL)
    assert refused.messages == ()
    [deferred] = refused.deferred
    assert deferred.temporary
    assert "no signing key is known for carol@example.org" in deferred.reason
    assert relay.admin("cert list", address=CAROL).data == []
    assert relay.admin("ca show").data["issued"] == 1


def test_without_provision_on_send_a_subscriber_without_a_key_is_deferred_with_advice(
    relay: Relay,
):
    relay.fill()
    relay.admin("subscriber add", address=ALICE)
    result = send(relay)
    assert result.messages == ()
    [deferred] = result.deferred
    assert deferred.recipient == BOB
    assert deferred.temporary
    assert "no signing key is known for alice@example.org" in deferred.reason
    assert "sealrelay identity provision alice@example.org" in deferred.reason
    assert "provision_on_send" in deferred.reason
    assert relay.admin("cert list", address=ALICE).data == []
    assert relay.status()["handed_out_last_hour"] == 0
