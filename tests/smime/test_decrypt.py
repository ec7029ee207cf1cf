"""decrypt_content: BER input, key choice, and every way a message can be bad."""

from __future__ import annotations

import random
import time

import pytest
from asn1crypto import cms
from cryptography.hazmat.primitives.asymmetric import ec

from sealrelay.smime.decrypt import decrypt_content
from sealrelay.smime.envelope import Recipient, encrypt_content
from sealrelay.smime.errors import (
    DecryptionFailed,
    MalformedMessage,
    NoMatchingKey,
    SmimeError,
    UnsupportedAlgorithm,
)
from tests.pki import TestIdentity, TestPKI, rsa_key


CONTENT = b"Content-Type: text/plain\r\n\r\nThe vault code is 2468.\r\n" * 5
AES128_CBC_OID = bytes.fromhex("0609608648016503040102")
AES128_GCM_OID = bytes.fromhex("0609608648016503040106")
AES128_WRAP_OID = bytes.fromhex("0609608648016503040105")
AES128_CCM_OID = bytes.fromhex("0609608648016503040107")


def keys_of(identity: TestIdentity):
    return [(identity.cert, identity.key)]


# --- an independent DER -> BER re-encoder, to feed the decryptor what gpgsm and -stream emit ---


def _der_elements(data: bytes, pos: int, end: int):
    while pos < end:
        identifier = data[pos]
        length = data[pos + 1]
        header = 2
        if length & 0x80:
            count = length & 0x7F
            length = int.from_bytes(data[pos + 2 : pos + 2 + count], "big")
            header += count
        yield identifier, data[pos + header : pos + header + length]
        pos += header + length


def _chunked(payload: bytes, chunk: int, nested: bool) -> bytes:
    pieces = [payload[i : i + chunk] for i in range(0, len(payload), chunk)]
    encoded = b"".join(b"\x04" + _length(len(p)) + p for p in pieces)
    if nested:  # a constructed OCTET STRING inside the constructed one, as BER allows
        encoded = b"\x24\x80" + encoded + b"\x00\x00"
    return encoded


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    size = (n.bit_length() + 7) // 8
    return bytes((0x80 | size,)) + n.to_bytes(size, "big")


def to_ber(der: bytes, *, chunk: int = 7, nested: bool = False) -> bytes:
    """Every constructed element with indefinite length; [0] IMPLICIT OCTET STRINGs chunked."""

    def convert(data: bytes) -> bytes:
        out = b""
        for identifier, contents in _der_elements(data, 0, len(data)):
            if identifier & 0x20:
                out += bytes((identifier,)) + b"\x80" + convert(contents) + b"\x00\x00"
            elif identifier == 0x80:  # encryptedContent
                out += b"\xa0\x80" + _chunked(contents, chunk, nested) + b"\x00\x00"
            else:
                out += bytes((identifier,)) + _length(len(contents)) + contents
        return out

    return convert(der)


@pytest.mark.parametrize("cipher", ["aes128-cbc", "aes256-gcm"])
@pytest.mark.parametrize(("chunk", "nested"), [(1, False), (7, False), (16, True), (4096, False)])
def test_ber_indefinite_lengths_and_chunked_content(pki: TestPKI, cipher, chunk, nested):
    der = encrypt_content(CONTENT, [pki.rsa2048.cert, pki.p256.cert], cipher=cipher)
    ber = to_ber(der, chunk=chunk, nested=nested)
    assert len(ber) > len(der)

    for identity in (pki.rsa2048, pki.p256):
        assert decrypt_content(ber, keys_of(identity)).content == CONTENT


def test_accepts_bytearray_and_memoryview(pki: TestPKI):
    der = encrypt_content(CONTENT, [pki.p256.cert], cipher="aes128-gcm")
    assert decrypt_content(bytearray(der), keys_of(pki.p256)).content == CONTENT
    assert decrypt_content(memoryview(der), keys_of(pki.p256)).content == CONTENT


