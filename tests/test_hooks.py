"""One test per hook, named ``test_hook_<hook name>`` (datasette's convention; a meta-test in
``tests/hookspecs`` checks that none is missing).

Each test registers small, real plugins (class instances or module-like objects) on a freshly
loaded plugin manager and drives the hook through the public surface: the MessageBus with real
RFC 5322 messages, the CommandRegistry, ``load_plugins``. It asserts what an operator or a
correspondent would observe: which message leaves, signed how, encrypted to whom, deferred or
rejected for what reason.

The cryptography in here is a *toy* (a fingerprint stands in for a signature, base64 for a
cipher) wrapped in real S/MIME content types, so that the bus classifies the layers exactly as
it classifies real ones. The hook contract is under test, not a cipher: the S/MIME library has
its own tests. The certificates are real X.509, from a tiny CA generated per test session.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import logging
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import attrs
import pluggy
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sealrelay import (
    AdminCommand,
    BackgroundService,
    Certificate,
    CommandContext,
    CommandError,
    CommandRecord,
    CommandResult,
    Config,
    ConfigError,
    Decryption,
    Encryption,
    Envelope,
    Frontend,
    Identity,
    IssuedCertificate,
    MessageBus,
    MessageError,
    Parameter,
    PluginError,
    Policy,
    ProcessingReport,
    ProvisioningError,
    RejectMessage,
    SealrelayError,
    SignatureCheck,
    SignatureVerdict,
    Subscriber,
    hookimpl,
)
from sealrelay.core.commands import CommandRegistry
from sealrelay.core.config import ENV_MASTER_KEY, parse_config
from sealrelay.core.plugins import LoadedPlugins, load_plugins
from sealrelay.plugins import BUILTIN_PLUGINS


# A third party declares its own hooks with a marker of the same project name.
hookspec = pluggy.HookspecMarker("sealrelay")

ALICE = "alice@example.org"  # a subscriber of the relay: she sends
BOB = "bob@example.net"  # a correspondent with a certificate
CAROL = "carol@partner.example"  # a correspondent at a partner company
DAVE = "dave@example.com"  # another correspondent
#: In every test message's body; it must never be readable in a copy that should be encrypted.
SECRET = "SECRET-FIGURES-42"
#: The built-in S/MIME plugin answers every crypto hook, last (trylast): the toy plugins here
#: win over it. Tests of what happens when *nobody* answers switch it off, as an operator can.
WITHOUT_BUILTIN_CRYPTO = ("crypto_smime",)
#: The built-in key pool and CA answer the provisioning hooks last (trylast) too, and run
#: background services; tests of what happens when nobody hands out a key or issues a
#: certificate switch them off.
WITHOUT_BUILTIN_PROVISIONING = ("keypool", "ca_builtin")
#: The built-in store keeps provisioned identities sealed under the master key; tests whose
#: own stores keep them switch it off, so that it needs no master key (one test gives it one).
WITHOUT_BUILTIN_STORE = ("policy_sql",)
#: Provisioning when a subscriber without a key sends is off unless the operator turns it on.
PROVISION_ON_SEND = {"provision_on_send": True, "key_type": "ec-p256"}


# -- messages -------------------------------------------------------------------------------


def make_message(
    *,
    sender: str = ALICE,
    to: tuple[str, ...] = (BOB,),
    cc: tuple[str, ...] = (),
    extra: tuple[str, ...] = (),
) -> bytes:
    """A plain RFC 5322 message, CRLF line ends, as a mail client submits it."""
    fields = [f"From: Sender <{sender}>", f"To: {', '.join(to)}"]
    if cc:
        fields.append(f"Cc: {', '.join(cc)}")
    fields += [
        "Subject: Quarterly figures",
        "Date: Mon, 06 Jan 2025 10:00:00 +0000",
        "Message-ID: <20250106100000.4711@example.org>",
        *extra,
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 7bit",
    ]
    return ("\r\n".join(fields) + f"\r\n\r\nThe figures: {SECRET}.\r\n").encode()


def split_entity(message: bytes) -> tuple[bytes, bytes]:
    """(outer header fields, MIME entity). Content-* fields travel with the body into the
    protected entity; From, To, Subject ... stay outside; MIME-Version is written per layer."""
    head, _, body = message.partition(b"\r\n\r\n")
    outer: list[bytes] = []
    entity: list[bytes] = []
    target: list[bytes] | None = outer
    for line in head.split(b"\r\n"):
        if line[:1] not in (b" ", b"\t"):  # not a folded continuation: a new field
            name = line.split(b":", 1)[0].strip().lower()
            is_content = name.startswith(b"content-")
            target = entity if is_content else None if name == b"mime-version" else outer
        if target is not None:
            target.append(line)
    entity_head = b"\r\n".join(entity) or b"Content-Type: text/plain; charset=us-ascii"
    return b"".join(line + b"\r\n" for line in outer), entity_head + b"\r\n\r\n" + body


#: What a CMS ContentInfo of each type starts with: the bus trusts an S/MIME label only on
#: content that begins like CMS, so the toys wear these prefixes over their readable payloads.
TOY_CMS = {
    "signed-data": b"\x30\x80" + bytes.fromhex("06092a864886f70d010702"),
    "enveloped-data": b"\x30\x80" + bytes.fromhex("06092a864886f70d010703"),
}
TOY_PREFIX_LENGTH = 13


def pkcs7_mime(smime_type: str, payload: bytes) -> bytes:
    return (
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: application/pkcs7-mime; smime-type=" + smime_type.encode() + b"; "
        b"name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(TOY_CMS[smime_type] + payload).replace(b"\n", b"\r\n")
    )


def pkcs7_payload(message: bytes) -> bytes:
    return base64.b64decode(message.partition(b"\r\n\r\n")[2])[TOY_PREFIX_LENGTH:]


BOUNDARY = b"toy-boundary"


def toy_sign(message: bytes, certificate: Certificate, *, digest: str, mode: str) -> bytes:
    """A clear (multipart/signed) or opaque (signed-data) toy signature by *certificate*."""
    outer, entity = split_entity(message)
    signature = f"TOY-SIGNATURE signer={certificate.fingerprint} digest={digest}".encode()
    if mode == "opaque":
        return outer + pkcs7_mime("signed-data", signature + b"\n" + entity)
    return (
        outer + b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; '
        b'micalg=sha-256; boundary="' + BOUNDARY + b'"\r\n\r\n'
        b"--" + BOUNDARY + b"\r\n" + entity + b"\r\n"
        b"--" + BOUNDARY + b"\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.b64encode(TOY_CMS["signed-data"] + signature)
        + b"\r\n--"
        + BOUNDARY
        + b"--\r\n"
    )


def toy_encrypt(message: bytes, certificates: list[Certificate], cipher: str) -> bytes:
    """An enveloped-data toy: readable by the holders of *certificates* (and anyone who can
    read base64, which is the point of a toy: the plumbing is under test)."""
    outer, entity = split_entity(message)
    payload = {
        "to": [certificate.fingerprint for certificate in certificates],
        "cipher": cipher,
        "entity": base64.b64encode(entity).decode(),
    }
    return outer + pkcs7_mime("enveloped-data", json.dumps(payload).encode())


def toy_recipients(message: bytes) -> list[str]:
    """The fingerprints a toy-encrypted message was encrypted to."""
    return list(json.loads(pkcs7_payload(message))["to"])


def signature_of(message: bytes) -> tuple[bytes, bytes]:
    """(signed entity, toy signature line) of a clear or opaque toy signature."""
    if b"multipart/signed" in message.partition(b"\r\n\r\n")[0]:
        parts = message.split(b"--" + BOUNDARY)
        signature = base64.b64decode(parts[2].partition(b"\r\n\r\n")[2].strip())
        return parts[1][2:-2], signature[TOY_PREFIX_LENGTH:]
    signature, _, entity = pkcs7_payload(message).partition(b"\n")
    return entity, signature


# -- certificates ---------------------------------------------------------------------------


@attrs.frozen
class TinyPKI:
    """A self-signed CA issuing leaves with SAN rfc822Name and the emailProtection EKU."""

    ca: Certificate
    ca_key: ec.EllipticCurvePrivateKey = attrs.field(repr=False)

    @classmethod
    def create(cls, name: str) -> TinyPKI:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=30))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(
            Certificate(der=cert.public_bytes(serialization.Encoding.DER), trusted=True), key
        )

    def issue(
        self, address: str, *, valid_days: int = 365, expired: bool = False, trusted: bool = True
    ) -> Identity:
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = self.certify(
            address, key.public_key(), valid_days=valid_days, expired=expired, trusted=trusted
        )
        return Identity(address=address, certificate=certificate, chain=(self.ca,), private_key=key)

    def certify(
        self,
        address: str,
        public_key: PublicKeyTypes,
        *,
        valid_days: int = 365,
        expired: bool = False,
        trusted: bool = True,
    ) -> Certificate:
        """An S/MIME certificate for *address* over a key the CA did not make."""
        now = dt.datetime.now(dt.UTC)
        not_before, not_after = now - dt.timedelta(days=1), now + dt.timedelta(days=valid_days)
        if expired:
            not_before, not_after = now - dt.timedelta(days=400), now - dt.timedelta(days=30)
        is_rsa = isinstance(public_key, rsa.RSAPublicKey)
        usage = x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=is_rsa,  # an RSA key encrypts by key transport ...
            data_encipherment=False,
            key_agreement=not is_rsa,  # ... an EC key by key agreement
            key_cert_sign=False,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)]))
            .issuer_name(self.ca.x509.subject)
            .public_key(public_key)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
            )
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        return Certificate(der=cert.public_bytes(serialization.Encoding.DER), trusted=trusted)

    def crl(self, *revoked: Certificate) -> bytes:
        """A DER CRL from the CA listing *revoked*."""
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.ca.x509.subject)
            .last_update(now - dt.timedelta(hours=1))
            .next_update(now + dt.timedelta(days=7))
        )
        for certificate in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(certificate.x509.serial_number)
                .revocation_date(now - dt.timedelta(hours=2))
                .build()
            )
        crl = builder.sign(self.ca_key, hashes.SHA256())
        return crl.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def pki() -> TinyPKI:
    return TinyPKI.create("Sealrelay Hook Test CA")


@pytest.fixture(scope="module")
def other_pki() -> TinyPKI:
    """A CA nobody in these tests trusts unless a test says so."""
    return TinyPKI.create("Unrelated CA")


# -- the relay under test -------------------------------------------------------------------


def make_config(
    tmp_path: Path,
    *,
    policy: Mapping[str, Any] | None = None,
    stages: Mapping[str, bool] | None = None,
    plugins: Mapping[str, Any] | None = None,
    disabled: tuple[str, ...] = (),
    keypool: Mapping[str, Any] | None = None,
) -> Config:
    """A config like the shipped one ([policy.default]: sign clear, encrypt if possible), its
    data directory in tmp_path. *disabled* lists plugins not to load ([plugins] disabled)."""
    document: dict[str, Any] = {
        "storage": {"data_dir": str(tmp_path / "var")},
        "policy": {"default": {"sign": "clear", "encrypt": "if-possible", **(policy or {})}},
        "stages": dict(stages or {}),
        "keypool": dict(keypool or {}),
        "plugins": {"disabled": list(disabled), **(plugins or {})},
    }
    return parse_config(document, tmp_path / "config.toml")


def load(config: Config, plugins: Mapping[str, object] | None = None) -> LoadedPlugins:
    """The built-ins loaded for *config*, then *plugins* registered in the order given (for a
    firstresult hook the last registered is asked first: pluggy calls LIFO).

    Entry points are off so that a plugin installed in the test environment (the example
    plugin, say) cannot change what these tests observe.
    """
    loaded = load_plugins(config, builtins=BUILTIN_PLUGINS, entry_points=False)
    for name, plugin in (plugins or {}).items():
        loaded.pm.register(plugin, name=name)
    loaded.pm.check_pending()  # what load_plugins checks for installed plugins
    return loaded


Relay = Callable[..., MessageBus]


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    """``relay({"name": plugin, ...}, policy=..., stages=..., disabled=..., keypool=...)``: an
    opened MessageBus over the built-ins and *plugins*."""
    opened: list[MessageBus] = []

    def make(
        plugins: Mapping[str, object] | None = None,
        *,
        policy: Mapping[str, Any] | None = None,
        stages: Mapping[str, bool] | None = None,
        disabled: tuple[str, ...] = (),
        keypool: Mapping[str, Any] | None = None,
    ) -> MessageBus:
        config = make_config(
            tmp_path, policy=policy, stages=stages, disabled=disabled, keypool=keypool
        )
        bus = MessageBus(load(config, plugins), config).open()
        opened.append(bus)
        return bus

    yield make
    for bus in opened:
        bus.close()


def outbound(bus: MessageBus, message: bytes, *recipients: str, sender: str = ALICE) -> Any:
    return bus.process_outbound(Envelope(sender=sender, recipients=recipients), message)


def inbound(bus: MessageBus, message: bytes, recipient: str = ALICE, sender: str = CAROL) -> Any:
    envelope = Envelope(sender=sender, recipients=(recipient,), direction="inbound")
    return bus.process_inbound(envelope, message, recipient)


def by_recipient(result: Any) -> dict[str, Any]:
    return {rcpt: message for message in result.messages for rcpt in message.recipients}


def install_module(monkeypatch: pytest.MonkeyPatch, path: str, *functions: object) -> str:
    """A plugin module importable as *path* (so that ``load_plugins`` loads it like any other
    module; its plugin name is the last component), holding *functions*."""
    module = types.ModuleType(path)
    for function in functions:
        setattr(module, function.__name__, function)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, path, module)
    return path


def load_with_commands(
    config: Config, plugins: Mapping[str, object] | None = None
) -> tuple[CommandRegistry, CommandContext]:
    loaded = load(config, plugins)
    registry = CommandRegistry.from_plugins(loaded)
    return registry, CommandContext(config=config, plugins=loaded, actor="test:hooks")


# -- small plugins the tests combine --------------------------------------------------------


class PolicyTable:
    """Answers ``sealrelay_resolve_policy`` from a recipient -> Policy table."""

    def __init__(self, table: Mapping[str, Policy]) -> None:
        self.table = dict(table)

    @hookimpl
    def sealrelay_resolve_policy(self, recipient: str) -> Policy | None:
        return self.table.get(recipient)


class SigningKeys:
    """Holds private keys for signing, one per address."""

    def __init__(self, *identities: Identity) -> None:
        self.identities = {identity.address: identity for identity in identities}
        self.asked: list[str] = []

    @hookimpl
    def sealrelay_signing_identity(self, address: str) -> Identity | None:
        self.asked.append(address)
        return self.identities.get(address)


class CertificateStore:
    """Holds correspondents' certificates."""

    def __init__(self, *certificates: Certificate) -> None:
        self.certificates = list(certificates)
        self.asked: list[str] = []

    @hookimpl
    def sealrelay_recipient_certificates(self, address: str) -> list[Certificate]:
        self.asked.append(address)
        # A sloppy store: it returns everything and lets the core choose (the core must
        # drop what is expired, untrusted or for another address).
        return list(self.certificates)


