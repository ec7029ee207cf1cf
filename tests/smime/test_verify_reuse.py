"""Reusing the parse of a sender's earlier signature: what differs in every message is always
read from the message itself, and a reused parse equals a full one."""

from __future__ import annotations

import datetime
import random

import pytest
from asn1crypto import cms

from sealrelay.smime import verify as verify_module
from sealrelay.smime.ciphers import DECRYPTABLE_CAPABILITIES
from sealrelay.smime.errors import MalformedMessage
from sealrelay.smime.sign import Signer, signed_data
from sealrelay.smime.verify import VerificationResult, verify_signed_data
from tests.pki import TestPKI
from tests.smime.test_verify import _indefinite, _streamed


NOW = datetime.datetime.now(datetime.UTC)
FIRST = b"Content-Type: text/plain\r\n\r\nthe first message\r\n"
SECOND = b"Content-Type: text/plain\r\n\r\nthe other message\r\n"


@pytest.fixture(autouse=True)
def no_templates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify_module, "_TEMPLATES", {})


def sign(
    pki: TestPKI,
    content: bytes,
    signing_time: datetime.datetime | None = None,
    capabilities: tuple[str, ...] = DECRYPTABLE_CAPABILITIES,
) -> bytes:
    signer = Signer(pki.rsa2048.key, pki.rsa2048.cert, pki.rsa2048.chain)
    return signed_data(
        content, signer, detached=True, signing_time=signing_time, capabilities=capabilities
    )


def verify(pki: TestPKI, der: bytes, content: bytes) -> VerificationResult:
    return verify_signed_data(
        der,
        content,
        trust_anchors=pki.trust_anchors(),
        crls=[pki.crl, pki.root_crl],
        expected_address=pki.rsa2048.address,
    )


def outcome(result: VerificationResult) -> tuple[str, str | None]:
    return result.status, result.reason