# --- which key ---


def test_not_encrypted_to_us(pki: TestPKI):
    der = encrypt_content(CONTENT, [pki.rsa2048.cert, pki.p256.cert], cipher="aes128-cbc")
    with pytest.raises(NoMatchingKey, match="not encrypted to any of our keys"):
        decrypt_content(der, keys_of(pki.rsa3072) + keys_of(pki.p384))
    with pytest.raises(NoMatchingKey):
        decrypt_content(der, [])
    with pytest.raises(NoMatchingKey):  # an Ed25519 key can never be a recipient
        decrypt_content(der, keys_of(pki.ed25519))


def test_key_that_does_not_belong_to_its_certificate(pki: TestPKI):
    der = encrypt_content(CONTENT, [pki.rsa2048.cert], cipher="aes128-cbc")
    with pytest.raises(ValueError, match="does not belong to its certificate"):
        decrypt_content(der, [(pki.rsa2048.cert, pki.rsa3072.key)])


def test_rollover_picks_the_key_the_message_names(pki: TestPKI):
    old = pki.issue(rsa_key(), address="alice@example.org")
    new = pki.issue(ec.generate_private_key(ec.SECP256R1()), address="alice@example.org")
    keys = keys_of(new) + keys_of(old)

    to_old = encrypt_content(CONTENT, [old.cert], cipher="aes256-gcm")
    result = decrypt_content(to_old, keys)
    assert result.certificate == old.cert
    assert result.key_management == "rsa-pkcs1v15"

    # Sent to both: the caller's order of preference decides.
    to_both = encrypt_content(CONTENT, [old.cert, new.cert], cipher="aes256-gcm")
    assert decrypt_content(to_both, keys).certificate == new.cert
    assert decrypt_content(to_both, keys[::-1]).certificate == old.cert


def test_subject_key_identifier_matching(pki: TestPKI):
    der = encrypt_content(
        CONTENT,
        [Recipient(pki.rsa2048.cert, identifier="ski"), Recipient(pki.p384.cert, identifier="ski")],
        cipher="aes128-gcm",
    )
    assert decrypt_content(der, keys_of(pki.rsa2048)).content == CONTENT
    assert decrypt_content(der, keys_of(pki.p384)).content == CONTENT
    with pytest.raises(NoMatchingKey):
        decrypt_content(der, keys_of(pki.p256))


# --- tampering: one error, one message ---


def _flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    return data[:index] + bytes((data[index] ^ mask,)) + data[index + 1 :]


def _failure(data: bytes, identity: TestIdentity) -> DecryptionFailed:
    with pytest.raises(DecryptionFailed) as caught:
        decrypt_content(data, keys_of(identity))
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__ or caught.value.__context__ is None
    return caught.value


def test_every_decryption_failure_looks_the_same(pki: TestPKI):
    content = bytes(range(40))  # 40 bytes: 8 bytes of padding, value 0x08, in the last block
    cbc = encrypt_content(content, [pki.rsa2048.cert], cipher="aes128-cbc")
    gcm = encrypt_content(content, [pki.rsa2048.cert, pki.p256.cert], cipher="aes128-gcm")
    failures = [
        # Last plaintext byte 0x08 -> 0x00: invalid padding, whatever the key.
        _failure(_flip(cbc, len(cbc) - 17, 0x08), pki.rsa2048),
        # Last plaintext byte 0x08 -> 0x18: longer than a block.
        _failure(_flip(cbc, len(cbc) - 17, 0x10), pki.rsa2048),
        _failure(_flip(gcm, len(gcm) - 1), pki.rsa2048),  # the tag
        _failure(_flip(gcm, len(gcm) - 19), pki.p256),  # the last ciphertext byte
    ]
    # The encrypted keys: RSA implicit rejection and a failed key unwrap end the same way.
    info = cms.ContentInfo.load(gcm)
    for ri in info["content"]["recipient_infos"]:
        if ri.name == "ktri":
            encrypted_key = ri.chosen["encrypted_key"].native
            identity = pki.rsa2048
        else:
            encrypted_key = ri.chosen["recipient_encrypted_keys"][0]["encrypted_key"].native
            identity = pki.p256
        index = gcm.index(encrypted_key) + len(encrypted_key) // 2
        failures.append(_failure(_flip(gcm, index), identity))

    assert len({str(f) for f in failures}) == 1
    assert len({type(f) for f in failures}) == 1
    assert "corrupted" in str(failures[0])


