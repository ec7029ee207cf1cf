"""The built-in crypto_smime plugin through the bus: real keys, real messages, and OpenSSL as
the correspondent on the other side, in both directions."""

from __future__ import annotations

import base64
import quopri
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from sealrelay import Certificate, Policy, hookimpl
from sealrelay.core.bus import MessageBus
from sealrelay.core.config import parse_config
from sealrelay.core.envelope import Envelope
from sealrelay.core.plugins import load_plugins
from sealrelay.plugins import crypto_smime
from sealrelay.smime import memo
from tests.conftest import require_executable
from tests.memory_store import MemoryStore, certificate_of, identity_of
from tests.pki import TestIdentity, TestPKI, build_test_pki
from tests.smime.peers import run


ALICE = "alice@example.org"  # our subscriber (RSA-2048)
BOB = "bob@example.org"  # a correspondent with RSA-3072
CAROL = "carol@example.org"  # a correspondent with EC P-256

# 8bit text and a "-- " line with trailing white space: both must survive signing.
MESSAGE = (
    b"From: Alice <alice@example.org>\r\nTo: bob@example.org, carol@example.org\r\n"
    b"Subject: the plan\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\nMeet at n\xc3\xb6on.  \r\n-- \r\nAlice\r\n"
)


class Policies:
    def __init__(self) -> None:
        self.table: dict[str, Policy] = {}

    @hookimpl
    def sealrelay_resolve_policy(self, recipient: str) -> Policy | None:
        return self.table.get(recipient)


@pytest.fixture(scope="module")
def pki() -> TestPKI:
    return build_test_pki()


@pytest.fixture
def store(pki: TestPKI) -> MemoryStore:
    store = MemoryStore()
    store.add_identity(identity_of(pki.rsa2048))
    store.anchors.append(Certificate(der=pki.root.public_bytes(Encoding.DER), trusted=True))
    store.crls += [pki.crl.public_bytes(Encoding.DER), pki.root_crl.public_bytes(Encoding.DER)]
    return store


@pytest.fixture
def policies() -> Policies:
    return Policies()


@pytest.fixture
def bus(tmp_path: Path, store: MemoryStore, policies: Policies) -> MessageBus:
    config = parse_config({"storage": {"data_dir": str(tmp_path / "var")}}, tmp_path / "c.toml")
    # The S/MIME plugin alone, with an in-memory store standing in for the real ones.
    plugins = load_plugins(config, builtins=("sealrelay.plugins.crypto_smime",))
    plugins.pm.register(store, name="memory_store")
    plugins.pm.register(policies, name="policies")
    return MessageBus(plugins, config).open()


@pytest.fixture
def openssl() -> str:
    return require_executable("openssl")


def pem_files(directory: Path, identity: TestIdentity) -> tuple[Path, Path]:
    return identity.write_pem_files(directory)


def ca_file(directory: Path, pki: TestPKI) -> Path:
    path = directory / "ca.pem"
    path.write_bytes(
        pki.root.public_bytes(Encoding.PEM) + pki.intermediate.public_bytes(Encoding.PEM)
    )
    return path


def openssl_decrypt(openssl: str, directory: Path, message: bytes, identity: TestIdentity) -> bytes:
    cert, key = pem_files(directory, identity)
    (directory / "in.eml").write_bytes(message)
    return run(
        [openssl, "cms", "-decrypt", "-in", directory / "in.eml", "-recip", cert, "-inkey", key]
    )


def openssl_verify(openssl: str, directory: Path, message: bytes, pki: TestPKI) -> bytes:
    (directory / "signed.eml").write_bytes(message)
    root = directory / "root.pem"
    root.write_bytes(pki.root.public_bytes(Encoding.PEM))
    return run(
        [
            openssl,
            "cms",
            "-verify",
            "-in",
            directory / "signed.eml",
            "-CAfile",
            root,
            "-purpose",
            "smimesign",
        ]
    )


def send(bus: MessageBus, *recipients: str, message: bytes = MESSAGE):
    return bus.process_outbound(Envelope(sender=ALICE, recipients=recipients), message)


def test_first_contact_is_signed_only_and_verifies_in_openssl(bus, openssl, pki, tmp_path):
    result = send(bus, BOB)
    [copy] = result.messages
    assert (copy.signed, copy.sign_mode, copy.encrypted) == (True, "clear", False)
    assert copy.content.startswith(b"From: Alice <alice@example.org>\r\n")
    content = openssl_verify(openssl, tmp_path, copy.content, pki)
    # 8bit text was made 7-bit safe before signing, trailing white space kept (RFC 8551 3.1).
    assert b"Content-Transfer-Encoding: quoted-printable" in content
    assert quopri.decodestring(content.split(b"\r\n\r\n", 1)[1]) == (
        "Meet at nöon.  \r\n-- \r\nAlice\r\n".encode()
    )