class ToySigner:
    """Signs in the *modes* it supports; returns None ("not mine") for the others."""

    def __init__(self, modes: tuple[str, ...] = ("clear", "opaque")) -> None:
        self.modes = modes
        self.calls: list[tuple[bytes, Identity, Policy]] = []

    @hookimpl
    def sealrelay_sign_message(
        self, message: bytes, identity: Identity, policy: Policy
    ) -> bytes | None:
        self.calls.append((message, identity, policy))
        if policy.sign not in self.modes:
            return None
        return toy_sign(message, identity.certificate, digest=policy.digest, mode=policy.sign)


class ToyEncryptor:
    def __init__(self) -> None:
        self.calls: list[list[Certificate]] = []

    @hookimpl
    def sealrelay_encrypt_message(
        self, message: bytes, certificates: list[Certificate], policy: Policy
    ) -> Encryption:
        self.calls.append(list(certificates))
        cipher = "aes256-cbc" if policy.cipher == "auto" else policy.cipher
        return Encryption(content=toy_encrypt(message, certificates, cipher), cipher=cipher)


class KeyArchive:
    """Every key an address has had, for ``sealrelay_decryption_identities``."""

    def __init__(self, *identities: Identity) -> None:
        self.identities = identities
        self.asked: list[str] = []

    @hookimpl
    def sealrelay_decryption_identities(self, address: str) -> list[Identity]:
        self.asked.append(address)
        return [identity for identity in self.identities if identity.address == address]


class ToyDecryptor:
    def __init__(self) -> None:
        self.calls: list[list[Identity]] = []

    @hookimpl
    def sealrelay_decrypt_message(self, message: bytes, identities: list[Identity]) -> Decryption:
        self.calls.append(list(identities))
        payload = json.loads(pkcs7_payload(message))
        if not any(identity.certificate.fingerprint in payload["to"] for identity in identities):
            raise MessageError("no-key")
        entity = base64.b64decode(payload["entity"])
        return Decryption(content=entity, cipher=payload["cipher"])


class TrustStore:
    def __init__(self, *anchors: Certificate, crls: tuple[bytes, ...] = ()) -> None:
        self.anchors = list(anchors)
        self.crls = list(crls)

    @hookimpl
    def sealrelay_trust_anchors(self) -> list[Certificate]:
        return list(self.anchors)

    @hookimpl
    def sealrelay_revocation_lists(self) -> list[bytes]:
        return list(self.crls)


class ToyVerifier:
    """Checks a toy signature the way a real verifier checks a CMS one: the signer is known
    (a real one reads the certificate from the CMS), issued by a trust anchor, not revoked,
    and bound to the From address."""

    def __init__(self, *signers: Identity) -> None:
        self.signers = {identity.certificate.fingerprint: identity for identity in signers}
        self.calls: list[dict[str, Any]] = []

    @hookimpl
    def sealrelay_verify_signature(
        self,
        message: bytes,
        sender: str,
        trust_anchors: list[Certificate],
        revocation_lists: list[bytes],
    ) -> SignatureCheck:
        self.calls.append({"sender": sender, "anchors": trust_anchors, "crls": revocation_lists})
        content, signature = signature_of(message)
        fingerprint = signature.split(b"signer=")[1].split()[0].decode()
        signer = self.signers[fingerprint]
        certificate = signer.certificate
        revoked = {
            entry.serial_number for crl in revocation_lists for entry in x509.load_der_x509_crl(crl)
        }
        if certificate.x509.issuer not in {anchor.x509.subject for anchor in trust_anchors}:
            chain = "untrusted"
        elif certificate.x509.serial_number in revoked:
            chain = "revoked"
        else:
            chain = "ok"
        address = "ok" if certificate.matches(sender) else "address-mismatch"
        failed = [check for check in (chain, address) if check != "ok"]
        verdict = SignatureVerdict(
            status="invalid" if failed else "valid",
            signer=signer.address,
            reason=failed[0] if failed else None,
            crypto="ok",
            chain=chain,
            address=address,
        )
        return SignatureCheck(
            verdict=verdict,
            content=content,
            signer_certificate=certificate,
            certificates=(certificate, *signer.chain),
        )


def signed_by(identity: Identity, *, mode: str = "clear", to: str = ALICE) -> bytes:
    """An inbound message from *identity*'s address to *to*, toy-signed."""
    message = make_message(sender=identity.address, to=(to,))
    return toy_sign(message, identity.certificate, digest="sha256", mode=mode)


def raising(hook_name: str, error: BaseException) -> object:
    """A module-like plugin whose implementation of *hook_name* raises *error*."""

    def implementation() -> None:
        raise error

    implementation.__name__ = hook_name
    return types.SimpleNamespace(**{hook_name: hookimpl(implementation)})


class Collector:
    """Keeps what the notification and lifecycle hooks it implements were handed."""

    def __init__(self) -> None:
        self.configs: list[Config] = []
        self.reports: list[ProcessingReport] = []
        self.records: list[CommandRecord] = []

    @hookimpl
    def sealrelay_configure(self, config: Config) -> None:
        self.configs.append(config)

    @hookimpl
    def sealrelay_message_processed(self, report: ProcessingReport) -> None:
        self.reports.append(report)

    @hookimpl
    def sealrelay_command_executed(self, record: CommandRecord) -> None:
        self.records.append(record)


# == lifecycle ==============================================================================


class QuotaSpecs:
    """A third party's own hook, added through ``sealrelay_addhooks``."""

    @hookspec
    def sealrelay_quota_exceeded(self, sender: str) -> str | None:
        """Be told that *sender* sent more than the quota allows."""


def test_hook_sealrelay_addhooks(tmp_path, monkeypatch):
    @hookimpl
    def sealrelay_addhooks(pluginmanager: pluggy.PluginManager) -> None:
        pluginmanager.add_hookspecs(QuotaSpecs)

    @hookimpl
    def sealrelay_quota_exceeded(sender: str) -> str:
        return f"page the postmaster about {sender}"

    config = make_config(tmp_path)
    # Without the declaring plugin, an implementation of the new hook is a hook that does not
    # exist: the manager's validation refuses it.
    loaded = load(config)
    alarm_plugin = types.SimpleNamespace(sealrelay_quota_exceeded=sealrelay_quota_exceeded)
    loaded.pm.register(alarm_plugin, name="quota_alarm")
    with pytest.raises(pluggy.PluginValidationError, match="unknown hook"):
        loaded.pm.check_pending()

    # Loaded together, the declaration is added while plugins register, before check_pending:
    # the implementing plugin may even load first.
    alarm = install_module(monkeypatch, "hooktest.quota_alarm", sealrelay_quota_exceeded)
    declaring = install_module(monkeypatch, "hooktest.quota", sealrelay_addhooks)
    loaded = load_plugins(config, builtins=(*BUILTIN_PLUGINS, alarm, declaring), entry_points=False)
    assert "quota" in loaded.names()
    assert loaded.pm.hook.sealrelay_quota_exceeded(sender=ALICE) == [
        f"page the postmaster about {ALICE}"
    ]

    # Historic: a plugin registered after loading still gets the call.
    late = load(config)
    assert not hasattr(late.pm.hook, "sealrelay_quota_exceeded")
    late.pm.register(types.SimpleNamespace(sealrelay_addhooks=sealrelay_addhooks), name="quota")
    assert late.pm.hook.sealrelay_quota_exceeded(sender=ALICE) == []


def test_addhooks_failure_names_the_plugin(tmp_path, monkeypatch):
    @hookimpl
    def sealrelay_addhooks(pluginmanager: pluggy.PluginManager) -> None:
        raise RuntimeError("spec module missing")

    broken = install_module(monkeypatch, "hooktest.broken_specs", sealrelay_addhooks)
    with pytest.raises(PluginError, match="broken_specs"):
        load_plugins(make_config(tmp_path), builtins=(*BUILTIN_PLUGINS, broken), entry_points=False)


def test_hook_sealrelay_configure(tmp_path, monkeypatch):
    seen: list[Mapping[str, Any]] = []

    @hookimpl
    def sealrelay_configure(config: Config) -> None:
        section = config.plugin_config("size_limit")
        if not isinstance(section.get("max_bytes", 0), int):
            raise ConfigError("[plugins.size_limit] max_bytes must be an integer")
        seen.append(section)

    size_limit = install_module(monkeypatch, "hooktest.size_limit", sealrelay_configure)
    builtins = (*BUILTIN_PLUGINS, size_limit)

    # The plugin reads its own [plugins.<name>] table, once, at load time.
    config = make_config(tmp_path, plugins={"size_limit": {"max_bytes": 1000}})
    loaded = load_plugins(config, builtins=builtins, entry_points=False)
    assert seen == [{"max_bytes": 1000}]

    # Historic: a plugin registered after loading is configured as it registers.
    late = Collector()
    loaded.pm.register(late, name="late")
    assert late.configs == [config]

    # A ConfigError reaches the operator unchanged (one line, exit status 2) ...
    wrong = make_config(tmp_path, plugins={"size_limit": {"max_bytes": "lots"}})
    with pytest.raises(ConfigError, match=r"^\[plugins.size_limit\] max_bytes must be"):
        load_plugins(wrong, builtins=builtins, entry_points=False)

    # ... any other exception stops loading with an error naming the plugin.
    @hookimpl
    def sealrelay_configure_broken(config: Config) -> None:
        raise KeyError("ldap_url")

    sealrelay_configure_broken.__name__ = "sealrelay_configure"
    broken = install_module(monkeypatch, "hooktest.broken_ldap", sealrelay_configure_broken)
    with pytest.raises(PluginError, match=r"'broken_ldap' failed to configure: KeyError"):
        load_plugins(config, builtins=(*builtins, broken), entry_points=False)