def test_tampered_oaep_key_fails_like_the_rest(pki: TestPKI):
    gcm = encrypt_content(CONTENT, [pki.rsa2048.cert], cipher="aes256-gcm", rsa_padding="oaep")
    ri = cms.ContentInfo.load(gcm)["content"]["recipient_infos"][0]
    index = gcm.index(ri.chosen["encrypted_key"].native) + 5
    gcm_failure = _failure(_flip(gcm, index), pki.rsa2048)
    cbc = encrypt_content(bytes(40), [pki.rsa2048.cert], cipher="aes256-cbc")
    assert str(gcm_failure) == str(_failure(_flip(cbc, len(cbc) - 17, 0x08), pki.rsa2048))


# --- malformed and hostile input ---


def _malformed(data: bytes, **kwargs) -> MalformedMessage:
    with pytest.raises(MalformedMessage) as caught:
        decrypt_content(data, [], **kwargs)
    return caught.value


def test_truncated_messages_are_malformed(pki: TestPKI):
    for der in (
        encrypt_content(CONTENT, [pki.rsa2048.cert, pki.p256.cert], cipher="aes128-cbc"),
        to_ber(encrypt_content(CONTENT, [pki.p384.cert], cipher="aes128-gcm"), chunk=50),
    ):
        for length in range(len(der)):
            with pytest.raises(MalformedMessage):
                decrypt_content(der[:length], keys_of(pki.rsa2048) + keys_of(pki.p384))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x30",
        b"\x00\x00",
        b"not ASN.1 at all, just some text\n",
        b"-----BEGIN PKCS7-----\nMIIB\n-----END PKCS7-----\n",
        bytes(range(256)),
        b"\x30\x80" * 10_000,  # nesting far beyond any real CMS
        b"\x30\x84\xff\xff\xff\xff\x06\x09",  # 4 GiB declared, a few bytes given
        b"\x30\x89\x01\x00\x00\x00\x00\x00\x00\x00\x00",  # nine length octets
        b"\x04\x80\x00\x00",  # primitive with indefinite length
        b"\x3f\xff\xff\xff\xff\x7f\x00",  # absurd high tag number
    ],
)
def test_garbage_is_malformed(data):
    _malformed(data)


def test_wrong_content_types_are_malformed():
    data = cms.ContentInfo({"content_type": "data", "content": b"plain text"}).dump()
    assert "EnvelopedData" in str(_malformed(data))
    signed = cms.ContentInfo(
        {
            "content_type": "signed_data",
            "content": {
                "version": "v1",
                "digest_algorithms": [],
                "encap_content_info": {"content_type": "data"},
                "signer_infos": [],
            },
        }
    ).dump()
    _malformed(signed)


def test_trailing_data_is_malformed(pki: TestPKI):
    der = encrypt_content(CONTENT, [pki.rsa2048.cert], cipher="aes128-cbc")
    _malformed(der + b"\x00")


def test_missing_encrypted_content_is_malformed(pki: TestPKI):
    info = cms.ContentInfo.load(encrypt_content(CONTENT, [pki.rsa2048.cert], cipher="aes128-cbc"))
    body = info["content"]
    body["encrypted_content_info"]["encrypted_content"] = None
    detached = cms.ContentInfo({"content_type": "enveloped_data", "content": body}).dump(force=True)
    assert "no encrypted content" in str(_malformed(detached))


