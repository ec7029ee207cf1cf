"""The built-in CA's life (issue 6): made once by ``sealrelay init``, replaced by an imported
CA that OpenSSL made (refusing what cannot be a CA or does not match), and its settings and
the pool's checked when config.toml is read."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from sealrelay.core.config import parse_config
from sealrelay.exceptions import ConfigError
from tests.cli import Operator
from tests.plugins.provisioning.conftest import ALICE, OpenSSL, Relay, ok, pem, toml


sqlite_only = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

#: The line ``init`` prints when it makes the CA (not the one about the CA's schema).
CA_CREATED = re.compile(
    r"^certificate authority: created .+ \(ec-p256\), sha256 ([0-9a-f]{64});", re.M
)


@sqlite_only
def test_init_twice_creates_the_ca_once(operator: Operator):
    first = ok(operator.run("init"))
    [created] = CA_CREATED.findall(first.stdout)
    shown = ok(operator.run("ca", "show", "--json")).json()
    assert shown["fingerprint"] == created
    assert (shown["key_type"], shown["issued"], shown["revoked"]) == ("ec-p256", 0, 0)
    crl_file = Path(shown["crl_file"])
    crl = x509.load_der_x509_crl(crl_file.read_bytes())
    assert crl.issuer.rfc4514_string() == shown["subject"]

    second = ok(operator.run("init"))
    assert CA_CREATED.findall(second.stdout) == []
    assert "certificate authority" not in second.stdout
    assert ok(operator.run("ca", "show", "--json")).json() == shown
    ok(operator.run("ca", "export", "-o", "ca.pem"))
    exported = x509.load_pem_x509_certificate((operator.directory / "ca.pem").read_bytes())
    assert exported.subject.rfc4514_string() == shown["subject"]
    assert exported.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def openssl_ca(openssl: OpenSSL, name: str, *extra: str) -> tuple[Path, Path]:
    """A self-signed CA as ``openssl req -x509`` makes one (EC P-256, default extensions:
    basicConstraints CA:TRUE, no keyUsage)."""
    certificate, key = openssl.workdir / f"{name}.pem", openssl.workdir / f"{name}.key"
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-subj", f"/O=Example Org/CN={name}", "-days", "30", "-keyout", key, "-out", certificate,
        *extra,
    )  # fmt: skip
    return certificate, key


@pytest.mark.interop
@sqlite_only
def test_an_imported_openssl_ca_issues_from_then_on(
    relay: Relay, operator: Operator, openssl: OpenSSL
):
    relay.fill()
    before = relay.provision("before@example.org").certificate.x509
    builtin = relay.admin("ca show").data
    # An encrypted key, given with --password-file.
    (openssl.workdir / "pw").write_text("ca secret\n")
    certificate, key = openssl_ca(openssl, "Imported CA", "-passout", "pass:ca secret")
    assert b"ENCRYPTED" in key.read_bytes()
    run = ok(
        operator.run(
            "ca", "import", "--certificate", str(certificate), "--key", str(key),
            "--password-file", str(openssl.workdir / "pw"), "--json",
        )
    )  # fmt: skip
    imported = x509.load_pem_x509_certificate(certificate.read_bytes())
    assert run.json()["subject"] == imported.subject.rfc4514_string()

    shown = relay.admin("ca show").data
    assert shown["subject"] == "CN=Imported CA,O=Example Org"
    assert (shown["issued"], shown["fingerprint"]) == (0, run.json()["fingerprint"])
    exported = relay.export_ca()
    assert x509.load_pem_x509_certificate(exported.read_bytes()) == imported
    # The CRL file is now the imported CA's.
    assert relay.crl().issuer == imported.subject

    after = relay.provision(ALICE).certificate.x509
    assert after.issuer == imported.subject
    leaf = openssl.file("alice.pem", pem(after))
    assert openssl("verify", "-purpose", "smimesign", "-CAfile", certificate, leaf).strip() == (
        f"{leaf}: OK".encode()
    )
    old_leaf = openssl.file("before.pem", pem(before))
    assert openssl.attempt("verify", "-CAfile", certificate, old_leaf).returncode != 0
    assert before.issuer.rfc4514_string() == builtin["subject"]


@pytest.mark.interop
@sqlite_only
def test_ca_import_refuses_what_cannot_be_the_ca(
    relay: Relay, operator: Operator, openssl: OpenSSL
):
    fingerprint = relay.admin("ca show").data["fingerprint"]
    ca, ca_key = openssl_ca(openssl, "Good CA", "-nodes")
    other, other_key = openssl_ca(openssl, "Other CA", "-nodes")
    # A subscriber's certificate: no basicConstraints CA:TRUE.
    leaf_key, request, leaf = (openssl.workdir / n for n in ("leaf.key", "leaf.csr", "leaf.pem"))
    openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-subj", "/CN=leaf", "-keyout", leaf_key, "-out", request,
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-days", "30", "-out", leaf
    )
    # A CA whose keyUsage does not allow signing certificates and CRLs.
    signer_only, signer_only_key = openssl_ca(
        openssl, "Signer Only", "-nodes", "-addext", "keyUsage=critical,digitalSignature"
    )
    refusals = [
        (leaf, leaf_key, "is not a CA certificate"),
        (ca, other_key, "the private key does not belong to the CA certificate"),
        (signer_only, signer_only_key, "may not sign certificates and CRLs"),
    ]
    for certificate, key, message in refusals:
        run = operator.run("ca", "import", "--certificate", str(certificate), "--key", str(key))
        assert run.status == 1, (message, run.stdout, run.stderr)
        [line] = run.stderr.splitlines()
        assert line.startswith("sealrelay: error: ")
        assert message in line
    assert relay.admin("ca show").data["fingerprint"] == fingerprint
    assert other.exists()


BAD_SETTINGS = [
    pytest.param(
        {"keypool": {"key_type": "rsa1024"}},
        "[keypool] key_type = 'rsa1024': expected one of rsa2048, rsa3072, rsa4096, ec-p256, "
        "ec-p384",
        id="keypool-key-type",
    ),
    pytest.param(
        {"ca": {"key_type": "ed25519"}},
        "[ca] key_type = 'ed25519': expected one of",
        id="ca-key-type",
    ),
    pytest.param(
        {"keypool": {"size": 4, "threshold": 5}},
        "[keypool] threshold = 5 must be between 0 and size (4)",
        id="threshold-above-size",
    ),
    pytest.param(
        {"keypool": {"size": 4, "threshold": -1}},
        "[keypool] threshold = -1 must be between 0 and size (4)",
        id="negative-threshold",
    ),
    pytest.param(
        {"ca": {"crl_distribution_point": "crl.example.org/ca.crl"}},
        "[ca] crl_distribution_point = 'crl.example.org/ca.crl': expected an http://, https:// "
        "or ldap:// URL",
        id="crl-url-without-scheme",
    ),
    pytest.param(
        {"ca": {"crl_distribution_point": "ftp://crl.example.org/ca.crl"}},
        "[ca] crl_distribution_point = 'ftp://crl.example.org/ca.crl'",
        id="crl-url-ftp",
    ),
    pytest.param(
        {"ca": {"crl_distribution_point": "http://"}},
        "[ca] crl_distribution_point = 'http://'",
        id="crl-url-without-host",
    ),
    pytest.param(
        {"ca": {"crl_distribution_point": "http://crl.example.org/sealrelay ca.crl"}},
        "[ca] crl_distribution_point = 'http://crl.example.org/sealrelay ca.crl'",
        id="crl-url-with-space",
    ),
]


@pytest.mark.parametrize(("settings", "message"), BAD_SETTINGS)
def test_bad_ca_and_pool_settings_are_config_errors(tmp_path: Path, settings: Any, message: str):
    with pytest.raises(ConfigError) as raised:
        parse_config(settings, tmp_path / "config.toml")
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("keypool_settings", [{"key_type": "rsa1024"}], indirect=True)
def test_a_bad_key_type_stops_the_command_line_with_one_line(
    tmp_path: Path, keypool_settings, ca_settings
):
    (tmp_path / "config.toml").write_text(toml({"keypool": keypool_settings, "ca": ca_settings}))
    run = Operator(tmp_path).run("keypool", "status")
    assert run.status == 2
    assert run.stderr.splitlines() == [
        "sealrelay: error: [keypool] key_type = 'rsa1024': expected one of rsa2048, rsa3072, "
        "rsa4096, ec-p256, ec-p384"
    ]


@pytest.mark.interop
@sqlite_only
def test_a_ca_the_relay_cannot_issue_with_is_refused_not_half_imported(
    relay: Relay, operator: Operator, openssl: OpenSSL
):
    """An Ed25519 CA (``openssl req -newkey ed25519``): either the relay issues and publishes
    CRLs with it, or ``ca import`` refuses it with a clear message and the CA in use stays."""
    builtin = relay.admin("ca show").data["fingerprint"]
    certificate, key = openssl.workdir / "ed.pem", openssl.workdir / "ed.key"
    openssl(
        "req", "-x509", "-newkey", "ed25519", "-nodes", "-subj", "/CN=Ed25519 CA",
        "-days", "30", "-keyout", key, "-out", certificate,
    )  # fmt: skip
    run = operator.run("ca", "import", "--certificate", str(certificate), "--key", str(key))
    ca = x509.load_pem_x509_certificate(certificate.read_bytes())
    if run.status == 0:
        issued = relay.provision(ALICE).certificate.x509
        issued.verify_directly_issued_by(ca)
        assert relay.crl().issuer == ca.subject
    else:
        [line] = run.stderr.splitlines()
        assert run.status == 1
        assert line.startswith("sealrelay: error: ")
        assert "unexpectedly" not in line, "an operator error, not a crash"
        # The CA in use is unchanged and still issues.
        assert relay.admin("ca show").data["fingerprint"] == builtin
        issued = relay.provision(ALICE).certificate.x509
        assert issued.issuer != ca.subject


@pytest.mark.interop
@sqlite_only
def test_revoking_a_certificate_of_the_previous_ca_publishes_a_crl_listing_it(
    relay: Relay, openssl: OpenSSL
):
    relay.fill()
    old_ca = x509.load_pem_x509_certificate(relay.export_ca().read_bytes())
    old = relay.provision("before@example.org")
    certificate, key = openssl_ca(openssl, "Next CA", "-nodes")
    relay.admin("ca import", certificate=certificate, key=key)

    revoked = relay.admin("cert revoke", fingerprint=old.certificate.fingerprint).data
    # The store knows at once ...
    statuses = {row["fingerprint"]: row["status"] for row in relay.admin("cert list").data}
    assert statuses[old.certificate.fingerprint] == "revoked"
    # ... and so must the correspondents, from the CRL the command says it published.
    published = x509.load_der_x509_crl(Path(revoked["crl_file"]).read_bytes())
    assert published.issuer == old_ca.subject
    assert published.is_signature_valid(old_ca.public_key())  # type: ignore[arg-type]
    serial = old.certificate.x509.serial_number
    assert published.get_revoked_certificate_by_serial_number(serial) is not None