def test_known_correspondents_get_one_encrypted_copy_each_key_type(
    bus, store, openssl, pki, tmp_path
):
    store.certificates[BOB] = [certificate_of(pki.rsa3072)]
    store.certificates[CAROL] = [certificate_of(pki.p256)]
    result = send(bus, BOB, CAROL)
    [copy] = result.messages
    assert copy.encrypted
    assert copy.signed
    assert copy.cipher == "aes256-cbc"  # nothing announced: the safe default
    assert b"Meet at" not in copy.content
    for reader in (pki.rsa3072, pki.p256):
        signed = openssl_decrypt(openssl, tmp_path, copy.content, reader)
        assert b"Meet at" in openssl_verify(openssl, tmp_path, signed, pki)


def test_auto_cipher_uses_what_every_recipient_announced(bus, store, pki, openssl, tmp_path):
    store.certificates[BOB] = [
        certificate_of(pki.rsa3072, capabilities=("aes256-gcm", "aes256-cbc"))
    ]
    store.certificates[CAROL] = [
        certificate_of(pki.p256, capabilities=("aes128-gcm", "aes256-gcm"))
    ]
    [copy] = send(bus, BOB, CAROL).messages
    assert copy.cipher == "aes256-gcm"
    assert b"smime-type=authEnveloped-data" in copy.content
    assert b"Meet at" in openssl_decrypt(openssl, tmp_path, copy.content, pki.p256)


def test_opaque_signing_with_sha512(bus, policies, openssl, pki, tmp_path):
    policies.table[BOB] = Policy(sign="opaque", digest="sha512", encrypt="never")
    [copy] = send(bus, BOB).messages
    assert b"smime-type=signed-data" in copy.content
    assert b"Meet at" in openssl_verify(openssl, tmp_path, copy.content, pki)


def test_reply_from_openssl_is_decrypted_verified_and_harvested(bus, store, openssl, pki, tmp_path):
    """The first-contact loop: Bob (running OpenSSL) answers signed and encrypted to Alice;
    his certificate is harvested and the next mail to him is encrypted."""
    bob_cert, bob_key = pem_files(tmp_path, pki.rsa3072)
    alice_cert, _ = pem_files(tmp_path, pki.rsa2048)
    chain = tmp_path / "chain.pem"
    chain.write_bytes(pki.intermediate.public_bytes(Encoding.PEM))
    reply = tmp_path / "reply.txt"
    reply.write_bytes(b"Content-Type: text/plain\r\n\r\nNoon is fine.\r\n")
    signed = run(
        [
            openssl,
            "cms",
            "-sign",
            "-in",
            reply,
            "-signer",
            bob_cert,
            "-inkey",
            bob_key,
            "-certfile",
            chain,
            "-crlfeol",
        ]
    )
    (tmp_path / "signed.eml").write_bytes(signed)
    encrypted = run(
        [
            openssl,
            "cms",
            "-encrypt",
            "-aes-256-gcm",
            "-in",
            tmp_path / "signed.eml",
            "-from",
            BOB,
            "-to",
            ALICE,
            "-subject",
            "Re: the plan",
            alice_cert,
        ]
    )
    result = bus.process_inbound(
        Envelope(sender=BOB, recipients=(ALICE,), direction="inbound"), encrypted, ALICE
    )
    assert result.decrypted
    assert result.signature.status == "valid", result.signature
    assert result.signature.signer == BOB
    assert [address for address, _ in store.harvested] == [BOB]
    assert b"X-Sealrelay-Signature: valid; signer=bob@example.org" in result.content
    assert b"X-Sealrelay-Decryption: decrypted; cipher=aes256-gcm" in result.content
    assert b"Noon is fine." in result.content
    assert b"Subject: Re: the plan" in result.content

    [next_copy] = send(bus, BOB).messages
    assert next_copy.encrypted
    assert b"Meet at" in openssl_decrypt(openssl, tmp_path, next_copy.content, pki.rsa3072)


def test_mail_for_someone_else_is_delivered_marked(bus, openssl, pki, tmp_path):
    bob_cert, _ = pem_files(tmp_path, pki.rsa3072)
    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"Content-Type: text/plain\r\n\r\nnot for alice\r\n")
    encrypted = run([openssl, "cms", "-encrypt", "-aes256", "-in", plain, bob_cert])
    result = bus.process_inbound(
        Envelope(sender=BOB, recipients=(ALICE,), direction="inbound"), encrypted, ALICE
    )
    assert (result.decrypted, result.decryption_error) == (False, "no-key")
    assert result.content.endswith(encrypted.split(b"\n\n", 1)[1])


def test_altered_signed_mail_is_invalid_and_not_harvested(bus, store, openssl, pki, tmp_path):
    bob_cert, bob_key = pem_files(tmp_path, pki.rsa3072)
    text = tmp_path / "text.txt"
    text.write_bytes(b"Content-Type: text/plain\r\n\r\nPay 10 EUR.\r\n")
    signed = run(
        [
            openssl,
            "cms",
            "-sign",
            "-in",
            text,
            "-signer",
            bob_cert,
            "-inkey",
            bob_key,
            "-crlfeol",
            "-from",
            BOB,
        ]
    )
    forged = signed.replace(b"Pay 10 EUR.", b"Pay 99 EUR.")
    result = bus.process_inbound(
        Envelope(sender=BOB, recipients=(ALICE,), direction="inbound"), forged, ALICE
    )
    assert (result.signature.status, result.signature.reason) == ("invalid", "content-altered")
    assert store.harvested == []