def test_size_limit(pki: TestPKI):
    der = encrypt_content(CONTENT, [pki.rsa2048.cert], cipher="aes128-cbc")
    assert "limit" in str(_malformed(der, max_size=len(der) - 1))
    assert decrypt_content(der, keys_of(pki.rsa2048), max_size=len(der)).content == CONTENT


def test_flood_of_tiny_chunks_is_refused_quickly(pki: TestPKI):
    der = encrypt_content(bytes(300_000), [pki.rsa2048.cert], cipher="aes128-cbc")
    ber = to_ber(der, chunk=1)
    started = time.monotonic()
    assert "too many elements" in str(_malformed(ber))
    assert time.monotonic() - started < 5


def test_unknown_content_cipher_is_unsupported(pki: TestPKI):
    der = encrypt_content(CONTENT, [pki.rsa2048.cert], cipher="aes128-cbc")
    aes128_ofb = AES128_CBC_OID[:-1] + b"\x03"
    with pytest.raises(UnsupportedAlgorithm, match="aes128_ofb"):
        decrypt_content(der.replace(AES128_CBC_OID, aes128_ofb), keys_of(pki.rsa2048))


def test_unknown_key_wrap_is_unsupported(pki: TestPKI):
    der = encrypt_content(CONTENT, [pki.p256.cert], cipher="aes128-cbc")
    assert der.count(AES128_WRAP_OID) == 1
    der = der.replace(AES128_WRAP_OID, AES128_CCM_OID)  # an AES mode, but no key wrap
    with pytest.raises(
        UnsupportedAlgorithm, match=r"key wrap algorithm 2\.16\.840\.1\.101\.3\.4\.1\.7"
    ):
        decrypt_content(der, keys_of(pki.p256))


def test_cipher_in_the_wrong_envelope_is_malformed(pki: TestPKI):
    der = encrypt_content(CONTENT, [pki.rsa2048.cert], cipher="aes128-cbc")
    with pytest.raises(MalformedMessage, match="cannot be used in EnvelopedData"):
        decrypt_content(der.replace(AES128_CBC_OID, AES128_GCM_OID), keys_of(pki.rsa2048))


def test_not_for_us_comes_before_unsupported(pki: TestPKI):
    der = encrypt_content(CONTENT, [pki.rsa2048.cert], cipher="aes128-cbc")
    aes128_ofb = AES128_CBC_OID[:-1] + b"\x03"
    with pytest.raises(NoMatchingKey):
        decrypt_content(der.replace(AES128_CBC_OID, aes128_ofb), keys_of(pki.p256))


def test_random_mutations_never_escape_as_other_errors(pki: TestPKI):
    generator = random.Random(5083)  # noqa: S311 -- reproducible fuzzing, not crypto
    keys = keys_of(pki.rsa2048) + keys_of(pki.p256)
    samples = [
        encrypt_content(CONTENT, [pki.rsa2048.cert, pki.p256.cert], cipher="aes128-cbc"),
        to_ber(encrypt_content(CONTENT, [pki.p256.cert], cipher="aes256-gcm"), chunk=33),
    ]
    outcomes: dict[str, int] = {}
    for _ in range(400):
        data = bytearray(generator.choice(samples))
        for _ in range(generator.randint(1, 3)):
            index = generator.randrange(len(data))
            action = generator.randrange(3)
            if action == 0:
                data[index] = generator.randrange(256)
            elif action == 1:
                del data[index : index + generator.randint(1, 8)]
            else:
                data[index:index] = bytes(generator.randrange(256) for _ in range(3))
        try:
            decrypt_content(bytes(data), keys)
            outcome = "decrypted"
        except SmimeError as error:
            outcome = type(error).__name__
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert outcomes.get("MalformedMessage", 0) > 100
    assert outcomes.get("DecryptionFailed", 0) > 3