class Greylist:
    """Creates its database once; says so only when it did something."""

    @hookimpl
    def sealrelay_prepare_state(self, config: Config) -> str | None:
        path = config.data_dir / "greylist.db"
        if path.exists():
            return None
        path.write_bytes(b"")
        return f"greylist: created {path}"


class Archive:
    @hookimpl
    def sealrelay_prepare_state(self) -> list[str]:
        return ["archive: schema at version 3"]


def test_hook_sealrelay_prepare_state(tmp_path):
    config = make_config(tmp_path)
    registry, context = load_with_commands(config, {"greylist": Greylist(), "archive": Archive()})

    first = registry.execute("init", {}, context)
    # init creates the data directory before asking the plugins; every answer is shown.
    assert (tmp_path / "var" / "greylist.db").exists()
    assert f"greylist: created {tmp_path / 'var' / 'greylist.db'}" in first.data["steps"]
    assert "archive: schema at version 3" in first.data["steps"]
    assert "archive: schema at version 3" in first.text

    # Idempotent: the second run upgrades nothing; None contributes no line.
    second = registry.execute("init", {}, context)
    assert not any(step.startswith("greylist:") for step in second.data["steps"])
    assert "archive: schema at version 3" in second.data["steps"]

    # A failure makes init fail (the CLI exits 1) and is recorded as such.
    collector = Collector()
    failing = {
        "broken_state": raising("sealrelay_prepare_state", OSError("disk full")),
        "collector": collector,
    }
    registry, context = load_with_commands(config, failing)
    with pytest.raises(PluginError, match="disk full"):
        registry.execute("init", {}, context)
    assert [(r.command, r.outcome) for r in collector.records] == [("init", "error")]


def test_prepare_state_failure_names_the_plugin(tmp_path):
    plugin = {"broken_state": raising("sealrelay_prepare_state", OSError("disk full"))}
    registry, context = load_with_commands(make_config(tmp_path), plugin)
    with pytest.raises(SealrelayError, match="broken_state"):
        registry.execute("init", {}, context)


class Lifecycle:
    """Records what the relay asked of it, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []

    @hookimpl
    def sealrelay_startup(self, config: Config) -> None:
        self.events.append(("startup", str(config.data_dir)))

    @hookimpl
    def sealrelay_resolve_policy(self, recipient: str) -> None:
        self.events.append(("policy", recipient))

    @hookimpl
    def sealrelay_shutdown(self) -> None:
        self.events.append(("shutdown",))


def test_hook_sealrelay_startup(tmp_path):
    config = make_config(tmp_path, policy={"sign": "none"})
    plugin = Lifecycle()
    bus = MessageBus(load(config, {"lifecycle": plugin}), config)
    assert plugin.events == []  # loading plugins starts nothing

    with bus:
        bus.open()  # opening again does not start again
        outbound(bus, make_message(), BOB)
    assert plugin.events == [
        ("startup", str(tmp_path / "var")),
        ("policy", BOB),
        ("shutdown",),
    ]

    # A failed start stops the bus from opening, and what did start is shut down again.
    watcher = Lifecycle()
    plugins = {"lifecycle": watcher, "broken_db": raising("sealrelay_startup", ConnectionError())}
    with pytest.raises(PluginError, match="broken_db"):
        MessageBus(load(config, plugins), config).open()
    assert ("shutdown",) in watcher.events


def test_startup_failure_names_the_plugin(tmp_path):
    config = make_config(tmp_path)
    plugins = {"broken_db": raising("sealrelay_startup", ConnectionError("refused"))}
    with pytest.raises(SealrelayError, match="broken_db"):
        MessageBus(load(config, plugins), config).open()


def test_failed_startup_still_shuts_every_plugin_down(tmp_path):
    config = make_config(tmp_path)
    watcher = Lifecycle()
    plugins = {
        "lifecycle": watcher,
        "broken_cache": raising("sealrelay_shutdown", RuntimeError("cache gone")),
        "broken_db": raising("sealrelay_startup", ConnectionError("refused")),
    }
    with pytest.raises(PluginError, match="broken_db"):
        MessageBus(load(config, plugins), config).open()
    assert ("shutdown",) in watcher.events


def test_hook_sealrelay_shutdown(tmp_path, caplog):
    config = make_config(tmp_path)
    watcher = Lifecycle()
    # Registered last, so called first: its failure must not keep the others from the call.
    plugins = {
        "lifecycle": watcher,
        "broken_cache": raising("sealrelay_shutdown", RuntimeError("cache gone")),
    }
    bus = MessageBus(load(config, plugins), config).open()
    with caplog.at_level(logging.ERROR):
        bus.close()
        bus.close()  # closing again calls nobody again
    assert watcher.events.count(("shutdown",)) == 1
    assert "broken_cache failed in sealrelay_shutdown" in caplog.text


class PoolFiller:
    """A background service that keeps a pool of P-256 key pairs filled until it is told to
    stop, and hands them out (``sealrelay_new_key_pair``), as the built-in key pool does."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.pool: list[ec.EllipticCurvePrivateKey] = []
        self.lock = threading.Lock()
        self.configs: list[Config] = []

    @hookimpl
    def sealrelay_background_services(self, config: Config) -> list[BackgroundService]:
        self.configs.append(config)
        return [BackgroundService(name="pool-filler", run=self.run)]

    def run(self, bus: MessageBus, stop: threading.Event) -> None:
        while not stop.is_set():
            with self.lock:
                missing = len(self.pool) < self.size
                if missing:
                    self.pool.append(ec.generate_private_key(ec.SECP256R1()))
            if not missing:
                stop.wait(0.01)

    @hookimpl
    def sealrelay_new_key_pair(self, key_type: str) -> PrivateKeyTypes | None:
        with self.lock:
            return self.pool.pop(0) if key_type == "ec-p256" and self.pool else None


class CrlRefresher:
    """A background service that publishes the CA's CRL through the bus, then waits."""

    def __init__(self, pki: TinyPKI) -> None:
        self.pki = pki

    @hookimpl
    def sealrelay_background_services(self) -> list[BackgroundService]:
        return [BackgroundService(name="crl-refresher", run=self.run)]

    def run(self, bus: MessageBus, stop: threading.Event) -> None:
        while True:
            bus.publish_revocation_list(self.pki.crl())
            if stop.wait(3600):
                return


class NoServices:
    @hookimpl
    def sealrelay_background_services(self) -> list[BackgroundService]:
        return []


