"""Private keys at rest: sealed under the master key, never in the database in the clear, and a
wrong master key is an error that says so."""

from __future__ import annotations

import base64
import secrets

import pytest
from cryptography.hazmat.primitives import serialization

from sealrelay import SealrelayError
from sealrelay.core.bus import MessageBus
from sealrelay.core.envelope import Envelope
from sealrelay.core.sealed_keys import SealedKeyError, seal_private_key, unseal_private_key
from sealrelay.plugins.policy_sql import models, store
from tests.pki import build_test_pki
from tests.plugins.policy_sql.conftest import write_pkcs12


MASTER = secrets.token_bytes(32)


@pytest.fixture
def pki():
    return build_test_pki()


def secret_fragments(key) -> list[bytes]:
    """Byte strings that would betray the key: its encodings, and its secret numbers."""
    encodings = [
        key.private_bytes(serialization.Encoding.DER, fmt, serialization.NoEncryption())
        for fmt in (
            serialization.PrivateFormat.PKCS8,
            serialization.PrivateFormat.TraditionalOpenSSL,
        )
    ]
    numbers = key.private_numbers()
    secrets_ = [numbers.d, numbers.p, numbers.q]
    raw = [n.to_bytes((n.bit_length() + 7) // 8, "big") for n in secrets_]
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    body = b"".join(pem.splitlines()[1:-1])
    return [*encodings, *raw, body[:64], base64.b16encode(raw[0]).lower()[:64]]


def test_seal_and_unseal_round_trip(pki):
    for identity in (pki.rsa2048, pki.p256, pki.ed25519):
        sealed = seal_private_key(MASTER, identity.key, binding="fp-1")
        opened = unseal_private_key(MASTER, sealed, binding="fp-1")
        assert opened.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ) == identity.key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def test_sealing_twice_gives_different_bytes(pki):
    assert seal_private_key(MASTER, pki.p256.key, binding="x") != seal_private_key(
        MASTER, pki.p256.key, binding="x"
    )


def test_a_wrong_master_key_is_named_as_such(pki):
    sealed = seal_private_key(MASTER, pki.p256.key, binding="fp-1")
    with pytest.raises(SealedKeyError, match="sealed under another master key"):
        unseal_private_key(secrets.token_bytes(32), sealed, binding="fp-1")


def test_another_binding_or_altered_bytes_do_not_authenticate(pki):
    sealed = seal_private_key(MASTER, pki.p256.key, binding="fp-1")
    with pytest.raises(SealedKeyError, match="does not authenticate"):
        unseal_private_key(MASTER, sealed, binding="fp-2")
    altered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(SealedKeyError, match="does not authenticate"):
        unseal_private_key(MASTER, altered, binding="fp-1")
    with pytest.raises(SealedKeyError, match="format"):
        unseal_private_key(MASTER, b"-----BEGIN PRIVATE KEY-----", binding="fp-1")


def stored_bytes(backend) -> bytes:
    """Everything the database holds: the SQLite files byte for byte, or every value of every
    table on PostgreSQL."""
    if backend.sqlite_file is not None:
        files = [
            backend.sqlite_file,
            backend.sqlite_file.with_name(backend.sqlite_file.name + "-wal"),
        ]
        return b"".join(path.read_bytes() for path in files if path.exists())
    chunks = []
    with backend.raw() as db:
        for model in models.MODELS:
            select = f"SELECT * FROM {model._meta.table_name}"  # noqa: S608 - our own tables
            for row in db.execute_sql(select).fetchall():
                for value in row:
                    chunks.append(
                        bytes(value)
                        if isinstance(value, bytes | memoryview)
                        else str(value).encode()
                    )
    return b"\x00".join(chunks)


def test_the_database_holds_no_private_key_in_the_clear(admin, bus, backend, pki, tmp_path):
    p12 = write_pkcs12(tmp_path / "alice.p12", pki.rsa2048, None)
    admin("identity import", file=p12)
    identity = bus.plugins.pm.hook.sealrelay_signing_identity(address="alice@example.org")
    assert identity is not None
    content = stored_bytes(backend)
    certificate = pki.rsa2048.cert.public_bytes(serialization.Encoding.DER)
    assert certificate in content  # the check looks at the right bytes
    for fragment in secret_fragments(pki.rsa2048.key):
        assert fragment not in content


def test_a_wrong_master_key_defers_signing_with_a_clear_reason(
    admin, bus, make_config, tmp_path, monkeypatch
):
    pki = build_test_pki()
    admin("identity import", file=write_pkcs12(tmp_path / "alice.p12", pki.rsa2048, None))
    monkeypatch.setenv("SEALRELAY_MASTER_KEY", base64.b64encode(secrets.token_bytes(32)).decode())
    other = make_config()
    with pytest.raises(
        SealrelayError, match=r"sealed under master key id .* configured master key has id"
    ):
        MessageBus(bus.plugins, other).open()
    # a process that opened before the key changed still refuses, message by message
    store.configure(other)
    envelope = Envelope(sender="alice@example.org", recipients=("bob@example.net",))
    result = bus.process_outbound(envelope, b"From: alice@example.org\r\n\r\nhi\r\n")
    assert result.messages == ()
    [deferred] = result.deferred
    assert "sealed under another master key" in deferred.reason


def test_importing_under_another_master_key_is_refused(admin, pki, tmp_path, monkeypatch):
    admin("identity import", file=write_pkcs12(tmp_path / "alice.p12", pki.rsa2048, None))
    monkeypatch.setenv("SEALRELAY_MASTER_KEY", base64.b64encode(secrets.token_bytes(32)).decode())
    with pytest.raises(SealrelayError, match="sealed under master key id"):
        admin("identity import", file=write_pkcs12(tmp_path / "bob.p12", pki.rsa3072, None))
