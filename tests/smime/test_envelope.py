"""encrypt_content round trips through decrypt_content, the DER it produces, cipher choice."""

from __future__ import annotations

import datetime
import tracemalloc

import pytest
from asn1crypto import cms, core
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sealrelay.smime.ciphers import BY_NAME, DECRYPTABLE_CAPABILITIES
from sealrelay.smime.decrypt import decrypt_content
from sealrelay.smime.envelope import Recipient, choose_cipher, encrypt_content
from sealrelay.smime.errors import EncryptionError
from tests.pki import TestIdentity, TestPKI, rsa_key


CIPHERS = ["aes128-cbc", "aes256-cbc", "aes128-gcm", "aes256-gcm"]
CONTENT = b"Content-Type: text/plain\r\n\r\nMeet at noon.\r\n" * 7
SHA256KDF = "1.3.132.1.11.1"
AES128_WRAP = "2.16.840.1.101.3.4.1.5"
AES256_WRAP = "2.16.840.1.101.3.4.1.45"


def _algorithm_without_parameters(oid: str) -> bytes:
    encoded: bytes = core.ObjectIdentifier(oid).dump()
    return bytes((0x30, len(encoded))) + encoded


def keys_of(identity: TestIdentity):
    return [(identity.cert, identity.key)]


def parse(der: bytes):
    info = cms.ContentInfo.load(der, strict=True)
    info.native  # noqa: B018 -- parses every field, so malformed DER fails here
    return info


@pytest.mark.parametrize("cipher", CIPHERS)
@pytest.mark.parametrize(
    ("who", "padding"),
    [("rsa2048", "pkcs1v15"), ("rsa3072", "oaep"), ("p256", None), ("p384", None)],
)
@pytest.mark.parametrize("identifier", ["issuer_serial", "ski"])
def test_round_trip(pki: TestPKI, cipher, who, padding, identifier):
    identity: TestIdentity = getattr(pki, who)
    recipient = Recipient(identity.cert, identifier=identifier, rsa_padding=padding)
    der = encrypt_content(CONTENT, [recipient], cipher=cipher)
    parse(der)

    result = decrypt_content(der, keys_of(identity))

    assert result.content == CONTENT
    assert result.cipher == cipher
    assert result.authenticated == cipher.endswith("gcm")
    expected_scheme = {"pkcs1v15": "rsa-pkcs1v15", "oaep": "rsa-oaep", None: "ecdh"}[padding]
    assert result.key_management == expected_scheme
    assert result.certificate == identity.cert
    assert result.content_type == "1.2.840.113549.1.7.1"


@pytest.mark.parametrize("cipher", CIPHERS)
@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 32, 4096])
def test_content_sizes_around_the_block_size(pki: TestPKI, cipher, size):
    content = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    der = encrypt_content(content, [pki.p256.cert], cipher=cipher)
    assert decrypt_content(der, keys_of(pki.p256)).content == content


@pytest.mark.parametrize("cipher", CIPHERS)
def test_one_message_for_mixed_recipients(pki: TestPKI, cipher):
    recipients: list[Recipient | x509.Certificate] = [
        pki.rsa2048.cert,
        Recipient(pki.rsa3072.cert, rsa_padding="oaep"),
        Recipient(pki.p256.cert, identifier="ski"),
        pki.p384.cert,
    ]
    der = encrypt_content(CONTENT, recipients, cipher=cipher)

    infos = parse(der)["content"]["recipient_infos"]
    assert sorted(ri.name for ri in infos) == ["kari", "kari", "ktri", "ktri"]
    for identity in (pki.rsa2048, pki.rsa3072, pki.p256, pki.p384):
        assert decrypt_content(der, keys_of(identity)).content == CONTENT


