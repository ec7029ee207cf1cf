"""RecipientInfo matching with the BER reader: identifiers, mixed sets and broken entries."""

from __future__ import annotations

import pytest
from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from sealrelay.smime.ber import encode_header
from sealrelay.smime.decrypt import decrypt_content
from sealrelay.smime.envelope import Recipient, encrypt_content
from sealrelay.smime.errors import MalformedMessage, NoMatchingKey, UnsupportedAlgorithm
from tests.pki import TestIdentity, TestPKI
from tests.smime.test_decrypt import to_ber


CONTENT = b"Content-Type: text/plain\r\n\r\nfor your eyes only\r\n"
RSA_ENCRYPTION_OID = bytes.fromhex("06092a864886f70d010101")


def keys_of(*identities: TestIdentity):
    return [(identity.cert, identity.key) for identity in identities]


def _tlv(identifier: int, contents: bytes) -> bytes:
    return encode_header(identifier, len(contents)) + contents


def recipient_infos(der: bytes) -> list[bytes]:
    return [info.dump() for info in cms.ContentInfo.load(der)["content"]["recipient_infos"]]


def with_recipient_infos(der: bytes, infos: list[bytes]) -> bytes:
    """The EnvelopedData `der` with its RecipientInfos SET replaced by `infos`, in that order."""
    info = cms.ContentInfo.load(der)
    enveloped = info["content"]
    body = (
        enveloped["version"].dump()
        + _tlv(0x31, b"".join(infos))
        + enveloped["encrypted_content_info"].dump()
    )
    return _tlv(0x30, info["content_type"].dump() + _tlv(0xA0, _tlv(0x30, body)))


def ktri_for(identity: TestIdentity, rid: cms.RecipientIdentifier) -> bytes:
    """The ktri of a message to `identity`, with its rid replaced by `rid`."""
    der = encrypt_content(CONTENT, [identity.cert], cipher="aes128-cbc")
    ktri = cms.ContentInfo.load(der)["content"]["recipient_infos"][0].chosen
    ktri["rid"] = rid
    return with_recipient_infos(der, [cms.RecipientInfo(name="ktri", value=ktri).dump(force=True)])


def issuer_and_serial(issuer: asn1_x509.Name, serial: int) -> cms.RecipientIdentifier:
    return cms.RecipientIdentifier(
        name="issuer_and_serial_number",
        value=cms.IssuerAndSerialNumber({"issuer": issuer, "serial_number": serial}),
    )


def issuer_of(identity: TestIdentity) -> asn1_x509.Name:
    certificate = asn1_x509.Certificate.load(identity.cert.public_bytes(Encoding.DER))
    return certificate["tbs_certificate"]["issuer"]


# --- identifiers ---


def test_issuer_and_serial_number_encoded_as_in_our_certificate(pki: TestPKI):
    der = encrypt_content(CONTENT, [pki.rsa2048.cert], cipher="aes128-cbc")
    assert decrypt_content(der, keys_of(pki.rsa2048)).content == CONTENT


def test_issuer_encoded_differently_still_names_us(pki: TestPKI):
    # The same name by RFC 5280 7.1 (other string type, other case): matched by comparison.
    native = issuer_of(pki.rsa2048).native
    shouted = asn1_x509.Name.build({k: v.upper() for k, v in native.items()}, use_printable=False)
    assert shouted.dump() != issuer_of(pki.rsa2048).dump()
    der = ktri_for(pki.rsa2048, issuer_and_serial(shouted, pki.rsa2048.cert.serial_number))
    assert decrypt_content(der, keys_of(pki.rsa2048)).content == CONTENT


@pytest.mark.parametrize("change", ["serial", "issuer"])
def test_issuer_and_serial_number_must_both_match(pki: TestPKI, change: str):
    issuer, serial = issuer_of(pki.rsa2048), pki.rsa2048.cert.serial_number
    if change == "serial":
        serial += 1
    else:
        issuer = asn1_x509.Name.build({"common_name": "Some Other CA"})
    der = ktri_for(pki.rsa2048, issuer_and_serial(issuer, serial))
    with pytest.raises(NoMatchingKey):
        decrypt_content(der, keys_of(pki.rsa2048))


def test_subject_key_identifier_in_ber_chunks(pki: TestPKI):
    # to_ber chunks every primitive [0], the ktri's subjectKeyIdentifier included.
    der = encrypt_content(
        CONTENT, [Recipient(pki.rsa2048.cert, identifier="ski")], cipher="aes128-cbc"
    )
    ber = to_ber(der, chunk=3)
    assert decrypt_content(ber, keys_of(pki.rsa2048)).content == CONTENT
    with pytest.raises(NoMatchingKey):
        decrypt_content(ber, keys_of(pki.rsa3072))


def test_mixed_key_transport_and_key_agreement(pki: TestPKI):
    recipients: list[Recipient | x509.Certificate] = [
        pki.rsa2048.cert,
        Recipient(pki.rsa3072.cert, identifier="ski"),
        pki.p256.cert,
        Recipient(pki.p384.cert, identifier="ski"),
    ]
    for cipher in ("aes128-cbc", "aes256-gcm"):
        der = encrypt_content(CONTENT, recipients, cipher=cipher)
        for identity, scheme in (
            (pki.rsa2048, "rsa-pkcs1v15"),
            (pki.rsa3072, "rsa-pkcs1v15"),
            (pki.p256, "ecdh"),
            (pki.p384, "ecdh"),
        ):
            result = decrypt_content(der, keys_of(identity))
            assert (result.content, result.key_management) == (CONTENT, scheme)
        # The caller's order of preference decides among several keys the message names.
        everyone = keys_of(pki.p384, pki.rsa3072, pki.p256, pki.rsa2048)
        assert decrypt_content(der, everyone).certificate == pki.p384.cert
        assert decrypt_content(der, everyone[1:]).certificate == pki.rsa3072.cert


