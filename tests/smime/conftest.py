from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from tests.conftest import require_executable
from tests.pki import TestIdentity, TestPKI, build_test_pki


# Every external call gets a deadline: a hanging peer must fail the test, not the whole run.
PEER_TIMEOUT = 60


@pytest.fixture(scope="session")
def pki() -> TestPKI:
    return build_test_pki()


def run(
    args: list[str], *, env: dict[str, str] | None = None, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        args, input=stdin, capture_output=True, env=env, timeout=PEER_TIMEOUT, check=False
    )


class PkiFiles:
    """The test PKI as PEM files, for the command-line peers."""

    def __init__(self, directory: Path, pki: TestPKI) -> None:
        self.directory = directory
        self.pki = pki
        self.root = directory / "root.pem"
        self.root.write_bytes(pki.root.public_bytes(Encoding.PEM))
        self.intermediate = directory / "intermediate.pem"
        self.intermediate.write_bytes(pki.intermediate.public_bytes(Encoding.PEM))
        # openssl cms has no -CRLfile: CRLs are read from the -CAfile bundle.
        self.root_and_crls = directory / "root-and-crls.pem"
        self.root_and_crls.write_bytes(
            self.root.read_bytes()
            + pki.crl.public_bytes(Encoding.PEM)
            + pki.root_crl.public_bytes(Encoding.PEM)
        )

    def identity(self, identity: TestIdentity) -> tuple[Path, Path]:
        """(certificate PEM, key PEM) of one identity; the certificate file holds only the leaf."""
        stem = (identity.address or "no-address").replace("@", "_at_")
        cert, key = self.directory / f"{stem}.leaf.pem", self.directory / f"{stem}.key.pem"
        if not cert.exists():
            cert.write_bytes(identity.cert_pem())
            key.write_bytes(identity.key_pem())
        return cert, key


@pytest.fixture(scope="session")
def pki_files(tmp_path_factory: pytest.TempPathFactory, pki: TestPKI) -> PkiFiles:
    return PkiFiles(tmp_path_factory.mktemp("pki"), pki)


@pytest.fixture(scope="session")
def openssl() -> str:
    return require_executable("openssl")


P12_PASSWORD = "interop"


class Gpgsm:
    """gpgsm with its own home: the test root trusted, CRL checks off (no dirmngr)."""

    def __init__(self, executable: str, home: Path, files: PkiFiles) -> None:
        self.executable = executable
        self.home = home
        self.files = files
        self.env = {**os.environ, "GNUPGHOME": str(home)}
        self.secret_keys: dict[str, str] = {}
        home.chmod(0o700)
        (home / "gpgsm.conf").write_text("disable-crl-checks\n")
        (home / "gpg-agent.conf").write_text("allow-loopback-pinentry\n")
        # gpgsm names certificates by their SHA-1 fingerprint
        fingerprint = files.pki.root.fingerprint(hashes.SHA1()).hex(":").upper()  # noqa: S303
        (home / "trustlist.txt").write_text(f"{fingerprint} S\n")
        for certificate in (files.root, files.intermediate):
            self.check("--import", str(certificate))

    def run(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        base = [self.executable, "--batch", "--status-fd", "1", "--pinentry-mode", "loopback"]
        return run([*base, *args], env=self.env, stdin=stdin)

    def check(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        result = self.run(*args, stdin=stdin)
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        return result

    def import_secret_key(self, identity: TestIdentity, openssl: str) -> str:
        """Imports key and certificate; returns the fingerprint to sign with (-u).

        gpgsm 2.2 cannot read OpenSSL 3's default PKCS#12 encryption: use 3DES/SHA-1.
        """
        cert, key = self.files.identity(identity)
        if cert.name in self.secret_keys:
            return self.secret_keys[cert.name]
        p12 = self.home / f"{cert.stem}.p12"
        made = run(
            [
                openssl, "pkcs12", "-export", "-keypbe", "PBE-SHA1-3DES",
                "-certpbe", "PBE-SHA1-3DES", "-macalg", "sha1", "-inkey", str(key),
                "-in", str(cert), "-passout", f"pass:{P12_PASSWORD}", "-out", str(p12),
            ]
        )  # fmt: skip
        assert made.returncode == 0, made.stderr.decode()
        self.check("--passphrase-fd", "0", "--import", str(p12), stdin=P12_PASSWORD.encode())
        fingerprint = identity.cert.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303
        self.secret_keys[cert.name] = fingerprint
        return fingerprint

    def sign(self, fingerprint: str, content: Path, output: Path, *, detached: bool) -> bytes:
        mode = "--detach-sign" if detached else "--sign"
        self.check(
            "--passphrase-fd", "0", "-u", fingerprint, mode, "-o", str(output), str(content),
            stdin=P12_PASSWORD.encode(),
        )  # fmt: skip
        return output.read_bytes()


@pytest.fixture(scope="session")
def gpgsm(tmp_path_factory: pytest.TempPathFactory, pki_files: PkiFiles) -> Iterator[Gpgsm]:
    executable = require_executable("gpgsm")
    # Short path: gpg-agent's socket lives in the home and Unix socket paths are limited.
    home = Path(tmp_path_factory.mktemp("gnupg", numbered=True))
    peer = Gpgsm(executable, home, pki_files)
    yield peer
    gpgconf = shutil.which("gpgconf")
    if gpgconf is not None:  # stops only the agent of this home
        run([gpgconf, "--kill", "all"], env=peer.env)
