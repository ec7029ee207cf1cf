"""First contact, end to end behind real Postfix and Dovecot (the issue's acceptance test).

Postfix hands every message to ``sealrelay serve`` as its after-queue content filter and takes
it back; Dovecot stores it; the test reads it over IMAP and checks it with ``openssl cms``, as
the correspondent's own mail client would:

1. alice@example.org (a subscriber whose key is imported) writes to carol@example.net (outside,
   no certificate known): carol's copy is clear-signed, not encrypted, and ``openssl cms
   -verify`` accepts it byte for byte after Postfix, LMTP and IMAP.
2. carol replies, signed with her key by ``openssl cms -sign``, with forged ``X-Sealrelay-*``
   headers on top: alice's copy carries the relay's own verdict (valid, signer carol) and no
   forged one, and carol's certificate is harvested (``sealrelay cert list``).
3. alice writes to carol again: carol's copy is enveloped-data; ``openssl cms -decrypt`` with
   carol's key gives alice's signed message, which ``openssl cms -verify`` accepts.

Carol's certificate comes from a second PKI (its own root and intermediate), not from the test
PKI that issued alice's: an outside correspondent's CA is not the subscribers' CA. The relay
trusts both roots (``cert import --trust-anchor``) but has never seen carol's intermediate, so
carol's certificate only counts as valid for encryption in step 3 if the harvest kept the
intermediate her signature carried (with one PKI, alice's imported chain would hide that).

The forged verdicts of step 2 sit in the reply's own header; a second test hides them inside an
encrypted or opaque-signed layer, where they must not survive the unwrapping either.

Skipped loudly without postfix/dovecot/openssl; a failure in CI (SEALRELAY_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import dataclasses
import email.parser
import email.policy
import email.utils
import functools
import hashlib
import json
import smtplib
import subprocess
import uuid
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from tests.conftest import require_executable
from tests.pki import (
    TestIdentity,
    build_test_pki,
    issue_leaf,
    make_intermediate,
    make_root,
    rsa_key,
)
from tests.plugins.smtp.harness import LOCAL, fetch, mail_stack, make_message
from tests.plugins.smtp.test_serve import Server


#: mail_stack is a module-scoped fixture from the harness: each e2e module gets its own stack.
__all__ = ["mail_stack"]

ALICE = "alice@example.org"  # a subscriber: example.org is the relay's local domain
CAROL = "carol@example.net"  # outside
#: What the sender puts on top of the reply, hoping the recipient trusts it.
FORGED_SIGNATURE = "valid; signer=ceo@example.org"
FORGED_DECRYPTION = "decrypted; cipher=forged-cipher"
PASSWORDS = {ALICE: "alicepw", CAROL: "carolpw"}  # Dovecot's users (scripts/services/)


@functools.cache
def correspondent(address: str) -> tuple[TestIdentity, x509.Certificate]:
    """*address*'s identity under a PKI of its own (root -> intermediate -> leaf), and the root."""
    root, root_key = make_root("Correspondent Root CA")
    intermediate, intermediate_key = make_intermediate(
        "Correspondent Intermediate CA", root, root_key
    )
    key = rsa_key()
    cert = issue_leaf(intermediate, intermediate_key, key, common_name=address, san_address=address)
    return TestIdentity(address=address, key=key, cert=cert, chain=(intermediate,)), root


def write_pem(path: Path, *certificates: x509.Certificate) -> Path:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates))
    return path


def write_pkcs12(path: Path, identity: TestIdentity, password: bytes) -> Path:
    """*identity* (key, certificate, chain) as a password-protected PKCS#12 file."""
    assert isinstance(identity.key, rsa.RSAPrivateKey)
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(
            name=(identity.address or "").encode(),
            key=identity.key,
            cert=identity.cert,
            cas=list(identity.chain),
            encryption_algorithm=serialization.BestAvailableEncryption(password),
        )
    )
    return path


