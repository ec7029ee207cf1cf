"""Provisioning as an operator does it, with the real ``sealrelay`` command (issue 6): fill
and watch the pool, provision a subscriber, send signed mail that OpenSSL verifies against
the exported CA, revoke, and see the relay stop signing."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.cli import Operator
from tests.plugins.provisioning.conftest import ALICE, BOB, MESSAGE, OpenSSL, Relay, ok


@pytest.mark.interop
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("keypool_settings", [{"key_type": "rsa2048"}], indirect=True)
def test_an_operator_provisions_signs_and_revokes_on_the_command_line(
    operator: Operator, openssl: OpenSSL
):
    ok(operator.run("init"))
    fill = ok(operator.run("keypool", "fill", "--jobs", "2", "--json"))
    assert fill.json() == {"added": 4, "free": 4, "size": 4}
    assert fill.stderr == "", "no progress bar when standard error is not a terminal"
    text = ok(operator.run("keypool", "status")).stdout
    assert text.startswith("rsa2048: 4 free of 4 (refilled below 2), 0 being generated, ")

    added = ok(operator.run("subscriber", "add", ALICE, "--provision", "--json")).json()
    fingerprint = added["certificate"]
    status = ok(operator.run("keypool", "status", "--json")).json()
    assert {k: status[k] for k in ("key_type", "size", "threshold", "free", "generating")} == {
        "key_type": "rsa2048",
        "size": 4,
        "threshold": 2,
        "free": 3,
        "generating": 0,
    }
    assert status["handed_out_last_hour"] == 1
    assert status["seconds_per_key"] > 0
    assert status["keys_per_second"] > 0
    ok(operator.run("ca", "export", "-o", "ca.pem"))
    (operator.directory / "message.eml").write_bytes(MESSAGE)
    outbound = ("process", "outbound", "--from", ALICE, "--to", BOB, "-i", "message.eml")

    sent = ok(operator.run(*outbound, "-o", "out", "--json")).json()
    [copy] = sent["messages"]
    assert (copy["signed"], copy["encrypted"]) == (True, False)
    signer = openssl.workdir / "signer.pem"
    content = openssl(
        "cms", "-verify", "-in", operator.directory / copy["file"],
        "-CAfile", operator.directory / "ca.pem", "-purpose", "smimesign", "-signer", signer,
    )  # fmt: skip
    assert b"Signed with a key from the pool." in content
    signed_by = x509.load_pem_x509_certificate(signer.read_bytes())
    assert signed_by.fingerprint(hashes.SHA256()).hex() == fingerprint

    revoked = ok(
        operator.run("cert", "revoke", fingerprint, "--reason", "superseded", "--json")
    ).json()
    assert revoked["address"] == ALICE

    refused = operator.run(*outbound, "-o", "out2", "--json")
    assert refused.status == 1
    result = refused.json()
    assert result["messages"] == []
    [deferred] = result["deferred"]
    assert "no signing key is known for alice@example.org" in deferred["reason"]
    # One store (policy_sql) took the CRL.
    assert (revoked["stores"], revoked["failed_stores"]) == (["policy_sql"], [])


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_keypool_status_reports_the_rate_of_keys_that_generate_in_under_a_millisecond(
    relay: Relay,
):
    # ec-p256 keys: a fraction of a millisecond each.
    assert relay.fill() == 4
    status = relay.status()
    assert status["free"] == 4
    assert status["seconds_per_key"] is not None
    assert status["seconds_per_key"] > 0
    assert status["keys_per_second"] is not None
    assert "no key generated yet" not in relay.admin("keypool status").text