def test_hook_sealrelay_background_services(tmp_path, pki):
    # As `sealrelay serve`'s supervisor calls it: once, before the workers start; then each
    # service's run(bus, stop) with an opened bus, until stop is set. (serve gives each a
    # process of its own; threads do here.) The built-in services are switched off so that
    # only the test's run.
    config = make_config(tmp_path, keypool=PROVISION_ON_SEND, disabled=WITHOUT_BUILTIN_PROVISIONING)
    filler, mirror = PoolFiller(size=3), CrlMirror()
    plugins = {"filler": filler, "refresher": CrlRefresher(pki), "none": NoServices()}
    loaded = load(config, {**plugins, "mirror": mirror})

    answers = loaded.pm.hook.sealrelay_background_services(config=config)

    # Collect-all: one list per plugin, flattened; the empty one contributes nothing.
    services = [service for answer in answers for service in answer]
    assert sorted(service.name for service in services) == ["crl-refresher", "pool-filler"]
    assert filler.configs == [config]
    stop = threading.Event()
    with MessageBus(loaded, config) as bus:
        threads = [
            threading.Thread(target=service.run, args=(bus, stop), name=service.name)
            for service in services
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while (len(filler.pool) < 3 or not mirror.received) and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        # Each returns soon after stop is set.
        assert [thread.name for thread in threads if thread.is_alive()] == []
        # What they did reaches the pipeline: the refresher's CRL went through the bus to the
        # stores, the pool's keys are handed out to provisioning.
        [crl] = mirror.received
        assert x509.load_der_x509_crl(crl).issuer == pki.ca.x509.subject
        pooled = list(filler.pool)
        assert len(pooled) == 3
        assert loaded.pm.hook.sealrelay_new_key_pair(key_type="ec-p256") is pooled[0]


# == policy =================================================================================


class PartnerPolicy:
    """Mail to partner.example is opaque-signed with SHA-512; no opinion on anything else."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, Envelope]] = []

    @hookimpl
    def sealrelay_resolve_policy(
        self, sender: str, recipient: str, envelope: Envelope
    ) -> Policy | None:
        self.asked.append((sender, recipient, envelope))
        if not recipient.endswith("@partner.example"):
            return None
        return Policy(sign="opaque", digest="sha512", encrypt="never", origin="partner rule")


#: The policy plugins of these tests, to tell their answers from the built-ins'.
MINE = {"partner", "house"}


class HouseRule:
    """Answers for everybody, ``trylast`` like a built-in policy store."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    @hookimpl(trylast=True)
    def sealrelay_resolve_policy(self, recipient: str) -> Policy:
        self.asked.append(recipient)
        return Policy(sign="none", encrypt="never", origin="house rule")


def test_hook_sealrelay_resolve_policy(relay, pki):
    alice = pki.issue(ALICE)
    partner, house, signer = PartnerPolicy(), HouseRule(), ToySigner()
    bus = relay({"keys": SigningKeys(alice), "signer": signer, "house": house, "partner": partner})
    message = make_message(to=(CAROL, BOB))
    envelope = Envelope(sender="alice@EXAMPLE.org", recipients=(CAROL, BOB))

    result = bus.process_outbound(envelope, message)

    # One answer per recipient; the answers differ, so each gets its own copy.
    copies = by_recipient(result)
    assert (copies[CAROL].sign_mode, copies[CAROL].signed) == ("opaque", True)
    assert signature_of(copies[CAROL].content)[1] == (
        f"TOY-SIGNATURE signer={alice.certificate.fingerprint} digest=sha512".encode()
    )
    assert (copies[BOB].signed, copies[BOB].encrypted) == (False, False)
    assert copies[BOB].content == message
    # Keyword arguments, normalised; the envelope is the one being processed.
    assert [(s, r) for s, r, _ in partner.asked] == [(ALICE, CAROL), (ALICE, BOB)]
    assert all(e is envelope for _, _, e in partner.asked)
    # firstresult: the house rule is not asked once the partner rule answered.
    assert house.asked == [BOB]

    # `policy explain` shows every answer in call order (the built-ins' too), and the winner.
    explained = bus.explain_policy(ALICE, CAROL)
    assert explained.winner == "partner"
    assert explained.policy.origin == "partner rule"
    ours = [(a.plugin, a.policy is not None) for a in explained.answers if a.plugin in MINE]
    assert ours == [("partner", True), ("house", True)]
    assert bus.explain_policy(ALICE, BOB).winner == "house"


def test_resolve_policy_none_everywhere_means_the_configured_default(relay, pki):
    alice = pki.issue(ALICE)
    bus = relay(
        {"keys": SigningKeys(alice), "signer": ToySigner(), "partner": PartnerPolicy()},
        policy={"sign": "clear", "digest": "sha384"},
    )
    [copy] = outbound(bus, make_message(), BOB).messages
    assert copy.sign_mode == "clear"
    assert signature_of(copy.content)[1].endswith(b"digest=sha384")
    explained = bus.explain_policy(ALICE, BOB)
    assert (explained.winner, explained.policy.origin) == (None, "[policy.default]")
    assert ("partner", None) in [(a.plugin, a.policy) for a in explained.answers]


def test_resolve_policy_failure_defers_naming_the_plugin(relay):
    bus = relay(
        {
            "house": HouseRule(),
            "flaky_ldap": raising("sealrelay_resolve_policy", TimeoutError("ldap timeout")),
        }
    )
    result = outbound(bus, make_message(), BOB)
    assert result.messages == ()
    [deferred] = result.deferred
    assert deferred.recipient == BOB
    assert deferred.temporary
    assert "plugin flaky_ldap failed in sealrelay_resolve_policy" in deferred.reason


def test_resolve_policy_reject_refuses_the_recipient(relay):
    class Embargo:
        @hookimpl
        def sealrelay_resolve_policy(self, recipient: str) -> Policy | None:
            if recipient == DAVE:
                raise RejectMessage("mail to example.com is not allowed")
            return None

    bus = relay({"house": HouseRule(), "embargo": Embargo()})
    result = outbound(bus, make_message(to=(BOB, DAVE)), BOB, DAVE)
    assert list(by_recipient(result)) == [BOB]
    [rejected] = result.rejected
    assert (rejected.recipient, rejected.temporary) == (DAVE, False)
    assert rejected.reason == "mail to example.com is not allowed"


def test_resolve_policy_failure_records_the_plugin(relay):
    bus = relay({"flaky_ldap": raising("sealrelay_resolve_policy", TimeoutError("timeout"))})
    [deferred] = outbound(bus, make_message(), BOB).deferred
    assert deferred.plugin == "flaky_ldap"


def test_explain_policy_shows_what_a_wrapper_decides(relay):
    class NeverSignLists:
        @hookimpl(wrapper=True)
        def sealrelay_resolve_policy(self, recipient: str) -> Any:
            policy = yield
            if recipient.startswith("list@"):
                return Policy(sign="none", encrypt="never", origin="lists are never signed")
            return policy

    bus = relay({"house": HouseRule(), "lists": NeverSignLists()})
    envelope = Envelope(sender=ALICE, recipients=("list@example.net",))
    applied = bus.resolve_policy(ALICE, "list@example.net", envelope)
    assert bus.explain_policy(ALICE, "list@example.net").policy.origin == applied.origin


class RuleStore:
    """A policy store with rules: the first matching rule decides, and ``policy explain``
    lists every rule that matched."""

    RULES = (
        ("rule 7: * -> *@partner.example (priority 0)", "@partner.example", "opaque"),
        ("rule 2: * -> * (priority 9)", "@", "clear"),
    )

    def __init__(self) -> None:
        self.explained: list[tuple[str, str, Envelope]] = []

    def _matching(self, recipient: str) -> list[tuple[str, str, str]]:
        return [rule for rule in self.RULES if rule[1] in recipient]

    @hookimpl
    def sealrelay_resolve_policy(self, recipient: str) -> Policy | None:
        matching = self._matching(recipient)
        return Policy(sign=matching[0][2], origin=matching[0][0]) if matching else None

    @hookimpl
    def sealrelay_explain_policy(
        self, sender: str, recipient: str, envelope: Envelope
    ) -> list[str]:
        self.explained.append((sender, recipient, envelope))
        return [line for line, _, _ in self._matching(recipient)]


class NoRules:
    """Two ways of saying "no rule of mine matched"."""

    @hookimpl
    def sealrelay_explain_policy(self, recipient: str) -> list[str] | None:
        return None if recipient == CAROL else []


def test_hook_sealrelay_explain_policy(tmp_path):
    store = RuleStore()
    config = make_config(tmp_path, policy={"sign": "none"})
    plugins = {"rules": store, "empty": NoRules()}
    registry, context = load_with_commands(config, plugins)

    explained = registry.execute(
        "policy explain", {"sender": "alice@EXAMPLE.org", "to": CAROL}, context
    )

    # Collect-all: every matched rule, per plugin, the winning one first; None and [] add nothing.
    assert explained.data["rules"] == [
        {"plugin": "rules", "rule": "rule 7: * -> *@partner.example (priority 0)"},
        {"plugin": "rules", "rule": "rule 2: * -> * (priority 9)"},
    ]
    assert "matched in rules: rule 7: * -> *@partner.example (priority 0)" in explained.text
    assert explained.data["policy"]["origin"] == "rule 7: * -> *@partner.example (priority 0)"
    # Called with the normalised pair and an envelope holding just that pair.
    [(sender, recipient, envelope)] = store.explained
    assert (sender, recipient, envelope.recipients) == (ALICE, CAROL, (CAROL,))
    other = registry.execute("policy explain", {"sender": ALICE, "to": BOB}, context)
    assert [rule["rule"] for rule in other.data["rules"]] == ["rule 2: * -> * (priority 9)"]

    # Never called while mail is processed.
    store.explained.clear()
    with MessageBus(context.plugins, config) as bus:
        outbound(bus, make_message(to=(CAROL,)), CAROL)
    assert store.explained == []


def test_explain_policy_failure_names_the_plugin(tmp_path):
    plugins = {"broken_rules": raising("sealrelay_explain_policy", KeyError("rules"))}
    registry, context = load_with_commands(make_config(tmp_path), plugins)
    with pytest.raises(SealrelayError, match="broken_rules"):
        registry.execute("policy explain", {"sender": ALICE, "to": BOB}, context)


class Directory:
    """Knows the relay's subscribers."""

    def __init__(self, *subscribers: Subscriber) -> None:
        self.subscribers = {subscriber.address: subscriber for subscriber in subscribers}
        self.asked: list[str] = []

    @hookimpl
    def sealrelay_lookup_subscriber(self, address: str) -> Subscriber | None:
        self.asked.append(address)
        return self.subscribers.get(address)


class KeyMaker:
    """Makes a new EC key pair for every request of a kind it knows (``sealrelay_new_key_pair``):
    EC keys are quick enough to make while a message waits."""

    CURVES: Final = {"ec-p256": ec.SECP256R1, "ec-p384": ec.SECP384R1}

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.made: list[ec.EllipticCurvePrivateKey] = []

    @hookimpl
    def sealrelay_new_key_pair(self, key_type: str) -> PrivateKeyTypes | None:
        self.asked.append(key_type)
        curve = self.CURVES.get(key_type)
        if curve is None:
            return None  # not a kind this plugin makes
        key = ec.generate_private_key(curve())
        self.made.append(key)
        return key


class KeyStash:
    """Hands out P-256 key pairs made ahead of time, each once; None when it has none left."""

    def __init__(self, *keys: ec.EllipticCurvePrivateKey) -> None:
        self.keys = list(keys)
        self.asked: list[str] = []

    @hookimpl
    def sealrelay_new_key_pair(self, key_type: str) -> PrivateKeyTypes | None:
        self.asked.append(key_type)
        if key_type != "ec-p256" or not self.keys:
            return None
        return self.keys.pop(0)


class CompanyCA:
    """A CA the relay runs (``sealrelay_issue_certificate``): certifies the key it is shown for
    the addresses of its domain, and has no opinion on any other address."""

    def __init__(self, pki: TinyPKI, domain: str = "example.org") -> None:
        self.pki = pki
        self.domain = domain
        self.calls: list[tuple[str, PublicKeyTypes]] = []
        self.issued: list[IssuedCertificate] = []

    @hookimpl
    def sealrelay_issue_certificate(
        self, address: str, public_key: PublicKeyTypes
    ) -> IssuedCertificate | None:
        self.calls.append((address, public_key))
        if address.rpartition("@")[2] != self.domain:
            return None
        certificate = self.pki.certify(address, public_key)
        issued = IssuedCertificate(certificate=certificate, authority=self.pki.ca)
        self.issued.append(issued)
        return issued


class Vault:
    """Keeps provisioned identities (``sealrelay_store_identity``) and signs with them later;
    ``keeps=False``: a store that keeps no identities (it answers None)."""

    def __init__(self, *, keeps: bool = True) -> None:
        self.keeps = keeps
        self.offered: list[tuple[Identity, Certificate | None]] = []
        self.kept: dict[str, Identity] = {}

    @hookimpl
    def sealrelay_store_identity(
        self, identity: Identity, authority: Certificate | None
    ) -> str | None:
        self.offered.append((identity, authority))
        if not self.keeps:
            return None
        self.kept[identity.address] = identity
        return identity.certificate.fingerprint

    @hookimpl
    def sealrelay_signing_identity(self, address: str) -> Identity | None:
        return self.kept.get(address)


def signer_of(message: bytes) -> str:
    """The fingerprint of the certificate a toy signature names."""
    return signature_of(message)[1].split(b"signer=")[1].split()[0].decode()


MALLORY = "mallory@example.org"  # a subscriber whose account is disabled
ERIN = "erin@example.org"  # another subscriber


def test_hook_sealrelay_lookup_subscriber(relay, pki):
    directory = Directory(Subscriber(address=ALICE), Subscriber(address=MALLORY, enabled=False))
    keys, vault = KeyMaker(), Vault()
    plugins = {"keys": keys, "ca": CompanyCA(pki), "vault": vault, "signer": ToySigner()}
    on_send = {"keypool": PROVISION_ON_SEND, "disabled": WITHOUT_BUILTIN_STORE}
    bus = relay({**plugins, "directory": directory}, **on_send)

    # A subscriber without a key gets one as she sends: the lookup is what allows it.
    [copy] = outbound(bus, make_message(), BOB).messages
    assert copy.signed
    assert directory.asked == [ALICE]
    assert list(vault.kept) == [ALICE]

    # Not a subscriber (None), or a disabled one: no key is made, the message waits.
    for stranger in (DAVE, MALLORY):
        result = outbound(bus, make_message(sender=stranger), BOB, sender=stranger)
        assert result.messages == ()
        assert "no signing key is known for " + stranger in result.deferred[0].reason
    assert directory.asked == [ALICE, DAVE, MALLORY]
    assert (keys.asked, list(vault.kept)) == (["ec-p256"], [ALICE])

    # firstresult: a directory that does not know the address defers to the next one.
    other = Directory()
    bus = relay({**plugins, "vault": Vault(), "d1": directory, "d2": other}, **on_send)
    assert outbound(bus, make_message(), BOB).messages[0].signed
    assert other.asked == [ALICE]

    # Provisioning on send off (the default): nobody is asked, and the message waits for the
    # operator to give the subscriber a key.
    quiet = Directory(Subscriber(address=ALICE))
    bus = relay({**plugins, "vault": Vault(), "directory": quiet}, disabled=WITHOUT_BUILTIN_STORE)
    [deferred] = outbound(bus, make_message(), BOB).deferred
    assert "subscriber add --provision" in deferred.reason
    assert quiet.asked == []


class Accounts:
    """Knows some logins and their passwords."""

    def __init__(self, **passwords: str) -> None:
        self.passwords = passwords
        self.asked: list[str] = []

    @hookimpl
    def sealrelay_check_credentials(self, login: str, password: str) -> str | None:
        self.asked.append(login)
        if self.passwords.get(login) != password:
            return None
        return f"{login}@example.org"


def test_hook_sealrelay_check_credentials(relay):
    staff, machines = Accounts(alice="s3cret"), Accounts(scanner="scan")
    bus = relay({"staff": staff, "machines": machines}, disabled=("policy_sql",))

    # firstresult: the first plugin that knows the login and password answers with the address.
    assert bus.check_credentials("alice", "s3cret") == "alice@example.org"
    assert bus.check_credentials("scanner", "scan") == "scanner@example.org"
    # A wrong password or an unknown login: nobody answers, the login is refused.
    assert bus.check_credentials("alice", "guess") is None
    # pluggy asks the last registered first: machines answered "scanner", so staff was not asked.
    assert machines.asked == ["alice", "scanner", "alice"]
    assert staff.asked == ["alice", "alice"]


def test_check_credentials_failure_is_temporary_and_names_the_plugin(relay):
    broken = raising("sealrelay_check_credentials", ConnectionError("ldap down"))
    bus = relay({"ldap": broken}, disabled=("policy_sql",))
    with pytest.raises(MessageError) as raised:
        bus.check_credentials("alice", "s3cret")
    assert (raised.value.plugin, raised.value.temporary) == ("ldap", True)


def test_lookup_subscriber_failure_defers_naming_the_plugin(relay, pki):
    plugins = {
        "keys": KeyMaker(),
        "ca": CompanyCA(pki),
        "vault": Vault(),
        "ldap": raising("sealrelay_lookup_subscriber", ConnectionError("ldap down")),
    }
    bus = relay(plugins, keypool=PROVISION_ON_SEND, disabled=WITHOUT_BUILTIN_STORE)
    [deferred] = outbound(bus, make_message(), BOB).deferred
    assert (deferred.plugin, deferred.temporary) == ("ldap", True)
    assert "ldap failed in sealrelay_lookup_subscriber" in deferred.reason


# == identities and certificates ============================================================


def test_hook_sealrelay_signing_identity(relay, pki):
    on_disk, in_hsm = pki.issue(ALICE), pki.issue(ALICE)
    files, hsm, signer = SigningKeys(on_disk), SigningKeys(in_hsm), ToySigner()
    bus = relay({"signer": signer, "files": files, "hsm": hsm})

    [copy] = outbound(bus, make_message(), BOB).messages

    # Asked with the envelope sender; the first answer signs (hsm registered last, asked first).
    assert hsm.asked == [ALICE]
    assert files.asked == []
    assert signer.calls[0][1] is in_hsm
    fingerprint = signature_of(copy.content)[1].split(b"signer=")[1].split()[0]
    assert fingerprint.decode() == in_hsm.certificate.fingerprint

    # Not asked for a bounce (empty sender) nor with the sign stage off: nothing is signed.
    hsm.asked.clear()
    [bounce] = outbound(bus, make_message(), BOB, sender="").messages
    assert not bounce.signed
    unsigned = relay({"signer": signer, "hsm": hsm}, stages={"sign": False})
    assert not outbound(unsigned, make_message(), BOB).messages[0].signed
    assert hsm.asked == []


def test_signing_identity_missing_defers_and_never_sends_unsigned(relay):
    signer = ToySigner()
    bus = relay({"signer": signer, "keys": SigningKeys()}, stages={"provision": False})
    result = outbound(bus, make_message(), BOB)
    assert result.messages == ()
    [deferred] = result.deferred
    assert deferred.temporary
    assert "no signing key is known for alice@example.org" in deferred.reason
    assert "sealrelay identity import" in deferred.reason
    assert "subscriber add --provision" in deferred.reason
    assert signer.calls == []


def test_signing_identity_failure_defers_naming_the_plugin(relay):
    plugins = {
        "signer": ToySigner(),
        "hsm": raising("sealrelay_signing_identity", OSError("token removed")),
    }
    [deferred] = outbound(relay(plugins), make_message(), BOB).deferred
    assert deferred.plugin == "hsm"
    assert "OSError: token removed" in deferred.reason


def provisioning_relay(relay: Relay, plugins: Mapping[str, object], **options: Any) -> MessageBus:
    """A relay where Alice is an enabled subscriber without a key, provisioning on send is on,
    and only *plugins* hand out keys, issue certificates and keep identities (unless
    *options* say otherwise)."""
    options = {"keypool": PROVISION_ON_SEND, "disabled": WITHOUT_BUILTIN_STORE, **options}
    return relay({"directory": Directory(Subscriber(address=ALICE)), **plugins}, **options)


def test_hook_sealrelay_new_key_pair(relay, pki):
    made_ahead = ec.generate_private_key(ec.SECP256R1())
    maker, stash, ca, vault, signer = (
        KeyMaker(),
        KeyStash(made_ahead),
        CompanyCA(pki),
        Vault(),
        ToySigner(),
    )
    plugins = {"maker": maker, "stash": stash, "ca": ca, "vault": vault, "signer": signer}
    bus = provisioning_relay(relay, plugins)

    [copy] = outbound(bus, make_message(), BOB).messages

    # Asked once, with [keypool] key_type; firstresult: the stash (registered after the maker,
    # so asked first) answered, and the maker was not asked.
    assert (stash.asked, maker.asked) == (["ec-p256"], [])
    # The key handed out is the one certified, kept and signed with.
    assert ca.calls == [(ALICE, made_ahead.public_key())]
    assert vault.kept[ALICE].private_key is made_ahead
    assert signer_of(copy.content) == vault.kept[ALICE].certificate.fingerprint
    # Provisioned once: the next message is signed with the kept key; nobody is asked again.
    assert outbound(bus, make_message(), BOB).messages[0].signed
    assert stash.asked == ["ec-p256"]

    # None: the stash is empty now, so the maker hands out a key of its own. Every
    # provisioning gets a key nobody was given before.
    bus.provision(ERIN)  # as `sealrelay subscriber add --provision` does
    assert (stash.asked, maker.asked) == (["ec-p256", "ec-p256"], ["ec-p256"])
    assert vault.kept[ERIN].private_key is maker.made[0]

    # Nobody has a key of the kind configured: provisioning fails naming the hook and the
    # kind, no certificate is issued, and the message is deferred, never sent unsigned.
    ca.calls.clear()
    signer.calls.clear()
    rsa_wanted = provisioning_relay(
        relay,
        {**plugins, "vault": Vault()},
        keypool={**PROVISION_ON_SEND, "key_type": "rsa3072"},
        disabled=(*WITHOUT_BUILTIN_STORE, *WITHOUT_BUILTIN_PROVISIONING),
    )
    result = outbound(rsa_wanted, make_message(), BOB)
    assert result.messages == ()
    [deferred] = result.deferred
    assert deferred.temporary
    assert "sealrelay_new_key_pair" in deferred.reason
    assert "rsa3072" in deferred.reason
    assert (ca.calls, signer.calls) == ([], [])

    # Not asked for a sender who is not a subscriber, nor with the provision stage off.
    maker.asked.clear()
    assert outbound(bus, make_message(sender=DAVE), BOB, sender=DAVE).deferred
    off = provisioning_relay(relay, {**plugins, "vault": Vault()}, stages={"provision": False})
    [deferred] = outbound(off, make_message(), BOB).deferred
    assert "no signing key is known for alice@example.org" in deferred.reason
    assert maker.asked == []


def test_new_key_pair_failure_defers_naming_the_plugin(relay, pki):
    ca, vault, signer = CompanyCA(pki), Vault(), ToySigner()
    hsm = raising("sealrelay_new_key_pair", OSError("token removed"))
    bus = provisioning_relay(relay, {"ca": ca, "vault": vault, "signer": signer, "hsm": hsm})

    result = outbound(bus, make_message(), BOB)

    assert result.messages == ()
    [deferred] = result.deferred
    assert deferred.temporary
    assert "plugin hsm failed in sealrelay_new_key_pair: OSError: token removed" in deferred.reason
    assert (ca.calls, vault.offered, signer.calls) == ([], [], [])
    # `subscriber add --provision` gets the same reason, as a ProvisioningError.
    with pytest.raises(ProvisioningError, match="plugin hsm failed in sealrelay_new_key_pair"):
        bus.provision(ALICE)


def test_provisioning_failure_records_the_plugin(relay, pki):
    # Like every other plugin failure on the outbound path, the deferral names the plugin in
    # RecipientFailure.plugin too (the audit log and the console show it).
    hsm = raising("sealrelay_new_key_pair", OSError("token removed"))
    bus = provisioning_relay(relay, {"ca": CompanyCA(pki), "vault": Vault(), "hsm": hsm})
    [deferred] = outbound(bus, make_message(), BOB).deferred
    assert deferred.plugin == "hsm"


def test_hook_sealrelay_issue_certificate(relay, pki, other_pki):
    keys, vault, signer = KeyMaker(), Vault(), ToySigner()
    company, partner = CompanyCA(pki), CompanyCA(other_pki, domain="partner.example")
    plugins = {"keys": keys, "vault": vault, "signer": signer, "company": company}
    bus = provisioning_relay(relay, {**plugins, "partner": partner})

    [copy] = outbound(bus, make_message(), BOB).messages

    # Asked after a key was handed out, with the subscriber's address and the key's public
    # half; firstresult: the partner's CA (registered last, asked first) has no opinion on an
    # address outside its domain, the company's CA answers.
    [key] = keys.made
    assert partner.calls == company.calls == [(ALICE, key.public_key())]
    [issued] = company.issued
    assert issued.certificate.x509.public_key() == key.public_key()
    # The certificate and chain it issued, with the key, are what the stores are offered,
    # with the authority to keep as a trust anchor; the message is signed with it.
    [(identity, authority)] = vault.offered
    assert (identity.address, identity.private_key) == (ALICE, key)
    assert (identity.certificate, identity.chain) == (issued.certificate, issued.chain)
    assert authority == pki.ca
    assert signer_of(copy.content) == issued.certificate.fingerprint

    # None from every CA: provisioning fails naming the hook; no store is offered the key,
    # and the message is deferred, never sent unsigned.
    signer.calls.clear()
    unused = Vault()
    nobody = provisioning_relay(
        relay,
        {**plugins, "vault": unused, "company": CompanyCA(pki, domain="elsewhere.example")},
        disabled=(*WITHOUT_BUILTIN_STORE, *WITHOUT_BUILTIN_PROVISIONING),
    )
    result = outbound(nobody, make_message(), BOB)
    assert result.messages == ()
    [deferred] = result.deferred
    assert "sealrelay_issue_certificate" in deferred.reason
    assert ALICE in deferred.reason
    assert (unused.offered, signer.calls) == ([], [])


def test_issue_certificate_failure_defers_and_the_key_pair_is_not_used_again(relay, pki):
    class FlakyCA(CompanyCA):
        """Offline the first time it is asked."""

        @hookimpl
        def sealrelay_issue_certificate(
            self, address: str, public_key: PublicKeyTypes
        ) -> IssuedCertificate | None:
            if not self.calls:
                self.calls.append((address, public_key))
                raise ConnectionError("CA offline")
            return super().sealrelay_issue_certificate(address, public_key)

    keys, vault, signer = KeyMaker(), Vault(), ToySigner()
    bus = provisioning_relay(
        relay, {"keys": keys, "vault": vault, "signer": signer, "ca": FlakyCA(pki)}
    )

    first = outbound(bus, make_message(), BOB)

    # An exception fails the provisioning naming the plugin: deferred, not sent unsigned.
    assert first.messages == ()
    [deferred] = first.deferred
    assert deferred.temporary
    assert "plugin ca failed in sealrelay_issue_certificate: ConnectionError" in deferred.reason
    assert (vault.offered, signer.calls) == ([], [])
    # The next attempt starts with a new key pair: the one the failed attempt got is not used.
    [copy] = outbound(bus, make_message(), BOB).messages
    assert len(keys.made) == 2
    assert vault.kept[ALICE].private_key is keys.made[1]
    assert signer_of(copy.content) == vault.kept[ALICE].certificate.fingerprint


def test_hook_sealrelay_store_identity(relay, pki, monkeypatch):
    # The built-in store (policy_sql) seals private keys under the master key.
    monkeypatch.setenv(ENV_MASTER_KEY, base64.b64encode(bytes(range(32))).decode())
    keys, ca = KeyMaker(), CompanyCA(pki)
    keeper, declines = Vault(), Vault(keeps=False)
    plugins = {"keys": keys, "ca": ca, "keeper": keeper, "declines": declines}
    bus = relay(plugins, keypool=PROVISION_ON_SEND)

    identity = bus.provision(ALICE)  # as `sealrelay subscriber add --provision` does

    # Called once, at the end of provisioning: the key handed out with the certificate issued
    # for it, and the CA to keep as a trust anchor. Collect-all: every store is offered it.
    [issued] = ca.issued
    assert (identity.private_key, identity.certificate) == (keys.made[0], issued.certificate)
    assert keeper.offered == declines.offered == [(identity, pki.ca)]
    assert list(keeper.kept) == [ALICE]
    # The built-in store kept it too: a relay with none of the test's stores signs with it,
    # and trusts the CA that issued it.
    signer = ToySigner()
    later = relay({"signer": signer})
    [copy] = outbound(later, make_message(), BOB).messages
    assert signer_of(copy.content) == identity.certificate.fingerprint
    anchors = later.plugins.pm.hook.sealrelay_trust_anchors()
    assert pki.ca.fingerprint in {anchor.fingerprint for answer in anchors for anchor in answer}

    # Nobody keeps it (None from every store): the key would be lost, so provisioning fails,
    # and the message that needed the key is deferred, never sent unsigned.
    signer.calls.clear()
    lost = provisioning_relay(
        relay, {"keys": keys, "ca": ca, "declines": declines, "signer": signer}
    )
    with pytest.raises(ProvisioningError, match="sealrelay_store_identity"):
        lost.provision(ALICE)
    result = outbound(lost, make_message(), BOB)
    assert result.messages == ()
    [deferred] = result.deferred
    assert deferred.temporary
    assert "sealrelay_store_identity" in deferred.reason
    assert signer.calls == []


def test_store_identity_failure_fails_provisioning_naming_the_plugin(relay, pki):
    signer = ToySigner()
    plugins = {
        "keys": KeyMaker(),
        "ca": CompanyCA(pki),
        "signer": signer,
        "full_disk": raising("sealrelay_store_identity", OSError("disk full")),
    }
    bus = provisioning_relay(relay, plugins)

    with pytest.raises(ProvisioningError, match=r"no store kept .*failed: full_disk"):
        bus.provision(ALICE)
    result = outbound(bus, make_message(), BOB)
    assert result.messages == ()
    [deferred] = result.deferred
    assert "failed: full_disk" in deferred.reason
    assert deferred.plugin == "full_disk"
    assert signer.calls == []

    # Each store is asked on its own: one that fails does not keep another from storing.
    vault = Vault()
    bus = provisioning_relay(relay, {**plugins, "vault": vault})
    assert bus.provision(ALICE).certificate == vault.kept[ALICE].certificate


def test_hook_sealrelay_decryption_identities(relay, pki):
    old, current = pki.issue(ALICE), pki.issue(ALICE)
    keys, archive, decryptor = KeyArchive(current), KeyArchive(old), ToyDecryptor()
    bus = relay({"decryptor": decryptor, "keys": keys, "archive": archive})
    # Mail encrypted (by a correspondent) to a key Alice no longer uses for signing.
    message = toy_encrypt(make_message(sender=CAROL, to=(ALICE,)), [old.certificate], "aes128-gcm")

    result = inbound(bus, message)

    # Collect-all: every store's keys reach the decryptor, which picks the matching one.
    assert keys.asked == archive.asked == [ALICE]
    assert {i.certificate.fingerprint for i in decryptor.calls[0]} == {
        old.certificate.fingerprint,
        current.certificate.fingerprint,
    }
    assert result.decrypted
    assert SECRET.encode() in result.content
    assert b"X-Sealrelay-Decryption: decrypted; cipher=aes128-gcm" in result.content
    assert b"Subject: Quarterly figures" in result.content  # outer headers kept

    # A failure marks the message as not decrypted, naming the plugin; it is still delivered.
    broken = relay(
        {
            "decryptor": decryptor,
            "archive": raising("sealrelay_decryption_identities", ConnectionError("vault sealed")),
        }
    )
    result = inbound(broken, message)
    assert not result.decrypted
    assert "archive failed in sealrelay_decryption_identities" in (result.decryption_error or "")
    assert result.content.endswith(message.partition(b"\r\n\r\n")[2])

    # The decrypt stage off: nobody is asked and the message is delivered as it came.
    archive.asked.clear()
    off = relay({"decryptor": decryptor, "archive": archive}, stages={"decrypt": False})
    assert inbound(off, message).decryption_error == "decrypt-stage-off"
    assert archive.asked == []


def test_hook_sealrelay_recipient_certificates(relay, pki, other_pki):
    alice = pki.issue(ALICE)
    bob_soon, bob_later = pki.issue(BOB, valid_days=30), pki.issue(BOB, valid_days=700)
    unusable = (
        pki.issue(BOB, expired=True).certificate,
        pki.issue(BOB, trusted=False).certificate,  # nobody vouched for it
        other_pki.issue(CAROL).certificate,  # another address
    )
    ldap = CertificateStore(*unusable, bob_soon.certificate)
    local = CertificateStore(bob_later.certificate)
    encryptor = ToyEncryptor()
    bus = relay(
        {
            "keys": SigningKeys(alice),
            "signer": ToySigner(),
            "encryptor": encryptor,
            "ldap": ldap,
            "local": local,
        }
    )

    [copy] = outbound(bus, make_message(), BOB).messages

    # Collect-all: both stores asked; the core picked the valid, trusted one for the address
    # that expires last.
    assert ldap.asked == local.asked == [BOB]
    assert encryptor.calls == [[bob_later.certificate]]
    assert copy.encrypted
    assert toy_recipients(copy.content) == [bob_later.certificate.fingerprint]
    assert SECRET.encode() not in copy.content

    # Not asked when the policy never encrypts.
    ldap.asked.clear()
    never = relay({"ldap": ldap, "house": HouseRule()})
    assert not outbound(never, make_message(), BOB).messages[0].encrypted
    assert ldap.asked == []


@pytest.mark.parametrize(
    ("missing_certificate", "outcome"), [("reject", "rejected"), ("hold", "deferred")]
)
def test_recipient_certificates_none_usable_never_sends_plaintext(
    relay, pki, missing_certificate, outcome
):
    encryptor = ToyEncryptor()
    bus = relay(
        {
            "encryptor": encryptor,
            "store": CertificateStore(pki.issue(BOB, expired=True).certificate),
        },
        policy={"sign": "none", "encrypt": "always", "missing_certificate": missing_certificate},
    )
    result = outbound(bus, make_message(to=(BOB, CAROL)), BOB, CAROL)
    assert result.messages == ()
    failures = getattr(result, outcome)
    assert [f.recipient for f in failures] == [BOB, CAROL]
    assert "no valid certificate is known for bob@example.net" in failures[0].reason
    assert encryptor.calls == []


def test_recipient_certificates_failure_defers_that_recipient(relay, pki):
    class FlakyLdap:
        @hookimpl
        def sealrelay_recipient_certificates(self, address: str) -> list[Certificate]:
            if address == CAROL:
                raise TimeoutError("ldap timeout")
            return []

    bus = relay({"ldap": FlakyLdap()}, policy={"sign": "none"})
    result = outbound(bus, make_message(to=(BOB, CAROL)), BOB, CAROL)
    assert list(by_recipient(result)) == [BOB]
    [deferred] = result.deferred
    assert deferred.recipient == CAROL
    assert "plugin ldap failed in sealrelay_recipient_certificates" in deferred.reason


def test_recipient_certificates_malformed_certificate_is_ignored(relay, caplog):
    class CorruptStore:
        @hookimpl
        def sealrelay_recipient_certificates(self) -> list[Certificate]:
            return [Certificate(der=b"not DER", trusted=True)]

    # A broken row is not a certificate: the recipient is treated as having none, and the
    # message is not held up for everyone else.
    table = PolicyTable({CAROL: Policy(sign="none", encrypt="always")})
    bus = relay({"store": CorruptStore(), "policies": table}, policy={"sign": "none"})
    with caplog.at_level(logging.WARNING):
        result = outbound(bus, make_message(to=(BOB, CAROL)), BOB, CAROL)
    assert list(by_recipient(result)) == [BOB]
    assert [r.recipient for r in result.rejected] == [CAROL]
    assert "ignoring a certificate that does not parse" in caplog.text


def test_hook_sealrelay_trust_anchors(relay, pki, other_pki):
    carol = pki.issue(CAROL)
    verifier = ToyVerifier(carol)
    company, partners = TrustStore(pki.ca), TrustStore(other_pki.ca)
    bus = relay({"verifier": verifier, "company": company, "partners": partners})

    result = inbound(bus, signed_by(carol))

    # Collect-all: every store's anchors reach the verifier.
    anchors = {c.fingerprint for c in verifier.calls[0]["anchors"]}
    assert anchors == {pki.ca.fingerprint, other_pki.ca.fingerprint}
    assert result.signature.status == "valid"

    # Without the anchor that issued Carol's certificate, her signature is untrusted.
    result = inbound(
        relay({"verifier": ToyVerifier(carol), "partners": partners}), signed_by(carol)
    )
    assert (result.signature.status, result.signature.reason) == ("invalid", "untrusted")

    # A failure marks the signature as not verified, naming the plugin; the mail is delivered.
    broken = {
        "verifier": ToyVerifier(carol),
        "company": raising("sealrelay_trust_anchors", OSError("bundle unreadable")),
    }
    result = inbound(relay(broken), signed_by(carol))
    assert result.signature.status == "invalid"
    assert "company failed in sealrelay_trust_anchors" in (result.signature.reason or "")
    assert SECRET.encode() in result.content

    # The verify stage off: nobody is asked, the signature is not judged.
    quiet = ToyVerifier(carol)
    result = inbound(
        relay({"verifier": quiet, "company": company}, stages={"verify": False}), signed_by(carol)
    )
    assert (result.signature.status, quiet.calls) == ("none", [])


def test_hook_sealrelay_revocation_lists(relay, pki):
    carol, dave = pki.issue(CAROL), pki.issue(DAVE)
    message = signed_by(carol)

    def verify_with(*crls: bytes) -> tuple[SignatureVerdict, list[bytes]]:
        verifier = ToyVerifier(carol)
        stores = {f"crls_{n}": TrustStore(crls=(crl,)) for n, crl in enumerate(crls)}
        bus = relay({"verifier": verifier, "anchors": TrustStore(pki.ca), **stores})
        return inbound(bus, message).signature, verifier.calls[0]["crls"]

    # Collect-all: every list reaches the verifier.
    names_dave, names_nobody, names_carol = (
        pki.crl(dave.certificate),
        pki.crl(),
        pki.crl(carol.certificate),
    )
    verdict, crls = verify_with(names_dave, names_nobody)
    assert sorted(crls) == sorted([names_dave, names_nobody])
    assert verdict.status == "valid"
    # A list that names Carol's certificate makes her signature invalid.
    verdict, _ = verify_with(names_nobody, names_carol)
    assert (verdict.status, verdict.reason) == ("invalid", "revoked")

    # A failure marks the signature as not verified, naming the plugin.
    broken = {
        "verifier": ToyVerifier(carol),
        "anchors": TrustStore(pki.ca),
        "crl_fetcher": raising("sealrelay_revocation_lists", TimeoutError("CRL server down")),
    }
    result = inbound(relay(broken), message)
    assert result.signature.status == "invalid"
    assert "crl_fetcher failed in sealrelay_revocation_lists" in (result.signature.reason or "")


class CrlMirror:
    """Keeps the CRLs the relay's CA publishes (``sealrelay_store_revocation_list``), e.g. for
    the web server behind the CRL distribution point; with *issuer*, only that CA's."""

    def __init__(self, issuer: x509.Name | None = None) -> None:
        self.issuer = issuer
        self.received: list[bytes] = []

    @hookimpl
    def sealrelay_store_revocation_list(self, crl: bytes) -> str | None:
        self.received.append(crl)
        if self.issuer is not None and x509.load_der_x509_crl(crl).issuer != self.issuer:
            return None  # another CA's list: not kept here
        return hashlib.sha256(crl).hexdigest()


def test_hook_sealrelay_store_revocation_list(relay, pki, other_pki, monkeypatch, caplog):
    # The built-in store (policy_sql) keeps Alice's provisioned key, sealed under the master key.
    monkeypatch.setenv(ENV_MASTER_KEY, base64.b64encode(bytes(range(32))).decode())
    mirror, partners = CrlMirror(), CrlMirror(issuer=other_pki.ca.x509.subject)
    plugins = {"keys": KeyMaker(), "ca": CompanyCA(pki), "signer": ToySigner()}
    bus = relay({**plugins, "mirror": mirror, "partners": partners}, keypool=PROVISION_ON_SEND)
    alice = bus.provision(ALICE)
    assert outbound(bus, make_message(), BOB).messages[0].signed
    assert (mirror.received, partners.received) == ([], [])  # not called while mail flows

    # The relay's CA revokes Alice's certificate and publishes its new CRL.
    crl = pki.crl(alice.certificate)
    stored, failed = bus.publish_revocation_list(crl)

    # Collect-all: every store is handed the CRL; the stores that kept it come back (the
    # partners' mirror answered None: not its CA). The built-in store kept it because it
    # keeps the CA, which provisioning gave it as a trust anchor.
    assert mirror.received == partners.received == [crl]
    assert (sorted(stored), failed) == (["mirror", "policy_sql"], [])
    crls = bus.plugins.pm.hook.sealrelay_revocation_lists()
    assert crl in [known for answer in crls for known in answer]
    # ... and stops using the revoked certificate at once: Alice has no key to sign with now,
    # and her message waits rather than going out unsigned.
    result = outbound(bus, make_message(), BOB)
    assert result.messages == ()
    assert "no signing key is known for alice@example.org" in result.deferred[0].reason

    # A failing store is logged naming the plugin and reported; the other stores still get it.
    after = CrlMirror()
    broken = relay(
        {
            "mirror": after,
            "cdp": raising("sealrelay_store_revocation_list", OSError("read-only")),
        }
    )
    caplog.clear()
    stored, failed = broken.publish_revocation_list(crl)
    assert ("mirror" in stored, failed) == (True, ["cdp"])
    assert after.received == [crl]
    assert "plugin cdp failed in sealrelay_store_revocation_list" in caplog.text


class Harvester:
    def __init__(self, *, keeps: bool) -> None:
        self.keeps = keeps
        self.calls: list[tuple[str, Certificate, list[Certificate]]] = []

    @hookimpl
    def sealrelay_harvest_certificate(
        self, address: str, certificate: Certificate, chain: list[Certificate]
    ) -> str | None:
        self.calls.append((address, certificate, chain))
        return certificate.fingerprint if self.keeps else None


def test_hook_sealrelay_harvest_certificate(relay, pki, other_pki, caplog):
    carol, stranger = pki.issue(CAROL), other_pki.issue(CAROL)
    keeper, skipper = Harvester(keeps=True), Harvester(keeps=False)
    plugins = {
        "verifier": ToyVerifier(carol, stranger),
        "anchors": TrustStore(pki.ca),
        "keeper": keeper,
        "skipper": skipper,
    }
    bus = relay(plugins)

    result = inbound(bus, signed_by(carol))

    # Collect-all: every store is offered the verified signer's certificate and its chain
    # (without the signer); the fingerprints of what was stored are reported.
    assert result.harvested == (carol.certificate.fingerprint,)
    for store in (keeper, skipper):
        assert store.calls == [(CAROL, carol.certificate, [pki.ca])]

    # Only verified signatures are harvested: an untrusted signer is not.
    keeper.calls.clear()
    assert inbound(bus, signed_by(stranger)).harvested == ()
    assert keeper.calls == []
    # The harvest stage off: nobody is asked.
    off = relay({**plugins, "keeper": keeper}, stages={"harvest": False})
    assert inbound(off, signed_by(carol)).harvested == ()
    assert keeper.calls == []

    # A failure is logged; the message is delivered with its verdict.
    broken = {**plugins, "full_disk": raising("sealrelay_harvest_certificate", OSError("full"))}
    with caplog.at_level(logging.WARNING):
        result = inbound(relay(broken), signed_by(carol))
    # The other stores still keep the certificate.
    assert (result.signature.status, result.harvested) == (
        "valid",
        (carol.certificate.fingerprint,),
    )
    assert "full_disk failed in sealrelay_harvest_certificate" in caplog.text


# == crypto =================================================================================


def test_hook_sealrelay_sign_message(relay, pki):
    alice = pki.issue(ALICE)
    clear_only, opaque_only = ToySigner(modes=("clear",)), ToySigner(modes=("opaque",))
    table = PolicyTable(
        {
            BOB: Policy(sign="clear", encrypt="never"),
            CAROL: Policy(sign="opaque", digest="sha384", encrypt="never"),
        }
    )
    bus = relay(
        {"keys": SigningKeys(alice), "clear": clear_only, "opaque": opaque_only, "table": table}
    )
    # A forged verdict on submitted mail is removed before anyone signs it.
    message = make_message(to=(BOB, CAROL), extra=("X-Sealrelay-Signature: valid",))

    copies = by_recipient(outbound(bus, message, BOB, CAROL))

    # firstresult: a signer that does not handle the mode says None; the next one signs.
    assert copies[BOB].sign_mode == "clear"
    assert copies[BOB].content.count(b"multipart/signed") == 1
    assert copies[CAROL].sign_mode == "opaque"
    assert b"smime-type=signed-data" in copies[CAROL].content
    entity, signature = signature_of(copies[CAROL].content)
    assert signature.endswith(b"digest=sha384")
    assert SECRET.encode() in entity
    # What the signer got: the whole message, the sender's identity, the policy.
    submitted, identity, policy = clear_only.calls[0]
    assert b"X-Sealrelay-" not in submitted
    assert submitted.startswith(b"From: Sender <alice@example.org>")
    assert (identity, policy.sign) == (alice, "clear")

    # Mail that is signed already is never signed again.
    clear_only.calls.clear()
    presigned = toy_sign(make_message(), alice.certificate, digest="sha256", mode="clear")
    [copy] = outbound(bus, presigned, BOB).messages
    assert (copy.content, copy.signed, copy.sign_mode) == (presigned, True, "none")
    assert clear_only.calls == []


def test_sign_message_nobody_signs_defers(relay, pki):
    bus = relay(
        {"keys": SigningKeys(pki.issue(ALICE)), "clear": ToySigner(modes=("clear",))},
        policy={"sign": "opaque"},
        disabled=WITHOUT_BUILTIN_CRYPTO,
    )
    result = outbound(bus, make_message(), BOB)
    assert result.messages == ()
    [deferred] = result.deferred
    assert "no plugin signed the message" in deferred.reason
    assert "sealrelay_sign_message: clear" in deferred.reason  # who could have


def test_sign_message_failure_defers_naming_the_plugin(relay, pki):
    plugins = {
        "keys": SigningKeys(pki.issue(ALICE)),
        "hsm_signer": raising("sealrelay_sign_message", RuntimeError("PKCS#11 session closed")),
    }
    [deferred] = outbound(relay(plugins), make_message(), BOB).deferred
    assert (deferred.plugin, deferred.temporary) == ("hsm_signer", True)
    assert "RuntimeError: PKCS#11 session closed" in deferred.reason


def test_hook_sealrelay_encrypt_message(relay, pki):
    alice, bob, carol, dave = (pki.issue(a) for a in (ALICE, BOB, CAROL, DAVE))
    encryptor = ToyEncryptor()
    store = CertificateStore(bob.certificate, carol.certificate, dave.certificate)
    bus = relay(
        {"keys": SigningKeys(alice), "signer": ToySigner(), "encryptor": encryptor, "store": store},
        policy={"encrypt": "always", "cipher": "aes128-gcm", "encrypt_to_sender": True},
    )
    # Dave is a Bcc recipient: he is in the envelope, not in To or Cc.
    message = make_message(to=(BOB,), cc=(CAROL,))

    copies = by_recipient(outbound(bus, message, BOB, CAROL, DAVE))

    # Bob and Carol share one copy encrypted to both (and to Alice, encrypt_to_sender);
    # Dave gets his own, so that his certificate does not show in theirs.
    assert copies[BOB] is copies[CAROL]
    assert set(toy_recipients(copies[BOB].content)) == {
        bob.certificate.fingerprint,
        carol.certificate.fingerprint,
        alice.certificate.fingerprint,
    }
    assert set(toy_recipients(copies[DAVE].content)) == {
        dave.certificate.fingerprint,
        alice.certificate.fingerprint,
    }
    assert (copies[BOB].encrypted, copies[BOB].cipher) == (True, "aes128-gcm")
    # Sign, then encrypt: what was encrypted is the signed message.
    entity = base64.b64decode(json.loads(pkcs7_payload(copies[DAVE].content))["entity"])
    assert b"multipart/signed" in entity
    for copy in copies.values():
        assert SECRET.encode() not in copy.content


def test_encrypt_message_nobody_encrypts_defers_and_never_sends_plaintext(relay, pki):
    class OnlyRsa:  # the test keys are EC: not mine
        @hookimpl
        def sealrelay_encrypt_message(self, certificates: list[Certificate]) -> None:
            return None

    bus = relay(
        {"store": CertificateStore(pki.issue(BOB).certificate), "rsa": OnlyRsa()},
        policy={"sign": "none", "encrypt": "if-possible"},
        disabled=WITHOUT_BUILTIN_CRYPTO,
    )
    result = outbound(bus, make_message(), BOB)
    assert result.messages == ()
    [deferred] = result.deferred
    assert "no plugin encrypted the message" in deferred.reason


def test_encrypt_message_failure_defers_naming_the_plugin(relay, pki):
    plugins = {
        "store": CertificateStore(pki.issue(BOB).certificate),
        "encryptor": raising("sealrelay_encrypt_message", MemoryError()),
    }
    [deferred] = outbound(relay(plugins, policy={"sign": "none"}), make_message(), BOB).deferred
    assert deferred.plugin == "encryptor"


def test_encrypt_stage_off_refuses_instead_of_sending_plaintext(relay, pki):
    encryptor = ToyEncryptor()
    bus = relay(
        {"store": CertificateStore(pki.issue(BOB).certificate), "encryptor": encryptor},
        policy={"sign": "none", "encrypt": "always"},
        stages={"encrypt": False},
    )
    result = outbound(bus, make_message(), BOB)
    assert result.messages == ()
    assert "encrypt stage is off in [stages]" in result.rejected[0].reason
    assert encryptor.calls == []


def test_hook_sealrelay_decrypt_message(relay, pki):
    alice, carol = pki.issue(ALICE), pki.issue(CAROL)

    class AuthEnvelopedOnly:
        def __init__(self) -> None:
            self.asked = 0

        @hookimpl
        def sealrelay_decrypt_message(self, message: bytes) -> Decryption | None:
            self.asked += 1
            return None  # not this format: let the next decryptor try

    legacy, decryptor = AuthEnvelopedOnly(), ToyDecryptor()
    plugins = {
        "decryptor": decryptor,
        "legacy": legacy,
        "keys": KeyArchive(alice),
        "verifier": ToyVerifier(carol),
        "anchors": TrustStore(pki.ca),
    }
    bus = relay(plugins)
    # Carol signed, then encrypted to Alice: two layers.
    inner = signed_by(carol, mode="opaque")
    message = toy_encrypt(inner, [alice.certificate], "aes256-cbc")

    result = inbound(bus, message)

    # firstresult: "not mine" from one plugin, the answer from the next.
    assert legacy.asked == 1
    assert result.decrypted
    # The decrypted layer is processed in turn: the signature inside is verified and unwrapped.
    assert result.signature.status == "valid"
    assert b"X-Sealrelay-Signature: valid; signer=carol@partner.example" in result.content
    assert f"The figures: {SECRET}".encode() in result.content

    # None from everybody: delivered as it came, marked unsupported.
    result = inbound(
        relay({"legacy": AuthEnvelopedOnly()}, disabled=WITHOUT_BUILTIN_CRYPTO), message
    )
    assert (result.decrypted, result.decryption_error) == (False, "unsupported")

    # A MessageError with a reason code (not one of my keys): delivered marked with it.
    result = inbound(
        relay({"decryptor": ToyDecryptor(), "keys": KeyArchive(pki.issue(ALICE))}), message
    )
    assert result.decryption_error == "no-key"
    assert b"X-Sealrelay-Decryption: failed; reason=no-key" in result.content
    assert SECRET.encode() not in result.content


def test_hook_sealrelay_verify_signature(relay, pki):
    carol = pki.issue(CAROL)
    verifier = ToyVerifier(carol)
    bus = relay({"verifier": verifier, "anchors": TrustStore(pki.ca)})
    # Mail forwarded by a list: the envelope sender is the list, From is Carol. A forged
    # verdict header comes with it.
    clear = signed_by(carol, mode="clear")
    forged = b"X-Sealrelay-Signature: valid; signer=ceo@example.org\r\n" + clear

    result = inbound(bus, forged, sender="list-bounces@lists.example")

    # The verifier checks against From; the anchors and lists are handed over.
    assert verifier.calls[0]["sender"] == CAROL
    assert [c.fingerprint for c in verifier.calls[0]["anchors"]] == [pki.ca.fingerprint]
    assert result.signature == SignatureVerdict(
        status="valid", signer=CAROL, crypto="ok", chain="ok", address="ok"
    )
    # A clear signature is delivered as signed, so the mail client can check it too; the
    # forged header is gone, ours is in front.
    assert (
        result.content == b"X-Sealrelay-Signature: valid; signer=carol@partner.example\r\n"
        b"X-Sealrelay-Decryption: none\r\n" + clear
    )
    # An opaque signature is unwrapped, so that every client can read the message.
    opaque = inbound(bus, signed_by(carol, mode="opaque"))
    assert b"application/pkcs7-mime" not in opaque.content
    assert b"From: Sender <carol@partner.example>" in opaque.content
    assert f"The figures: {SECRET}".encode() in opaque.content

    # A bad signature is a verdict, not an error.
    forger = pki.issue("ceo@example.org")
    spoofed = toy_sign(
        make_message(sender=CAROL), forger.certificate, digest="sha256", mode="clear"
    )
    result = inbound(
        relay({"verifier": ToyVerifier(forger), "anchors": TrustStore(pki.ca)}), spoofed
    )
    assert (result.signature.status, result.signature.reason) == ("invalid", "address-mismatch")


def test_verify_signature_none_or_failure_marks_not_verified_and_delivers(relay, pki):
    class NotMine:
        @hookimpl
        def sealrelay_verify_signature(self) -> None:
            return None

    message = signed_by(pki.issue(CAROL))
    result = inbound(relay({"other": NotMine()}, disabled=WITHOUT_BUILTIN_CRYPTO), message)
    assert (result.signature.status, result.signature.reason) == ("invalid", "unsupported")

    broken = {"verifier": raising("sealrelay_verify_signature", ValueError("bad ASN.1"))}
    result = inbound(relay(broken), message)
    assert result.signature.status == "invalid"
    assert "verifier failed in sealrelay_verify_signature" in (result.signature.reason or "")
    assert result.content.endswith(message)


# == messages ===============================================================================


def test_hook_sealrelay_message_processed(tmp_path, pki, caplog):
    collector = Collector()
    reports = collector.reports
    config = make_config(tmp_path, policy={"sign": "none"})
    plugins = {
        "metrics": collector,
        # Registered last, called first: its failure must not keep the others from the call.
        "broken_alerts": raising("sealrelay_message_processed", RuntimeError("smtp down")),
    }
    (tmp_path / "var").mkdir()  # the built-in audit log writes once the data directory exists

    with MessageBus(load(config, plugins), config) as bus, caplog.at_level(logging.ERROR):
        envelope = Envelope(sender=ALICE, recipients=(BOB,))
        sent = bus.process_outbound(envelope, make_message())
        received = inbound(bus, make_message(sender=CAROL, to=(ALICE,)))

    # One report per message, in and out, whatever the outcome; the failure is logged only.
    assert [r.direction for r in reports] == ["outbound", "inbound"]
    assert reports[0].envelope is envelope
    assert reports[0].outbound is sent
    assert reports[1].inbound is received
    assert all(r.duration_seconds >= 0 for r in reports)
    assert "broken_alerts failed in sealrelay_message_processed (ignored)" in caplog.text
    assert sent.messages[0].content == make_message()

    # Deferred messages are reported too.
    config = make_config(tmp_path, policy={"sign": "clear"}, stages={"provision": False})
    with MessageBus(load(config, plugins), config) as bus:
        outbound(bus, make_message(), BOB)
    assert [f.recipient for f in reports[-1].outbound.deferred] == [BOB]  # type: ignore[union-attr]

    # Implemented by the built-in audit_log: one JSON line per message, no content.
    lines = (tmp_path / "var" / "audit.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert [(e["event"], e["direction"]) for e in events] == [
        ("message", "outbound"),
        ("message", "inbound"),
        ("message", "outbound"),
    ]
    assert SECRET not in "".join(lines)


def test_the_audit_log_follows_a_rotated_file_and_loses_no_line(tmp_path):
    # The log keeps its file open between messages; logrotate moves it away.
    config = make_config(tmp_path, policy={"sign": "none"})
    (tmp_path / "var").mkdir()
    log, rotated = tmp_path / "var" / "audit.jsonl", tmp_path / "var" / "audit.jsonl.1"
    with MessageBus(load(config), config) as bus:
        outbound(bus, make_message(), BOB)
        log.rename(rotated)
        outbound(bus, make_message(), BOB)  # may still go to the moved file
        time.sleep(1.1)  # the path is compared with the open file once a second
        outbound(bus, make_message(), BOB)
        log.unlink()
        time.sleep(1.1)
        outbound(bus, make_message(), BOB)

    def ids(path: Path) -> list[str]:
        return [json.loads(line)["id"] for line in path.read_text().splitlines()]

    assert len(ids(rotated)) in (1, 2)
    assert len(ids(log)) == 1  # the fourth message, in a file made anew after the deletion
    assert len(set(ids(rotated))) == len(ids(rotated))


# == front ends =============================================================================


class DropFolder:
    """A front end that hands queued messages to the bus once started (as an SMTP listener
    hands over each message it accepts)."""

    name = "drop-folder"

    def __init__(self, bus: MessageBus, queue: list[bytes]) -> None:
        self.bus = bus
        self.queue = queue
        self.loop_threads: list[int] = []
        self.results: list[Any] = []
        self.stopped = False

    async def start(self) -> None:
        self.loop_threads.append(threading.get_ident())
        for message in self.queue:
            envelope = Envelope(sender=ALICE, recipients=(BOB,))
            self.results.append(await self.bus.run_outbound(envelope, message))

    async def stop(self) -> None:
        self.stopped = True


class DropFolderPlugin:
    """Creates the front end, and notes in which thread the pipeline runs its hooks."""

    def __init__(self, queue: list[bytes]) -> None:
        self.queue = queue
        self.created: list[DropFolder] = []
        self.pipeline_threads: list[int] = []

    @hookimpl
    def sealrelay_create_frontends(self, config: Config, bus: MessageBus) -> list[Frontend]:
        self.created.append(DropFolder(bus, self.queue))
        return list(self.created)

    @hookimpl
    def sealrelay_resolve_policy(self) -> None:
        self.pipeline_threads.append(threading.get_ident())


class NotConfigured:
    @hookimpl
    def sealrelay_create_frontends(self) -> list[Frontend]:
        return []  # serves nothing in this configuration


def test_hook_sealrelay_create_frontends(tmp_path):
    # As `sealrelay serve` (frontend_smtp's worker) calls it: collect-all, then start() on
    # every front end, stop() in reverse order. The built-in SMTP front end is switched off
    # here, as an operator can, so that no test listens on a real port.
    config = make_config(tmp_path, policy={"sign": "none"}, disabled=("frontend_smtp",))
    plugin = DropFolderPlugin([make_message()])
    loaded = load(config, {"drop": plugin, "imap": NotConfigured()})

    async def serve(bus: MessageBus) -> list[Frontend]:
        answers = loaded.pm.hook.sealrelay_create_frontends(config=config, bus=bus)
        frontends: list[Frontend] = [frontend for answer in answers for frontend in answer]
        for frontend in frontends:
            await frontend.start()
        for frontend in reversed(frontends):
            await frontend.stop()
        return frontends

    with MessageBus(loaded, config) as bus:
        frontends = asyncio.run(serve(bus))

    # Collect-all: one list per plugin, flattened; the empty one contributes nothing.
    [folder] = plugin.created
    assert frontends == [folder]
    assert isinstance(folder, Frontend)
    assert folder.stopped
    assert folder.results[0].messages[0].recipients == (BOB,)
    # The bus ran the message's hooks in a worker thread, never on the event loop.
    assert len(plugin.pipeline_threads) == 1
    assert plugin.pipeline_threads[0] not in folder.loop_threads


# == commands ===============================================================================


class AuditTail(AdminCommand):
    name = "audit tail"
    summary = "show the last lines of the audit log"
    read_only = True
    parameters = (Parameter(name="lines", kind="int", default=10, help="how many lines"),)

    def run(self, context: CommandContext) -> CommandResult:
        path = context.config.data_dir / "audit.jsonl"
        lines = path.read_text().splitlines()[-self.params["lines"] :] if path.exists() else []
        return CommandResult(data={"lines": lines}, text="\n".join(lines))


class AuditCommands:
    @hookimpl
    def sealrelay_register_commands(self) -> list[type[AdminCommand]]:
        return [AuditTail]


def test_hook_sealrelay_register_commands(tmp_path):
    config = make_config(tmp_path)
    registry, context = load_with_commands(config, {"audit_tools": AuditCommands()})

    # Collect-all: the plugin's command beside the built-in ones, under one registry.
    assert {"audit tail", "init", "plugins", "policy explain"} <= set(registry.commands)
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "audit.jsonl").write_text("one\ntwo\nthree\n")
    result = registry.execute("audit tail", {"lines": "2"}, context)  # checked, converted
    assert result.data == {"lines": ["two", "three"]}
    with pytest.raises(CommandError, match="--lines: 'many' is not int"):
        registry.execute("audit tail", {"lines": "many"}, context)

    # Two plugins claiming one command name is a start-up error naming both.
    class Impostor:
        @hookimpl
        def sealrelay_register_commands(self) -> list[type[AdminCommand]]:
            return [AuditTail]

    loaded = load(config, {"audit_tools": AuditCommands(), "impostor": Impostor()})
    with pytest.raises(SealrelayError, match="command 'audit tail' is registered by") as error:
        CommandRegistry.from_plugins(loaded)
    assert "'audit_tools'" in str(error.value)
    assert "'impostor'" in str(error.value)