def openssl(*arguments: str | Path) -> subprocess.CompletedProcess[bytes]:
    """``openssl cms ...``; a non-zero exit fails the test with openssl's own words."""
    command = [require_executable("openssl"), "cms", *(str(a) for a in arguments)]
    result = subprocess.run(command, capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, (
        f"{' '.join(command)} exited {result.returncode}:\n{result.stderr.decode(errors='replace')}"
    )
    return result


def verify(message: Path, ca_file: Path, directory: Path) -> tuple[bytes, x509.Certificate]:
    """What ``openssl cms -verify`` finds signed in *message*, and the signer's certificate.

    Byte-exact: ``-binary -crlfeol`` hashes the signed part's CRLF lines as they are. Without
    them OpenSSL canonicalises line ends first (a CRLF lost on the way would go unnoticed);
    ``-binary`` alone would read the lines as LF-terminated and keep the last CR.
    """
    content, signer = directory / f"{message.stem}.content", directory / f"{message.stem}.signer"
    result = openssl(
        "-verify", "-binary", "-crlfeol", "-CAfile", ca_file, "-in", message, "-out", content,
        "-signer", signer,
    )  # fmt: skip
    assert b"Verification successful" in result.stderr, result.stderr
    return content.read_bytes(), x509.load_pem_x509_certificate(signer.read_bytes())


def header(message: bytes) -> Message:
    return email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(message)


def certificates_of(relay: Server, address: str) -> list[dict[str, Any]]:
    listed = relay.run("cert", "list", "--address", address, "--json")
    rows = json.loads(listed.stdout)
    assert isinstance(rows, list), rows
    return rows


def stop(relay: Server) -> int | None:
    """SIGTERM, and SIGKILL for the whole process group when serve does not stop in time."""
    if relay.process is None:
        return None
    try:
        return relay.terminate()
    except subprocess.TimeoutExpired:
        relay.kill_all()
        raise


@dataclasses.dataclass
class World:
    """The running relay behind the mail stack, and what alice's and carol's clients hold."""

    relay: Server
    directory: Path
    ports: dict[str, int]
    alice: TestIdentity
    carol: TestIdentity
    alice_ca: Path  # alice's root (PEM): what carol's client trusts
    carol_ca: Path  # carol's root (PEM): what alice's client trusts
    carol_cert: Path  # carol's certificate, then her chain (PEM)
    carol_key: Path
    carol_chain: Path  # carol's intermediate (PEM)

    def submit(self, sender: str, recipient: str, message: bytes) -> None:
        """*message* handed to Postfix's public smtpd, as a mail client would."""
        with smtplib.SMTP(
            "127.0.0.1", self.ports["SMTP_PORT"], local_hostname=LOCAL, timeout=30
        ) as client:
            assert client.sendmail(sender, [recipient], message) == {}

    def fetch(self, user: str, subject: str) -> bytes:
        return fetch(self.ports["IMAP_PORT"], user, PASSWORDS[user], subject)


@pytest.fixture
def world(mail_stack, tmp_path) -> Iterator[World]:
    """``sealrelay serve`` as Postfix's content filter: alice a subscriber with her key
    imported from PKCS#12, alice's and carol's roots trusted, nothing known about carol."""
    require_executable("openssl")  # carol's mail client
    pki = build_test_pki()
    alice = pki.rsa2048
    assert alice.address == ALICE
    carol, carol_root = correspondent(CAROL)
    carol_cert, carol_key = carol.write_pem_files(tmp_path)
    relay = Server.content_filter(tmp_path, mail_stack, sign="clear")
    world = World(
        relay=relay,
        directory=tmp_path,
        ports=mail_stack,
        alice=alice,
        carol=carol,
        alice_ca=write_pem(tmp_path / "alice-root.pem", pki.root),
        carol_ca=write_pem(tmp_path / "carol-root.pem", carol_root),
        carol_cert=carol_cert,
        carol_key=carol_key,
        carol_chain=write_pem(tmp_path / "carol-intermediate.pem", *carol.chain),
    )
    (tmp_path / "p12-password").write_text("first contact\n")
    relay.run("subscriber", "add", ALICE)
    relay.run(
        "identity", "import", str(write_pkcs12(tmp_path / "alice.p12", alice, b"first contact")),
        "--password-file", str(tmp_path / "p12-password"),
    )  # fmt: skip
    relay.run("cert", "import", "--trust-anchor", str(world.alice_ca), str(world.carol_ca))
    try:
        relay.start()
        yield world
    finally:
        status = stop(relay)
    assert status == 0, relay.stderr.decode(errors="replace")


def test_first_contact(world):
    relay, directory = world.relay, world.directory
    alice, carol = world.alice, world.carol
    assert certificates_of(relay, CAROL) == []  # first contact: nothing known about carol
    tag = uuid.uuid4().hex[:8]

    # 1. alice -> carol, no certificate known: clear-signed only.
    subject = f"first contact {tag}"
    text = f"Hello Carol, this is Alice ({tag}).\r\n"
    forged = {"X-Sealrelay-Signature": FORGED_SIGNATURE}
    world.submit(ALICE, CAROL, make_message(subject, text, To=CAROL, **forged))
    copy = world.fetch(CAROL, subject)
    fields = header(copy)
    assert fields.get_content_type() == "multipart/signed", str(fields)
    assert fields.get_param("protocol") == "application/pkcs7-signature", str(fields)
    assert b"X-Sealrelay-" not in copy  # the sender's forged header did not go out
    (directory / "first.eml").write_bytes(copy)
    content, signer = verify(directory / "first.eml", world.alice_ca, directory)
    assert signer == alice.cert
    assert text.encode() in content
    assert text.encode() in copy  # readable without any key: not encrypted

    # 2. carol replies, signed with her key, forged verdicts on top.
    subject = f"reply {tag}"
    text = f"Hi Alice, signed by Carol ({tag}).\r\n"
    (directory / "reply.txt").write_bytes(
        b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" + text.encode()
    )
    openssl(
        "-sign", "-in", directory / "reply.txt", "-signer", world.carol_cert,
        "-inkey", world.carol_key, "-certfile", world.carol_chain, "-crlfeol",
        "-out", directory / "reply.signed",
    )  # fmt: skip
    on_top = (
        f"From: {CAROL}\r\nTo: {ALICE}\r\nSubject: {subject}\r\n"
        f"Date: {email.utils.formatdate()}\r\nMessage-ID: <reply-{tag}@example.net>\r\n"
        f"X-Sealrelay-Signature: {FORGED_SIGNATURE}\r\n"
        f"X-Sealrelay-Decryption: {FORGED_DECRYPTION}\r\n"
    )
    world.submit(CAROL, ALICE, on_top.encode() + (directory / "reply.signed").read_bytes())
    copy = world.fetch(ALICE, subject)
    fields = header(copy)
    # The relay's verdicts, once each: the forged ones are gone, not merely outnumbered.
    assert fields.get_all("X-Sealrelay-Signature") == [f"valid; signer={CAROL}"], str(fields)
    assert fields.get_all("X-Sealrelay-Decryption") == ["none"], str(fields)
    assert FORGED_SIGNATURE.encode() not in copy
    assert FORGED_DECRYPTION.encode() not in copy
    # Delivered still signed: alice's own client can check it too.
    (directory / "reply.eml").write_bytes(copy)
    content, signer = verify(directory / "reply.eml", world.carol_ca, directory)
    assert signer == carol.cert
    assert text.encode() in content
    harvested = certificates_of(relay, CAROL)
    fingerprint = hashlib.sha256(carol.cert.public_bytes(serialization.Encoding.DER))
    assert [(row["fingerprint"], row["source"]) for row in harvested] == [
        (fingerprint.hexdigest(), "harvested")
    ], harvested
    # Valid (not "untrusted"): its chain to carol's root was kept from her signature.
    assert harvested[0]["status"] == "valid", harvested
    assert harvested[0]["capabilities"], harvested  # what her signature announced

    # 3. alice -> carol again: now encrypted to carol's harvested certificate.
    subject = f"second message {tag}"
    text = f"For Carol's eyes only ({tag}).\r\n"
    world.submit(ALICE, CAROL, make_message(subject, text, To=CAROL))
    copy = world.fetch(CAROL, subject)
    fields = header(copy)
    assert fields.get_content_type() == "application/pkcs7-mime", str(fields)
    assert fields.get_param("smime-type") == "enveloped-data", str(fields)
    assert text.encode() not in copy
    (directory / "second.eml").write_bytes(copy)
    inner = directory / "second-inner.eml"
    openssl(
        "-decrypt", "-binary", "-in", directory / "second.eml", "-recip", world.carol_cert,
        "-inkey", world.carol_key, "-out", inner,
    )  # fmt: skip
    assert header(inner.read_bytes()).get_content_type() == "multipart/signed"
    content, signer = verify(inner, world.alice_ca, directory)
    assert signer == alice.cert
    assert text.encode() in content


@pytest.mark.parametrize("layer", ["enveloped", "opaque-signed"])
def test_forged_verdict_inside_a_layer_does_not_reach_the_mailbox(world, layer):
    """Anyone who has alice's certificate can encrypt to her; carol can sign whatever she likes:
    neither may put a verdict in alice's mailbox that the relay did not write."""
    directory = world.directory
    tag = uuid.uuid4().hex[:8]
    subject = f"forged inside {layer} {tag}"
    text = f"Pay the invoice ({tag}).\r\n"
    inner, body = directory / "inner.txt", directory / "body.eml"
    inner.write_bytes(
        f"Content-Type: text/plain; charset=us-ascii\r\n"
        f"X-Sealrelay-Signature: {FORGED_SIGNATURE}\r\n\r\n{text}".encode()
    )
    if layer == "enveloped":
        sender, expected = "mallory@example.net", ("none", "decrypted; cipher=aes256-cbc")
        alice_cert = write_pem(directory / "alice.pem", world.alice.cert)
        openssl(
            "-encrypt", "-aes256", "-binary", "-crlfeol", "-in", inner, "-out", body, alice_cert
        )
    else:
        sender, expected = CAROL, (f"valid; signer={CAROL}", "none")
        openssl(
            "-sign", "-nodetach", "-binary", "-crlfeol", "-in", inner, "-signer", world.carol_cert,
            "-inkey", world.carol_key, "-certfile", world.carol_chain, "-out", body,
        )  # fmt: skip
    on_top = f"From: {sender}\r\nTo: {ALICE}\r\nSubject: {subject}\r\n"
    world.submit(sender, ALICE, on_top.encode() + body.read_bytes())
    copy = world.fetch(ALICE, subject)
    fields = header(copy)
    # The layer was unwrapped and judged (pytest.fail, not an assertion: if this breaks, the
    # test fails instead of counting as the expected failure).
    verdicts = (fields.get("X-Sealrelay-Signature"), fields.get("X-Sealrelay-Decryption"))
    if verdicts != expected or text.encode() not in copy:
        pytest.fail(f"the {layer} layer was not processed as expected:\n{fields}")
    assert fields.get_all("X-Sealrelay-Signature") == [expected[0]], str(fields)
    assert FORGED_SIGNATURE.encode() not in copy
