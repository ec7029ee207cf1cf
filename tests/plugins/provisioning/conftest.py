"""Fixtures for the provisioning tests (issue 6): the built-in CA and the key pool on the
policy store's backends (SQLite, and PostgreSQL from SEALRELAY_TEST_POSTGRES_URL).

The ``backend``, ``make_config``, ``plugins``, ``bus`` and ``admin`` fixtures are the policy
store's own (``tests/plugins/policy_sql/conftest.py``), imported here; only ``config`` is
replaced, to give the CA and the pool small, fast settings (EC P-256 keys). A test changes
them with ``@pytest.mark.parametrize("keypool_settings", [{...}], indirect=True)`` (and
``ca_settings``), which are merged over the defaults below.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding

from sealrelay.core.bus import MessageBus
from sealrelay.core.certificate import Identity
from sealrelay.core.config import Config
from sealrelay.core.master_key import ensure_master_key
from sealrelay.plugins import keypool
from tests.cli import Operator, Run
from tests.conftest import require_executable
from tests.plugins.policy_sql import conftest as policy_sql
from tests.plugins.policy_sql.conftest import Admin, Backend


# The policy store's fixtures, reused as they are (pytest finds fixtures by their names here).
backend = policy_sql.backend
make_config = policy_sql.make_config
plugins = policy_sql.plugins
bus = policy_sql.bus
admin = policy_sql.admin


ALICE = "alice@example.org"
BOB = "bob@partner.example"

#: A pool that fills in milliseconds; a replenisher that looks every second.
KEYPOOL: Mapping[str, Any] = {
    "size": 4,
    "threshold": 2,
    "key_type": "ec-p256",
    "check_interval": 1,
}
CRL_URL = "http://crl.example.org/sealrelay.crl"
CA: Mapping[str, Any] = {"key_type": "ec-p256", "crl_distribution_point": CRL_URL}

#: A plain message a subscriber sends out.
MESSAGE = (
    b"From: Alice <alice@example.org>\r\nTo: bob@partner.example\r\n"
    b"Subject: provisioned\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    b"Signed with a key from the pool.\r\n"
)


@pytest.fixture
def keypool_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    return {**KEYPOOL, **getattr(request, "param", {})}


@pytest.fixture
def ca_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    return {**CA, **getattr(request, "param", {})}


@pytest.fixture
def document(keypool_settings: dict[str, Any], ca_settings: dict[str, Any]) -> dict[str, Any]:
    """The config.toml of the test, as a mapping (storage and master key from ``backend``)."""
    return {"keypool": keypool_settings, "ca": ca_settings}


@pytest.fixture
def config(make_config: Callable[..., Config], document: dict[str, Any]) -> Config:
    config = make_config(document)
    ensure_master_key(config)
    return config


def toml(document: Mapping[str, Mapping[str, Any]]) -> str:
    """Tables of strings, integers, booleans and lists of strings as TOML."""
    lines = []
    for section, table in document.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in table.items())
        lines.append("")
    return "\n".join(lines)


@pytest.fixture
def config_file(backend: Backend, config: Config, document: dict[str, Any]) -> Path:
    """The same configuration as ``config`` as a file, for the command line and for other
    processes: same database, same master key, same data directory."""
    path = config.path
    assert path == backend.tmp_path / "config.toml"
    storage = {"url": backend.url, "data_dir": str(config.data_dir)}
    security = {"master_key_file": str(config.resolve(config.security.master_key_file))}
    path.write_text(toml({"storage": storage, "security": security, **document}))
    return path


@pytest.fixture
def operator(config_file: Path) -> Operator:
    """The real ``sealrelay`` command, run in the test's directory against its config."""
    return Operator(config_file.parent)


def ok(run: Run) -> Run:
    assert run.status == 0, (
        f"exit status {run.status}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    )
    return run


@attrs.define
class OpenSSL:
    """The openssl command line, in a working directory."""

    path: str
    workdir: Path

    def attempt(
        self, *args: str | Path, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [self.path, *(str(a) for a in args)],
            input=stdin,
            capture_output=True,
            timeout=60,
            check=False,
        )

    def __call__(self, *args: str | Path, stdin: bytes | None = None) -> bytes:
        """stdout of a command that must succeed; a failure shows its stderr."""
        result = self.attempt(*args, stdin=stdin)
        if result.returncode != 0:
            command = " ".join(str(a) for a in args)
            raise AssertionError(
                f"openssl {command} exited {result.returncode}:\n"
                f"{result.stderr.decode(errors='replace')}"
            )
        return result.stdout

    def file(self, name: str, content: bytes) -> Path:
        path = self.workdir / name
        path.write_bytes(content)
        return path


@pytest.fixture
def openssl(tmp_path: Path) -> OpenSSL:
    workdir = tmp_path / "openssl"
    workdir.mkdir()
    return OpenSSL(require_executable("openssl"), workdir)


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(Encoding.PEM)


def public_der(key: Any) -> bytes:
    """The SubjectPublicKeyInfo of a private or public key, to tell keys apart."""
    public = key.public_key() if hasattr(key, "private_bytes") else key
    der: bytes = public.public_bytes(Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return der


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what}")
        time.sleep(0.05)


@attrs.define
class Relay:
    """A relay after ``sealrelay init``, driven in this process through its bus and the
    administrative commands (the same registry the CLI runs)."""

    backend: Backend
    config: Config
    bus: MessageBus
    admin: Admin

    @property
    def directory(self) -> Path:
        return self.backend.tmp_path

    def provision(self, address: str) -> Identity:
        return self.bus.provision(address)

    def fill(self) -> int:
        """Fill the pool to its size in this process (what a replenisher does)."""
        return keypool.pool.replenish()

    def status(self) -> dict[str, Any]:
        return dict(self.admin("keypool status").data)

    def export_ca(self) -> Path:
        path = self.directory / "exported-ca.pem"
        self.admin("ca export", output=path)
        return path

    @property
    def crl_file(self) -> Path:
        return self.config.resolve(self.config.ca.crl_file)

    def crl(self) -> x509.CertificateRevocationList:
        return x509.load_der_x509_crl(self.crl_file.read_bytes())

    def issued_certificates(self) -> list[x509.Certificate]:
        """Every subscriber certificate the stores keep (read from the database)."""
        with self.backend.raw() as db:
            rows = db.execute_sql(
                "SELECT der FROM sr_certificates WHERE source = 'issued' AND NOT is_ca ORDER BY id"
            ).fetchall()
        return [x509.load_der_x509_certificate(bytes(der)) for (der,) in rows]


@pytest.fixture
def relay(backend: Backend, config: Config, bus: MessageBus, admin: Admin) -> Relay:
    admin("init")
    return Relay(backend, config, bus, admin)