def test_register_commands_failure_names_the_plugin(tmp_path):
    plugin = {"broken_tools": raising("sealrelay_register_commands", ImportError("no click"))}
    with pytest.raises(SealrelayError, match="broken_tools"):
        load_with_commands(make_config(tmp_path), plugin)


class Unseal(AdminCommand):
    name = "vault unseal"
    summary = "unseal the key vault"
    parameters = (
        Parameter(name="vault", help="vault name", required=True),
        Parameter(name="passphrase", help="the passphrase", required=True, secret=True),
    )

    def run(self, context: CommandContext) -> CommandResult:
        if self.params["passphrase"] != "correct horse":
            raise CommandError("wrong passphrase")
        sealed = self.params["vault"] == "sealed-for-good"
        return CommandResult(data={}, text="", exit_status=1 if sealed else 0)


def test_hook_sealrelay_command_executed(tmp_path, caplog):
    collector = Collector()
    records = collector.records

    class VaultCommands:
        @hookimpl
        def sealrelay_register_commands(self) -> list[type[AdminCommand]]:
            return [Unseal]

    plugins = {
        "vault": VaultCommands(),
        "siem": collector,
        "broken_syslog": raising("sealrelay_command_executed", OSError("no /dev/log")),
    }
    registry, context = load_with_commands(make_config(tmp_path), plugins)

    with caplog.at_level(logging.ERROR):
        ok = registry.execute(
            "vault unseal", {"vault": "main", "passphrase": "correct horse"}, context
        )
        registry.execute(
            "vault unseal", {"vault": "sealed-for-good", "passphrase": "correct horse"}, context
        )
        with pytest.raises(CommandError, match="wrong passphrase"):
            registry.execute("vault unseal", {"vault": "main", "passphrase": "guess"}, context)

    # One record per run: who, what (secrets hidden), how it ended. A failing notification
    # changes nothing: the command's own result stands.
    assert ok.exit_status == 0
    assert [(r.command, r.actor, r.outcome) for r in records] == [
        ("vault unseal", "test:hooks", "ok"),
        ("vault unseal", "test:hooks", "failed"),
        ("vault unseal", "test:hooks", "error"),
    ]
    assert records[0].parameters == {"vault": "main", "passphrase": "***"}
    assert records[2].error == "wrong passphrase"
    assert all("correct horse" not in repr(r) for r in records)
    assert "broken_syslog failed in sealrelay_command_executed (ignored)" in caplog.text