def test_cbc_envelope_structure(pki: TestPKI):
    only_rsa = parse(encrypt_content(CONTENT, [pki.rsa2048.cert], cipher="aes256-cbc"))
    assert only_rsa["content_type"].native == "enveloped_data"
    # RFC 5652 §6.1: version 0 when every RecipientInfo is a version 0 KeyTransRecipientInfo.
    assert only_rsa["content"]["version"].native == "v0"
    algorithm = only_rsa["content"]["encrypted_content_info"]["content_encryption_algorithm"]
    assert algorithm["algorithm"].native == "aes256_cbc"
    assert len(algorithm["parameters"].native) == 16

    with_ec = parse(
        encrypt_content(CONTENT, [pki.rsa2048.cert, pki.p256.cert], cipher="aes128-cbc")
    )
    assert with_ec["content"]["version"].native == "v2"
    (kari,) = [ri.chosen for ri in with_ec["content"]["recipient_infos"] if ri.name == "kari"]
    assert kari["version"].native == "v3"
    assert kari["originator"].name == "originator_key"
    assert kari["key_encryption_algorithm"]["algorithm"].dotted == SHA256KDF
    # RFC 5753 §7.1.5 / RFC 3565: the AES key wrap identifier has absent parameters.
    wrap = kari["key_encryption_algorithm"]["parameters"].dump()
    assert wrap == _algorithm_without_parameters(AES128_WRAP)


def test_gcm_envelope_structure(pki: TestPKI):
    info = parse(encrypt_content(CONTENT, [pki.rsa2048.cert, pki.p384.cert], cipher="aes256-gcm"))
    assert info["content_type"].native == "authenticated_enveloped_data"
    body = info["content"]
    assert body["version"].native == "v0"  # RFC 5083 §2.1: always 0
    algorithm = body["auth_encrypted_content_info"]["content_encryption_algorithm"]
    assert algorithm["algorithm"].native == "aes256_gcm"
    # GCMParameters: 12-octet nonce, then the non-default 16-octet ICV length.
    nonce, icv_length = algorithm["parameters"].native.values()
    assert len(nonce) == 12
    assert icv_length == 16
    assert len(body["mac"].native) == 16
    (kari,) = [ri.chosen for ri in body["recipient_infos"] if ri.name == "kari"]
    wrap = kari["key_encryption_algorithm"]["parameters"].dump()
    assert wrap == _algorithm_without_parameters(AES256_WRAP)


def test_oaep_parameters_are_sha256(pki: TestPKI):
    info = parse(
        encrypt_content(CONTENT, [pki.rsa2048.cert], cipher="aes128-cbc", rsa_padding="oaep")
    )
    algorithm = info["content"]["recipient_infos"][0].chosen["key_encryption_algorithm"]
    assert algorithm["algorithm"].native == "rsaes_oaep"
    params = algorithm["parameters"]
    assert params["hash_algorithm"]["algorithm"].native == "sha256"
    assert params["mask_gen_algorithm"]["algorithm"].native == "mgf1"
    assert params["mask_gen_algorithm"]["parameters"]["algorithm"].native == "sha256"


def test_each_message_has_fresh_keys_and_ivs(pki: TestPKI):
    first = encrypt_content(CONTENT, [pki.p256.cert], cipher="aes128-gcm")
    second = encrypt_content(CONTENT, [pki.p256.cert], cipher="aes128-gcm")
    assert first != second
    assert CONTENT[:32] not in first


def test_recipient_identifiers_in_der(pki: TestPKI):
    ski = pki.rsa2048.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    info = parse(
        encrypt_content(
            CONTENT,
            [Recipient(pki.rsa2048.cert, identifier="ski"), pki.rsa3072.cert],
            cipher="aes128-cbc",
        )
    )
    rids = {ri.chosen["rid"].name: ri.chosen for ri in info["content"]["recipient_infos"]}
    assert rids["subject_key_identifier"]["rid"].chosen.native == ski.digest
    assert rids["subject_key_identifier"]["version"].native == "v2"
    by_serial = rids["issuer_and_serial_number"]["rid"].chosen
    assert by_serial["serial_number"].native == pki.rsa3072.cert.serial_number
    assert by_serial["issuer"].dump() == pki.intermediate.subject.public_bytes()


def test_refuses_no_recipients():
    with pytest.raises(EncryptionError, match="without recipients"):
        encrypt_content(CONTENT, [], cipher="aes128-cbc")


def test_refuses_unknown_cipher(pki: TestPKI):
    with pytest.raises(EncryptionError, match="unsupported content cipher"):
        encrypt_content(CONTENT, [pki.rsa2048.cert], cipher="des-ede3-cbc")  # type: ignore[arg-type]


