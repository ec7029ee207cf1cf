"""Fixtures for the SQL policy store: every store test runs on SQLite and on PostgreSQL.

PostgreSQL comes from ``SEALRELAY_TEST_POSTGRES_URL`` (``scripts/services/postgres-up.sh``
prints one). Each test gets a schema of its own in that database, dropped afterwards. Without
the variable the PostgreSQL half is skipped loudly, or fails when SEALRELAY_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import os
import secrets
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import peewee
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from sealrelay.core.bus import MessageBus
from sealrelay.core.commands import CommandContext, CommandRegistry, CommandResult
from sealrelay.core.config import Config, parse_config
from sealrelay.core.master_key import ensure_master_key
from sealrelay.core.plugins import LoadedPlugins, load_plugins
from sealrelay.plugins import BUILTIN_PLUGINS
from tests.conftest import services_required
from tests.pki import TestIdentity


ENV_POSTGRES_URL = "SEALRELAY_TEST_POSTGRES_URL"
BACKENDS = ("sqlite", "postgresql")


def postgres_url() -> str:
    url = os.environ.get(ENV_POSTGRES_URL)
    if not url:
        reason = (
            f"{ENV_POSTGRES_URL} is not set: start PostgreSQL with "
            f"`export {ENV_POSTGRES_URL}=$(scripts/services/postgres-up.sh)`"
        )
        if services_required():
            pytest.fail(reason)
        pytest.skip(f"SKIPPED LOUDLY: {reason}")
    return url


def with_search_path(url: str, schema: str) -> str:
    """*url* with every connection's search_path set to *schema* (a libpq option)."""
    separator = "&" if "?" in url else "?"
    options = urllib.parse.quote(f"-csearch_path={schema}")
    return f"{url}{separator}options={options}"


@attrs.frozen
class Backend:
    name: str
    #: The storage URL the store is configured with.
    url: str
    tmp_path: Path

    @property
    def sqlite_file(self) -> Path | None:
        return Path(self.url.removeprefix("sqlite:///")) if self.name == "sqlite" else None

    def raw(self) -> peewee.Database:
        """A plain connection to the same database, for looking at what was stored."""
        if self.name == "sqlite":
            return peewee.SqliteDatabase(str(self.sqlite_file))
        return peewee.PostgresqlDatabase(self.url, prefer_psycopg3=True)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield Backend("sqlite", f"sqlite:///{tmp_path / 'var' / 'sealrelay.db'}", tmp_path)
        return
    base = postgres_url()
    schema = f"t_{secrets.token_hex(6)}"
    admin = peewee.PostgresqlDatabase(base, prefer_psycopg3=True)
    admin.execute_sql(f"CREATE SCHEMA {schema}")
    try:
        yield Backend("postgresql", with_search_path(base, schema), tmp_path)
    finally:
        admin.execute_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


@pytest.fixture
def make_config(backend: Backend) -> Callable[..., Config]:
    """A config on *backend*, data directory and master key in tmp_path."""

    def make(document: dict[str, Any] | None = None) -> Config:
        document = dict(document or {})
        document.setdefault(
            "storage", {"url": backend.url, "data_dir": str(backend.tmp_path / "var")}
        )
        document.setdefault(
            "security", {"master_key_file": str(backend.tmp_path / "var" / "master.key")}
        )
        return parse_config(document, backend.tmp_path / "config.toml")

    return make


@pytest.fixture
def config(make_config: Callable[..., Config]) -> Config:
    config = make_config()
    ensure_master_key(config)
    return config


@pytest.fixture
def plugins(config: Config) -> LoadedPlugins:
    return load_plugins(config, builtins=BUILTIN_PLUGINS, entry_points=False)


@pytest.fixture
def bus(plugins: LoadedPlugins, config: Config) -> Iterator[MessageBus]:
    with MessageBus(plugins, config) as bus:
        yield bus


@attrs.define
class Admin:
    """Runs administrative commands through the registry, as the CLI and console do."""

    plugins: LoadedPlugins
    config: Config
    actor: str = "test:admin"

    def __call__(self, name: str, **params: Any) -> CommandResult:
        registry = CommandRegistry.from_plugins(self.plugins)
        context = CommandContext(config=self.config, plugins=self.plugins, actor=self.actor)
        return registry.execute(name, params, context)


@pytest.fixture
def admin(plugins: LoadedPlugins, config: Config, bus: MessageBus) -> Admin:
    return Admin(plugins, config)


def der(identity: TestIdentity) -> bytes:
    return identity.cert.public_bytes(serialization.Encoding.DER)


def write_pkcs12(
    path: Path, identity: TestIdentity, password: bytes | None, *, legacy: bool = False
) -> Path:
    """A PKCS#12 file as a mail client exports it: modern (AES, PBKDF2) or the legacy kind
    (3DES, SHA-1 MAC) older clients still produce."""
    if password is None:
        encryption: serialization.KeySerializationEncryption = serialization.NoEncryption()
    elif legacy:
        encryption = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(2048)
            .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
            .hmac_hash(hashes.SHA1())  # noqa: S303 - the legacy format under test
            .build(password)
        )
    else:
        encryption = serialization.BestAvailableEncryption(password)
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(
            name=(identity.address or "key").encode(),
            key=identity.key,  # type: ignore[arg-type]
            cert=identity.cert,
            cas=list(identity.chain),
            encryption_algorithm=encryption,
        )
    )
    return path