def test_message_certificates_are_made_once_and_only_small_ones_kept(pki, monkeypatch):
    cert = pki.rsa2048.cert
    first = crypto_smime._certificate(cert, ("aes256-gcm",))
    assert first.der == cert.public_bytes(Encoding.DER)
    assert (first.source, first.capabilities) == ("message", ("aes256-gcm",))
    assert crypto_smime._certificate(cert, ("aes256-gcm",)) is first
    assert crypto_smime._certificate(cert).capabilities == ()

    monkeypatch.setattr(memo, "MAX_CACHED_CERTIFICATE", len(cert.tbs_certificate_bytes))
    copy = x509.load_der_x509_certificate(first.der)  # not in the cache yet
    assert crypto_smime._certificate(copy) is not crypto_smime._certificate(copy)


RSAES_OAEP_OID = bytes.fromhex("06092a864886f70d010107")  # 1.2.840.113549.1.1.7


def enveloped_der(message: bytes) -> bytes:
    return base64.b64decode(message.split(b"\r\n\r\n", 1)[1])


def test_rsa_oaep_only_for_recipients_who_announced_it(bus, store, pki, openssl, tmp_path):
    store.certificates[BOB] = [
        certificate_of(pki.rsa3072, capabilities=("aes256-cbc", "rsaes-oaep"))
    ]
    [oaep] = send(bus, BOB).messages
    assert RSAES_OAEP_OID in enveloped_der(oaep.content)
    assert b"Meet at" in openssl_decrypt(openssl, tmp_path, oaep.content, pki.rsa3072)

    store.certificates[BOB] = [certificate_of(pki.rsa3072, capabilities=("aes256-cbc",))]
    [plain_rsa] = send(bus, BOB).messages
    assert RSAES_OAEP_OID not in enveloped_der(plain_rsa.content)
    assert b"Meet at" in openssl_decrypt(openssl, tmp_path, plain_rsa.content, pki.rsa3072)


@pytest.mark.parametrize(
    "outer",
    [
        b"",  # no From at all: the envelope sender (unseen by the reader) does not count
        b"From: =?utf-8?q?bob=40example=2Eorg?=\r\n",  # not an address a reader sees as bob
        b"From: bob@example.org, ceo@example.org\r\n",  # two mailboxes
        b"From: bob@example.org\r\nFrom: ceo@example.org\r\n",  # two From fields
    ],
)
def test_signature_is_bound_to_one_visible_from(bus, openssl, pki, tmp_path, outer):
    bob_cert, bob_key = pem_files(tmp_path, pki.rsa3072)
    text = tmp_path / "text.txt"
    text.write_bytes(b"Content-Type: text/plain\r\n\r\nwire the money\r\n")
    signed = run(
        [openssl, "cms", "-sign", "-in", text, "-signer", bob_cert, "-inkey", bob_key, "-crlfeol"]
    )
    result = bus.process_inbound(
        Envelope(sender=BOB, recipients=(ALICE,), direction="inbound"), outer + signed, ALICE
    )
    assert result.signature.status == "invalid"
    assert result.signature.crypto == "ok"
    assert result.signature.address != "ok"


def test_signed_mail_with_two_content_types_is_not_called_valid(bus, openssl, pki, tmp_path):
    """A second Content-Type could make a reader show unsigned parts under our verdict."""
    bob_cert, bob_key = pem_files(tmp_path, pki.rsa3072)
    text = tmp_path / "text.txt"
    text.write_bytes(b"Content-Type: text/plain\r\n\r\nsigned words\r\n")
    chain = tmp_path / "chain.pem"
    chain.write_bytes(pki.intermediate.public_bytes(Encoding.PEM))
    signed = run(
        [openssl, "cms", "-sign", "-in", text, "-signer", bob_cert, "-inkey", bob_key,
         "-certfile", chain, "-crlfeol"]
    )  # fmt: skip
    envelope = Envelope(sender=BOB, recipients=(ALICE,), direction="inbound")
    genuine = b"From: bob@example.org\r\n" + signed
    first = bus.process_inbound(envelope, genuine, ALICE).signature
    assert first.status == "valid", first
    # A second Content-Type after the real one: readers that take the last one see "mixed".
    ambiguous = genuine.replace(
        b"\r\n\r\n", b"\r\nContent-Type: multipart/mixed; boundary=other\r\n\r\n", 1
    )
    result = bus.process_inbound(envelope, ambiguous, ALICE)
    assert (result.signature.status, result.signature.reason) == ("invalid", "malformed")