def full_parse(der: bytes) -> object:
    """What a parse without any template gives: the SignedData or "malformed"."""
    try:
        return verify_module._read_signed_data(der)[0]
    except (MalformedMessage, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return "malformed"


def parse(der: bytes) -> object:
    try:
        return verify_module._parse_signed_data(der)
    except MalformedMessage:
        return "malformed"


def test_a_senders_next_signature_is_not_parsed_again(pki, monkeypatch):
    first = sign(pki, FIRST, signing_time=NOW - datetime.timedelta(minutes=1))
    second = sign(pki, SECOND, signing_time=NOW)
    assert len(first) == len(second)
    assert first != second
    assert outcome(verify(pki, first, FIRST)) == ("valid", None)

    def no_full_parse(der: bytes) -> object:
        raise AssertionError("parsed in full")

    monkeypatch.setattr(verify_module, "_read_signed_data", no_full_parse)
    result = verify(pki, second, SECOND)
    assert outcome(result) == ("valid", None)
    assert result.signing_time == NOW.replace(microsecond=0)
    assert result.signer_certificate == pki.rsa2048.cert


def test_digest_time_and_signature_come_from_each_message(pki):
    first = sign(pki, FIRST)
    assert outcome(verify(pki, first, FIRST)) == ("valid", None)
    template = verify_module._template_for(first)
    assert template is not None
    slots = template.slots[0]
    assert slots.message_digest is not None
    assert slots.signing_time is not None

    # The signature of the first message over the second one's content.
    assert outcome(verify(pki, first, SECOND)) == ("invalid", "content-altered")
    second = bytearray(sign(pki, SECOND))
    second[slots.signature.content_end - 1] ^= 1
    assert verify_module._template_for(bytes(second)) is template
    assert outcome(verify(pki, bytes(second), SECOND)) == ("invalid", "bad-signature")
    # The altered messageDigest is the one compared with the content.
    forged = bytearray(first)
    forged[slots.message_digest.content_start] ^= 1
    assert outcome(verify(pki, bytes(forged), FIRST)) == ("invalid", "content-altered")
    future = sign(pki, FIRST, signing_time=NOW + datetime.timedelta(hours=1))
    assert verify_module._template_for(future) is template
    assert outcome(verify(pki, future, FIRST)) == ("invalid", "signing-time-in-future")
    broken_time = bytearray(first)
    broken_time[slots.signing_time.content_start] = ord("x")
    with pytest.raises(MalformedMessage):
        verify(pki, bytes(broken_time), FIRST)


def test_a_reused_parse_equals_a_full_parse(pki):
    der = sign(pki, FIRST)
    verify(pki, der, FIRST)
    template = verify_module._template_for(der)
    assert template is not None
    slots = template.slots[0]
    per_message = [
        range(element.content_start, element.content_end)
        for element in (slots.signature, slots.message_digest, slots.signing_time)
        if element is not None
    ]
    rng = random.Random(5652)  # noqa: S311 -- reproducible mutations, not key material
    reused = 0
    for _ in range(300):
        mutated = bytearray(der)
        for _ in range(rng.randint(1, 3)):
            # Mostly inside the per-message values, where the template applies.
            where = rng.choice(per_message) if rng.random() < 0.7 else range(len(der))
            mutated[rng.choice(where)] = rng.randrange(256)
        candidate = bytes(mutated)
        reused += verify_module._template_for(candidate) is not None
        assert parse(candidate) == full_parse(candidate)
    assert reused > 100


def test_encapsulated_content_and_chunked_values_make_no_template(pki):
    signer = Signer(pki.rsa2048.key, pki.rsa2048.cert, pki.rsa2048.chain)
    opaque = signed_data(FIRST, signer, detached=False)
    result = verify_signed_data(
        opaque, None, trust_anchors=pki.trust_anchors(), expected_address=None
    )
    assert result.status == "valid"
    assert verify_module._template_for(opaque) is None

    # A streaming encoder's signature value in two chunks: the reader looks inside it.
    signed = cms.ContentInfo.load(sign(pki, FIRST))["content"]
    info = signed["signer_infos"][0]
    value = info["signature"].native
    chunked = _indefinite(0x24, *(b"\x04\x81\x80" + value[i : i + 128] for i in (0, 128)))
    fields = ("version", "sid", "digest_algorithm", "signed_attrs", "signature_algorithm")
    signer_info = _indefinite(0x30, *(info[name].dump() for name in fields), chunked)
    body = _indefinite(
        0x30,
        signed["version"].dump(),
        signed["digest_algorithms"].dump(),
        signed["encap_content_info"].dump(),
        _indefinite(0xA0, *(c.dump() for c in signed["certificates"])),
        _indefinite(0x31, signer_info),
    )
    ber = _indefinite(0x30, cms.ContentType("signed_data").dump(), _indefinite(0xA0, body))
    assert outcome(verify(pki, ber, FIRST)) == ("valid", None)
    assert verify_module._template_for(ber) is None

    # Indefinite outer lengths around primitive values: a template like any other.
    streamed = _streamed(sign(pki, FIRST))
    assert outcome(verify(pki, streamed, FIRST)) == ("valid", None)
    assert verify_module._template_for(streamed) is not None


def test_templates_are_bounded(pki, monkeypatch):
    monkeypatch.setattr(verify_module, "_MAX_TEMPLATE_LENGTHS", 2)
    for count in range(1, 5):  # four signatures of four lengths
        der = sign(pki, FIRST, capabilities=DECRYPTABLE_CAPABILITIES[:count])
        assert outcome(verify(pki, der, FIRST)) == ("valid", None)
    assert len(verify_module._TEMPLATES) == 2
    assert verify_module._template_for(der) is not None

    monkeypatch.setattr(verify_module, "_MAX_TEMPLATE_ENCODING", 1024)
    large = sign(pki, SECOND)
    assert len(large) > 1024
    assert outcome(verify(pki, large, SECOND)) == ("valid", None)
    assert verify_module._template_for(large) is None