def test_refuses_ed25519_recipient(pki: TestPKI):
    with pytest.raises(EncryptionError, match="cannot receive encrypted mail"):
        encrypt_content(CONTENT, [pki.rsa2048.cert, pki.ed25519.cert], cipher="aes128-cbc")


def _self_signed(key, *, key_usage: x509.KeyUsage | None, with_ski: bool) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "odd")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    if with_ski:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    return builder.sign(key, hashes.SHA256())


def _usage(*, key_encipherment=False, key_agreement=False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=key_agreement,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def test_refuses_keys_whose_usage_forbids_encryption():
    rsa_signing_only = _self_signed(rsa_key(), key_usage=_usage(), with_ski=True)
    ec_signing_only = _self_signed(
        ec.generate_private_key(ec.SECP256R1()), key_usage=_usage(), with_ski=True
    )
    with pytest.raises(EncryptionError, match="keyUsage lacks key_encipherment"):
        encrypt_content(CONTENT, [rsa_signing_only], cipher="aes128-cbc")
    with pytest.raises(EncryptionError, match="keyUsage lacks key_agreement"):
        encrypt_content(CONTENT, [ec_signing_only], cipher="aes128-cbc")


def test_certificate_without_key_usage_or_ski():
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _self_signed(key, key_usage=None, with_ski=False)
    der = encrypt_content(CONTENT, [cert], cipher="aes128-gcm")
    assert decrypt_content(der, [(cert, key)]).content == CONTENT
    with pytest.raises(EncryptionError, match="has none; use issuerAndSerialNumber"):
        encrypt_content(CONTENT, [Recipient(cert, identifier="ski")], cipher="aes128-gcm")


def test_refuses_unsupported_curve():
    key = ec.generate_private_key(ec.SECP256K1())
    cert = _self_signed(key, key_usage=_usage(key_agreement=True), with_ski=True)
    with pytest.raises(EncryptionError, match="secp256k1 is not supported"):
        encrypt_content(CONTENT, [cert], cipher="aes128-cbc")


@pytest.mark.parametrize(
    ("capabilities", "expected"),
    [
        ([["aes256-gcm", "aes128-gcm", "aes256-cbc"]], "aes256-gcm"),
        ([["aes128-gcm", "aes256-cbc", "aes128-cbc"]], "aes128-gcm"),
        # GCM only when every recipient announced it.
        ([["aes256-gcm", "aes256-cbc"], ["aes256-cbc", "aes128-cbc"]], "aes256-cbc"),
        ([["aes256-gcm"], ["aes128-gcm", "aes256-gcm"]], "aes256-gcm"),
        ([["aes256-gcm"], None], "aes256-cbc"),
        ([["aes256-gcm"], []], "aes256-cbc"),
        # An old client that announced only AES-128-CBC gets it.
        ([["aes128-cbc", "des-ede3-cbc"], None], "aes128-cbc"),
        # Unknown names are ignored; nothing common falls back to AES-256-CBC.
        ([["rc2-40", "des-ede3-cbc"]], "aes256-cbc"),
        ([["aes128-gcm"], ["aes256-gcm"]], "aes256-cbc"),
        ([], "aes256-gcm"),
    ],
)
def test_choose_cipher(capabilities, expected):
    assert choose_cipher(capabilities) == expected


def test_decryptable_capabilities_are_decryptable_strongest_first():
    ciphers = [name for name in DECRYPTABLE_CAPABILITIES if name != "rsaes-oaep"]
    assert all(name in BY_NAME for name in ciphers)
    assert ciphers == sorted(
        ciphers, key=lambda n: (not BY_NAME[n].authenticated, -BY_NAME[n].key_size)
    )
    assert "des-ede3-cbc" not in DECRYPTABLE_CAPABILITIES


@pytest.mark.parametrize("cipher", ["aes256-cbc", "aes256-gcm"])
def test_25_mb_message_stays_within_bounded_memory(pki: TestPKI, cipher):
    size = 25 * 1024 * 1024
    content = bytes(size)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        der = encrypt_content(content, [pki.p256.cert], cipher=cipher)
        _, encrypt_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        result = decrypt_content(der, keys_of(pki.p256))
        _, decrypt_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.content == content
    # Input and output are each one copy; the working buffer is the only other one.
    assert encrypt_peak < 2.2 * size
    assert decrypt_peak - before < 2.2 * size
