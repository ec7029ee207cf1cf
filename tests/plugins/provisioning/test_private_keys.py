"""Private keys at rest and on their way out (issue 6): neither a provisioned key, nor a
pooled one, nor the CA's key is ever in the database in the clear; ``identity export``
writes a PKCS#12 file only its owner reads, never over another file, that OpenSSL opens with
the password it printed."""

from __future__ import annotations

import re
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from sealrelay.plugins import ca_builtin, keypool
from tests.cli import Operator
from tests.plugins.provisioning.conftest import ALICE, OpenSSL, Relay, ok


def secret_fragments(key: PrivateKeyTypes) -> list[bytes]:
    """Byte strings that would betray the key: its PKCS#8 and traditional DER, and its
    secret numbers."""
    encodings = [
        key.private_bytes(serialization.Encoding.DER, fmt, serialization.NoEncryption())
        for fmt in (
            serialization.PrivateFormat.PKCS8,
            serialization.PrivateFormat.TraditionalOpenSSL,
        )
    ]
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = [key.private_numbers().d, key.private_numbers().p, key.private_numbers().q]
    else:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        numbers = [key.private_numbers().private_value]
    raw = [n.to_bytes((n.bit_length() + 7) // 8, "big") for n in numbers]
    return [*encodings, *raw]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("keypool_settings", "ca_settings"),
    [({"key_type": "rsa2048", "size": 3}, {"key_type": "rsa2048"})],
    indirect=True,
)
def test_no_private_key_is_in_the_database_file_in_the_clear(relay: Relay):
    assert relay.fill() == 3
    provisioned = relay.provision(ALICE).private_key
    assert relay.fill() == 1
    signer = ca_builtin.authority.active()
    assert signer is not None
    sqlite_file = relay.backend.sqlite_file
    assert sqlite_file is not None
    # The database and its write-ahead log, as they are on disk now.
    stored = b"".join(
        path.read_bytes() for path in sorted(sqlite_file.parent.glob(sqlite_file.name + "*"))
    )
    assert len(stored) > 10_000
    # The keys still in the pool were in the database as the bytes were read.
    pooled = [keypool.pool.take("rsa2048") for _ in range(3)]
    assert relay.status()["handed_out_last_hour"] == 4

    for name, key in [("provisioned", provisioned), ("CA", signer.key)] + [
        (f"pooled {n}", k) for n, k in enumerate(pooled)
    ]:
        for fragment in secret_fragments(key):
            assert fragment not in stored, f"the {name} key is in the database in the clear"


def export(operator: Operator, *args: str):
    return operator.run("identity", "export", ALICE, *args)


def pkcs12_info(openssl: OpenSSL, path, password: str) -> str:
    """What openssl reads in a PKCS#12 file: its algorithms, key and certificate (PEM)."""
    result = openssl.attempt(
        "pkcs12", "-info", "-in", path, "-passin", f"pass:{password}", "-nodes"
    )
    assert result.returncode == 0, result.stderr.decode()
    return (result.stdout + result.stderr).decode()


def key_matches_certificate(openssl: OpenSSL, info: str, fingerprint: str) -> None:
    key = re.search(r"-----BEGIN PRIVATE KEY-----.+?-----END PRIVATE KEY-----\n", info, re.S)
    certificates = re.findall(
        r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n", info, re.S
    )
    assert key is not None
    assert len(certificates) == 2, "the certificate and the CA certificate"
    key_file = openssl.file("key.pem", key.group(0).encode())
    leaf = None
    for number, certificate in enumerate(certificates):
        path = openssl.file(f"cert{number}.pem", certificate.encode())
        if (
            openssl("x509", "-in", path, "-noout", "-fingerprint", "-sha256")
            .decode()
            .split("=")[1]
            .strip()
            .replace(":", "")
            .lower()
            == fingerprint
        ):
            leaf = path
    assert leaf is not None, "the provisioned certificate is in the file"
    assert openssl("pkey", "-in", key_file, "-pubout") == openssl(
        "x509", "-in", leaf, "-noout", "-pubkey"
    )


@pytest.mark.interop
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_identity_export_writes_a_private_pkcs12_file_openssl_opens(
    operator: Operator, openssl: OpenSSL
):
    ok(operator.run("init"))
    added = ok(operator.run("subscriber", "add", ALICE, "--provision", "--json")).json()
    fingerprint = added["certificate"]
    directory = operator.directory

    # Default: AES-256 and SHA-256, a new password printed once.
    run = ok(export(operator, "-o", "alice.p12"))
    [password] = re.findall(r"^password: (\S+)$", run.stdout, re.M)
    path = directory / "alice.p12"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    info = pkcs12_info(openssl, path, password)
    assert "AES-256-CBC" in info
    assert "MAC: sha256" in info
    key_matches_certificate(openssl, info, fingerprint)
    wrong = openssl.attempt("pkcs12", "-in", path, "-passin", "pass:wrong", "-nodes")
    assert wrong.returncode != 0

    # An existing file is never replaced.
    written = path.read_bytes()
    again = export(operator, "-o", "alice.p12")
    assert again.status != 0
    assert "exists already" in again.stderr
    assert "password" not in again.stdout
    assert path.read_bytes() == written

    # --legacy: 3DES and a SHA-1 MAC, for older clients.
    run = ok(export(operator, "-o", "legacy.p12", "--legacy"))
    [password] = re.findall(r"^password: (\S+)$", run.stdout, re.M)
    legacy = directory / "legacy.p12"
    assert stat.S_IMODE(legacy.stat().st_mode) == 0o600
    info = pkcs12_info(openssl, legacy, password)
    assert "pbeWithSHA1And3-KeyTripleDES-CBC" in info
    assert "MAC: sha1" in info
    key_matches_certificate(openssl, info, fingerprint)

    # A password of one's own: not printed.
    (directory / "pw").write_text("my own secret\n")
    run = ok(export(operator, "-o", "own.p12", "--password-file", "pw"))
    assert "my own secret" not in run.stdout
    assert "password" not in run.stdout
    key_matches_certificate(
        openssl, pkcs12_info(openssl, directory / "own.p12", "my own secret"), fingerprint
    )
