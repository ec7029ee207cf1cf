"""S/MIME throughput and peak memory: sealrelay's CMS layer against `cryptography` alone.

For 10 KB, 1 MB and 25 MB messages it times sign, encrypt, sign+encrypt and decrypt+verify
through the built-in crypto_smime plugin (what the bus calls), and the same operations done
as bare as `cryptography` allows: its PKCS7 builders for sign and encrypt (DER, no MIME), its
pkcs7_decrypt_der for decrypt, and for verify one RSA verification over the content (it has
no CMS verifier). A second column does the same with cryptography's own S/MIME output
(Encoding.SMIME, pkcs7_decrypt_smime), the like-for-like comparison with a MIME message.
RSA-2048 signer, RSA-3072 recipient, SHA-256, AES-256-CBC.

Run: .venv/bin/python -m bench.smime [--quick]
Peak memory is the tracemalloc peak during one operation (Python-side allocations, which
hold every copy of the message), shown as a multiple of the message size.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable

import attrs
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from sealrelay import Certificate, Identity, Policy
from sealrelay.plugins import crypto_smime
from tests.pki import TestPKI, build_test_pki


SIZES = {"10 KB": 10 * 1024, "1 MB": 1024 * 1024, "25 MB": 25 * 1024 * 1024}
POLICY = Policy(sign="clear", digest="sha256", encrypt="always", cipher="aes256-cbc")
Operation = Callable[[], object]
#: size label, operation, sealrelay seconds, bare (DER) seconds, cryptography S/MIME seconds,
#: peak memory / message size
Row = tuple[str, str, float, float, float, float]


def message_of(size: int) -> bytes:
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    body = (line * (size // len(line) + 1))[:size]
    return (
        b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: bench\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n" + body
    )


def _certificate(pki_cert: object) -> Certificate:
    return Certificate(der=pki_cert.public_bytes(Encoding.DER), trusted=True)  # type: ignore[attr-defined]


@attrs.frozen
class Parties:
    """Alice signs, Bob decrypts; both as sealrelay identities and as raw objects."""

    pki: TestPKI
    alice: Identity
    bob: Identity
    alice_key: rsa.RSAPrivateKey
    bob_key: rsa.RSAPrivateKey
    anchors: list[Certificate]
    crls: list[bytes]

    @classmethod
    def create(cls) -> Parties:
        pki = build_test_pki()
        alice_key, bob_key = pki.rsa2048.key, pki.rsa3072.key
        assert isinstance(alice_key, rsa.RSAPrivateKey)
        assert isinstance(bob_key, rsa.RSAPrivateKey)
        return cls(
            pki=pki,
            alice=Identity(
                address="alice@example.org",
                certificate=_certificate(pki.rsa2048.cert),
                chain=tuple(_certificate(c) for c in pki.rsa2048.chain),
                private_key=alice_key,
            ),
            bob=Identity(
                address="bob@example.org",
                certificate=_certificate(pki.rsa3072.cert),
                private_key=bob_key,
            ),
            alice_key=alice_key,
            bob_key=bob_key,
            anchors=[_certificate(pki.root)],
            crls=[pki.crl.public_bytes(Encoding.DER), pki.root_crl.public_bytes(Encoding.DER)],
        )


def ours(parties: Parties, message: bytes) -> dict[str, Operation]:
    recipients = [parties.bob.certificate]

    def sign() -> bytes:
        signed = crypto_smime.sealrelay_sign_message(message, parties.alice, POLICY)
        assert signed is not None
        return signed

    def encrypt() -> object:
        return crypto_smime.sealrelay_encrypt_message(message, recipients, POLICY)

    def sign_and_encrypt() -> object:
        return crypto_smime.sealrelay_encrypt_message(sign(), recipients, POLICY)

    encrypted = crypto_smime.sealrelay_encrypt_message(sign(), recipients, POLICY)
    assert encrypted is not None

    def decrypt_and_verify() -> object:
        decrypted = crypto_smime.sealrelay_decrypt_message(encrypted.content, [parties.bob])
        assert decrypted is not None
        check = crypto_smime.sealrelay_verify_signature(
            decrypted.content, "alice@example.org", parties.anchors, parties.crls
        )
        assert check is not None
        assert check.verdict.status == "valid", check.verdict
        return check

    return {
        "sign": sign,
        "encrypt": encrypt,
        "sign+encrypt": sign_and_encrypt,
        "decrypt+verify": decrypt_and_verify,
    }


def bare(parties: Parties, message: bytes, encoding: Encoding) -> dict[str, Operation]:
    """The same operations through cryptography's PKCS7 API. With ``Encoding.DER`` the output
    is bare CMS (the issue's yardstick); with ``Encoding.SMIME`` it is cryptography's own MIME
    message, the nearest thing to what sealrelay produces."""
    pki = parties.pki
    entity = message.split(b"\r\n\r\n", 1)[1]
    detached = [pkcs7.PKCS7Options.DetachedSignature]
    if encoding is Encoding.DER:
        detached.append(pkcs7.PKCS7Options.Binary)

    def sign() -> bytes:
        return (
            pkcs7.PKCS7SignatureBuilder()
            .set_data(entity)
            .add_signer(pki.rsa2048.cert, parties.alice_key, hashes.SHA256())
            .add_certificate(pki.intermediate)
            .sign(encoding, detached)
        )

    def envelope(content: bytes) -> bytes:
        return (
            pkcs7.PKCS7EnvelopeBuilder()
            .set_data(content)
            .add_recipient(pki.rsa3072.cert)
            .set_content_encryption_algorithm(algorithms.AES256)
            .encrypt(encoding, [pkcs7.PKCS7Options.Binary] if encoding is Encoding.DER else [])
        )

    def signed() -> bytes:
        # What sign+encrypt encrypts: the content beside its detached DER signature, or the
        # multipart/signed message, which already holds the content.
        return entity + sign() if encoding is Encoding.DER else sign()

    # decrypt+verify opens what sign+encrypt made, as sealrelay's does: the signature is
    # decrypted along with the content.
    enveloped = envelope(signed())
    decrypt = pkcs7.pkcs7_decrypt_der if encoding is Encoding.DER else pkcs7.pkcs7_decrypt_smime
    signature = parties.alice_key.sign(entity, padding.PKCS1v15(), hashes.SHA256())
    alice_public = parties.alice_key.public_key()

    def decrypt_and_verify() -> object:
        content = decrypt(enveloped, pki.rsa3072.cert, parties.bob_key, [])
        # The digest of the content and one RSA verification: all a CMS verifier must do.
        alice_public.verify(signature, entity, padding.PKCS1v15(), hashes.SHA256())
        return content

    return {
        "sign": sign,
        "encrypt": lambda: envelope(entity),
        "sign+encrypt": lambda: envelope(signed()),
        "decrypt+verify": decrypt_and_verify,
    }


def timed(operation: Operation, budget: float) -> float:
    """Median seconds of `operation`, repeated until `budget` seconds are spent (3 runs min)."""
    samples: list[float] = []
    while len(samples) < 3 or (sum(samples) < budget and len(samples) < 200):
        start = time.perf_counter()
        operation()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def peak_of(operation: Operation) -> int:
    tracemalloc.start()
    operation()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def measure(parties: Parties, label: str, size: int, budget: float) -> list[Row]:
    message = message_of(size)
    mine = ours(parties, message)
    der, smime = bare(parties, message, Encoding.DER), bare(parties, message, Encoding.SMIME)
    rows: list[Row] = []
    for name, operation in mine.items():
        ours_time, der_time, smime_time = (
            timed(op, budget) for op in (operation, der[name], smime[name])
        )
        rows.append((label, name, ours_time, der_time, smime_time, peak_of(operation) / size))
        print(f"  measured {label:>6} {name}", file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="S/MIME throughput and peak memory")
    parser.add_argument("--quick", action="store_true", help="10 KB and 1 MB only, short budgets")
    options = parser.parse_args()
    parties = Parties.create()
    rows: list[Row] = []
    for label, size in SIZES.items():
        if options.quick and size > 2**20:
            continue
        budget = 0.3 if options.quick else (2.0 if size < 2**20 else 4.0)
        rows += measure(parties, label, size, budget)

    header = (
        f"{'size':>6}  {'operation':<15} {'sealrelay':>11} {'bare':>11} {'ratio':>6} "
        f"{'crypt.SMIME':>11} {'ratio':>6} {'msg/s':>8} {'peak/size':>9}"
    )
    print(header)
    print("-" * len(header))
    for label, name, ours_time, bare_time, smime_time, peak_ratio in rows:
        print(
            f"{label:>6}  {name:<15} {ours_time * 1000:>9.2f}ms {bare_time * 1000:>9.2f}ms "
            f"{ours_time / bare_time:>6.2f} {smime_time * 1000:>9.2f}ms "
            f"{ours_time / smime_time:>6.2f} {1 / ours_time:>8.0f} {peak_ratio:>8.2f}x"
        )
    print(
        "bare: cryptography's PKCS7 builders, DER out (the issue's yardstick); crypt.SMIME: the "
        "same builders with Encoding.SMIME, a MIME message out as sealrelay produces"
    )


if __name__ == "__main__":
    main()
