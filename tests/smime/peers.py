"""The OpenSSL and gpgsm command lines as CMS encryption peers for the interop tests."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from tests.conftest import require_executable
from tests.pki import TestIdentity, TestPKI


P12_PASSPHRASE = "interop-passphrase"


def run(args: Sequence[str | Path], *, stdin: bytes | None = None) -> bytes:
    """stdout of a peer command; a failure shows the command and its stderr."""
    result = subprocess.run(
        [str(a) for a in args], input=stdin, capture_output=True, timeout=60, check=False
    )
    if result.returncode != 0:
        command = " ".join(str(a) for a in args)
        raise AssertionError(
            f"{command} exited {result.returncode}:\n{result.stderr.decode(errors='replace')}"
        )
    return result.stdout


@attrs.frozen
class OpenSSL:
    path: str
    workdir: Path

    def decrypt(self, der: bytes, identity: TestIdentity) -> bytes:
        cert, key = identity.write_pem_files(self.workdir)
        message = self.workdir / "in.der"
        message.write_bytes(der)
        return run(
            [
                self.path,
                "cms",
                "-decrypt",
                "-binary",
                "-inform",
                "DER",
                "-in",
                message,
                "-recip",
                cert,
                "-inkey",
                key,
            ]
        )

    def encrypt(
        self,
        content: bytes,
        recipients: Sequence[tuple[TestIdentity, Sequence[str]]],
        options: Sequence[str],
    ) -> bytes:
        """`recipients` pairs an identity with its -keyopt options (e.g. rsa_padding_mode:oaep)."""
        plain = self.workdir / "plain.bin"
        plain.write_bytes(content)
        args: list[str | Path] = [self.path, "cms", "-encrypt", "-binary", *options]
        args += ["-in", plain, "-outform", "DER"]
        for identity, keyopts in recipients:
            cert_path = self.workdir / f"{identity.cert.serial_number:x}.pem"
            cert_path.write_bytes(identity.cert_pem())
            args += ["-recip", cert_path]
            for keyopt in keyopts:
                args += ["-keyopt", keyopt]
        return run(args)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@attrs.frozen
class Gpgsm:
    """gpgsm 2.2 with its own GNUPGHOME: trusts the test root, skips CRLs, no pinentry."""

    path: str
    gpgconf: str
    openssl: str
    home: Path

    @classmethod
    def create(cls, home: Path, pki: TestPKI) -> Gpgsm:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        (home / "gpgsm.conf").write_text("disable-crl-checks\n")
        # gpgsm's trustlist names a root by its SHA-1 fingerprint.
        fingerprint = pki.root.fingerprint(hashes.SHA1()).hex(":").upper()  # noqa: S303
        (home / "trustlist.txt").write_text(f"{fingerprint} S relax\n")
        gpgsm = cls(
            path=require_executable("gpgsm"),
            gpgconf=require_executable("gpgconf"),
            openssl=require_executable("openssl"),
            home=home,
        )
        chain = home / "chain.pem"
        chain.write_bytes(_pem(pki.root) + _pem(pki.intermediate))
        gpgsm.run(["--import", chain])
        return gpgsm

    def run(self, args: Sequence[str | Path], *, stdin: bytes | None = None) -> bytes:
        return run(
            [self.path, "--homedir", self.home, "--batch", "--pinentry-mode", "loopback", *args],
            stdin=stdin,
        )

    def import_certificate(self, identity: TestIdentity) -> None:
        path = self.home / "import.pem"
        path.write_bytes(identity.cert_pem())
        self.run(["--import", path])

    def import_key(self, identity: TestIdentity) -> None:
        # gpgsm 2.2 reads only the legacy PBE-SHA1-3DES PKCS#12 (not OpenSSL 3's PBES2 default).
        cert, key = identity.write_pem_files(self.home)
        p12 = self.home / "identity.p12"
        run(
            [
                self.openssl,
                "pkcs12",
                "-export",
                "-in",
                cert,
                "-inkey",
                key,
                "-out",
                p12,
                "-keypbe",
                "PBE-SHA1-3DES",
                "-certpbe",
                "PBE-SHA1-3DES",
                "-macalg",
                "sha1",
                "-passout",
                f"pass:{P12_PASSPHRASE}",
            ]
        )
        self.run(["--passphrase-fd", "0", "--import", p12], stdin=f"{P12_PASSPHRASE}\n".encode())

    def decrypt(self, der: bytes) -> bytes:
        message = self.home / "in.der"
        message.write_bytes(der)
        return self.run(
            ["--passphrase-fd", "0", "--decrypt", message], stdin=f"{P12_PASSPHRASE}\n".encode()
        )

    def encrypt(self, content: bytes, address: str, cipher_algo: str | None) -> bytes:
        plain = self.home / "plain.bin"
        plain.write_bytes(content)
        options = ["--cipher-algo", cipher_algo] if cipher_algo else []
        return self.run([*options, "--encrypt", "-r", address, plain])

    def stop(self) -> None:
        subprocess.run(
            [self.gpgconf, "--homedir", str(self.home), "--kill", "all"],
            capture_output=True,
            timeout=30,
            check=False,
        )