def test_unsupported_key_transport_algorithm_is_reported(pki: TestPKI):
    der = encrypt_content(CONTENT, [pki.rsa2048.cert], cipher="aes128-cbc")
    assert der.count(RSA_ENCRYPTION_OID) == 1
    other = der.replace(RSA_ENCRYPTION_OID, RSA_ENCRYPTION_OID[:-1] + b"\x0b")
    with pytest.raises(UnsupportedAlgorithm, match="key transport algorithm"):
        decrypt_content(other, keys_of(pki.rsa2048))
    with pytest.raises(NoMatchingKey):  # not for us: the algorithm does not matter
        decrypt_content(other, keys_of(pki.rsa3072))


# --- broken and foreign RecipientInfos ---

KEKRI = _tlv(0xA2, b"\x02\x01\x04" + b"junk that nobody reads")
PWRI = _tlv(0xA3, b"\x02\x01\x00" + b"more junk")
KTRI_WITHOUT_FIELDS = _tlv(0x30, b"\x02\x01\x00")


@pytest.fixture(scope="module")
def to_rsa2048(pki: TestPKI) -> bytes:
    return encrypt_content(CONTENT, [pki.rsa2048.cert], cipher="aes128-cbc")


def test_recipient_infos_we_cannot_open_are_skipped(pki: TestPKI, to_rsa2048: bytes):
    ours = recipient_infos(to_rsa2048)
    der = with_recipient_infos(to_rsa2048, [KEKRI, PWRI, *ours])
    assert decrypt_content(der, keys_of(pki.rsa2048)).content == CONTENT
    with pytest.raises(NoMatchingKey):
        decrypt_content(with_recipient_infos(to_rsa2048, [KEKRI, PWRI]), keys_of(pki.rsa2048))


def test_a_broken_recipient_info_before_ours_is_malformed(pki: TestPKI, to_rsa2048: bytes):
    ours = recipient_infos(to_rsa2048)
    for broken in (
        KTRI_WITHOUT_FIELDS,
        _tlv(0xA7, b"\x02\x01\x00"),  # no such kind of RecipientInfo
        _tlv(0x04, b"\x00"),  # not a RecipientInfo at all
    ):
        der = with_recipient_infos(to_rsa2048, [broken, *ours])
        with pytest.raises(MalformedMessage):
            decrypt_content(der, keys_of(pki.rsa2048))


def test_a_broken_recipient_info_of_a_kind_we_cannot_use_is_not_looked_into(
    pki: TestPKI, to_rsa2048: bytes
):
    fieldless_kari = _tlv(0xA1, b"\x02\x01\x03")
    der = with_recipient_infos(to_rsa2048, [fieldless_kari, *recipient_infos(to_rsa2048)])
    assert decrypt_content(der, keys_of(pki.rsa2048)).content == CONTENT
    with pytest.raises(MalformedMessage):  # an EC key reads it
        decrypt_content(der, keys_of(pki.p256))


def test_a_broken_recipient_info_after_ours_is_not_looked_into(pki: TestPKI, to_rsa2048: bytes):
    # As with asn1crypto's lazy parsing before: the search stops at our RecipientInfo.
    der = with_recipient_infos(to_rsa2048, [*recipient_infos(to_rsa2048), KTRI_WITHOUT_FIELDS])
    assert decrypt_content(der, keys_of(pki.rsa2048)).content == CONTENT
    with pytest.raises(MalformedMessage):  # someone else's key reads every one of them
        decrypt_content(der, keys_of(pki.rsa3072))


def test_broken_recipient_identifiers_are_malformed(pki: TestPKI):
    der = encrypt_content(CONTENT, [pki.rsa2048.cert], cipher="aes128-cbc")
    ktri = cms.ContentInfo.load(der)["content"]["recipient_infos"][0].chosen
    rid = ktri["rid"].chosen
    issuer, serial = rid["issuer"].dump(), rid["serial_number"].dump()
    for broken_rid in (
        _tlv(0x30, issuer),  # serial number missing
        _tlv(0x30, issuer + serial + serial),  # a field too many
        _tlv(0x30, issuer + b"\x22" + serial[1:]),  # constructed INTEGER
        _tlv(0x30, b"\x31\x00" + serial),  # issuer is not a Name
    ):
        body = (
            ktri["version"].dump()
            + broken_rid
            + ktri["key_encryption_algorithm"].dump()
            + ktri["encrypted_key"].dump()
        )
        with pytest.raises(MalformedMessage):
            decrypt_content(with_recipient_infos(der, [_tlv(0x30, body)]), keys_of(pki.rsa2048))


def test_broken_recipient_encrypted_keys_are_malformed(pki: TestPKI):
    der = encrypt_content(CONTENT, [pki.p256.cert], cipher="aes128-cbc")
    kari = cms.ContentInfo.load(der)["content"]["recipient_infos"][0].chosen
    head = (
        kari["version"].dump() + kari["originator"].dump() + kari["key_encryption_algorithm"].dump()
    )
    entry = kari["recipient_encrypted_keys"][0]
    for keys in (
        _tlv(0x30, _tlv(0x04, b"not a RecipientEncryptedKey")),
        _tlv(0x30, _tlv(0x30, entry["rid"].dump())),  # encryptedKey missing
        _tlv(0x30, _tlv(0x30, _tlv(0xA0, b"\x05\x00") + entry["encrypted_key"].dump())),
    ):
        info = _tlv(0xA1, head + keys)
        with pytest.raises(MalformedMessage):
            decrypt_content(with_recipient_infos(der, [info]), keys_of(pki.p256))
