"""Encrypt content for many recipients: CMS EnvelopedData (AES-CBC) or AuthEnvelopedData (AES-GCM).

One content-encryption key is made per message and delivered to each recipient by key
transport (RSA PKCS#1 v1.5 or RSA-OAEP with SHA-256, RFC 4055) or by ephemeral-static ECDH
(RFC 5753, X9.63 KDF with SHA-256, AES key wrap of the content cipher's strength). The DER is
assembled around the ciphertext in one preallocated buffer: the content goes through the cipher
once and is never concatenated.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Collection, Iterable, Sequence
from typing import Literal

import attrs
from asn1crypto import algos, cms, core, keys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from sealrelay.smime.asn1 import (
    ECDH_STD_SHA256KDF,
    ID_AUTH_ENVELOPED_DATA,
    ID_DATA,
    ID_ENVELOPED_DATA,
    KeyWrapAlgorithm,
    issuer_and_serial,
)
from sealrelay.smime.ber import encode_header
from sealrelay.smime.ciphers import (
    BY_NAME,
    DECRYPTABLE_CAPABILITIES,
    ContentCipher,
    EncryptionCipherName,
)
from sealrelay.smime.errors import EncryptionError
from sealrelay.smime.keyagree import derive_kek


__all__ = [
    "DECRYPTABLE_CAPABILITIES",
    "EncryptionCipherName",
    "Recipient",
    "RsaPadding",
    "choose_cipher",
    "encrypt_content",
    "encrypt_content_buffer",
]

RsaPadding = Literal["pkcs1v15", "oaep"]

#: Strongest first. GCM outranks any CBC: only authenticated encryption stops EFAIL-style
#: ciphertext tampering.
_PREFERENCE: tuple[EncryptionCipherName, ...] = (
    "aes256-gcm",
    "aes128-gcm",
    "aes256-cbc",
    "aes128-cbc",
)
#: RFC 8551 §2.7.1.2: a recipient whose capabilities are unknown gets AES-256-CBC; AES-128-CBC
#: has been mandatory since S/MIME 3.2, so it is assumed too.
_ASSUMED: frozenset[str] = frozenset({"aes256-cbc", "aes128-cbc"})
_FALLBACK: EncryptionCipherName = "aes256-cbc"
_SUPPORTED_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_GCM_NONCE_SIZE = 12
_GCM_TAG_SIZE = 16


@attrs.frozen
class Recipient:
    """A recipient certificate and how the RecipientInfo for it is made."""

    certificate: x509.Certificate
    #: How the recipient finds its RecipientInfo: issuerAndSerialNumber or subjectKeyIdentifier.
    identifier: Literal["issuer_serial", "ski"] = "issuer_serial"
    #: RSA key transport padding for this recipient; None takes the message-wide default.
    rsa_padding: RsaPadding | None = None


def choose_cipher(capabilities: Iterable[Collection[str] | None]) -> EncryptionCipherName:
    """The strongest cipher every recipient supports, from each one's announced capabilities.

    Each item holds one recipient's SMIMECapabilities as sealrelay cipher names; None or an
    empty collection means nothing is known about that recipient. GCM is chosen only if every
    recipient announced it. Without a common cipher the answer is AES-256-CBC.
    """
    common = set(_PREFERENCE)
    for announced in capabilities:
        known = common.intersection(announced or ())
        common &= known or _ASSUMED
    return next((name for name in _PREFERENCE if name in common), _FALLBACK)


def encrypt_content(
    content: bytes,
    recipients: Sequence[Recipient | x509.Certificate],
    *,
    cipher: EncryptionCipherName,
    rsa_padding: RsaPadding = "pkcs1v15",
) -> bytes:
    """A DER ContentInfo holding `content` (id-data) encrypted to every recipient."""
    return bytes(
        encrypt_content_buffer(content, recipients, cipher=cipher, rsa_padding=rsa_padding)
    )


def encrypt_content_buffer(
    content: bytes,
    recipients: Sequence[Recipient | x509.Certificate],
    *,
    cipher: EncryptionCipherName,
    rsa_padding: RsaPadding = "pkcs1v15",
) -> bytearray:
    """`encrypt_content` in the buffer it was assembled in: no copy of a large message."""
    if not recipients:
        raise EncryptionError("cannot encrypt a message without recipients")
    spec = BY_NAME.get(cipher)
    if spec is None or spec.name not in _PREFERENCE:
        raise EncryptionError(f"unsupported content cipher {cipher!r}; use one of {_PREFERENCE}")
    cek = os.urandom(spec.key_size)
    infos = [
        _recipient_info(r if isinstance(r, Recipient) else Recipient(r), cek, spec, rsa_padding)
        for r in recipients
    ]
    return _assemble(content, infos, spec, cek)


# RecipientInfos are written as DER directly: building them with asn1crypto cost more than
# the RSA encryption inside them. Each is (DER, CMS version of the RecipientInfo).
_Info = tuple[bytes, int]


def _der(tag: int, content: bytes) -> bytes:
    return encode_header(tag, len(content)) + content


@functools.cache
def _oid_der(dotted: str) -> bytes:
    return bytes(core.ObjectIdentifier(dotted).dump())


# The two key transport AlgorithmIdentifiers never change: encoded once.
_RSA_PKCS1V15_ALGORITHM = bytes(cms.KeyEncryptionAlgorithm({"algorithm": "rsaes_pkcs1v15"}).dump())
_RSA_OAEP_SHA256_ALGORITHM = bytes(
    cms.KeyEncryptionAlgorithm(
        {
            "algorithm": "rsaes_oaep",
            "parameters": algos.RSAESOAEPParams(
                {
                    "hash_algorithm": {"algorithm": "sha256"},
                    "mask_gen_algorithm": {
                        "algorithm": "mgf1",
                        "parameters": {"algorithm": "sha256"},
                    },
                }
            ),
        }
    ).dump()
)


def _recipient_info(
    recipient: Recipient, cek: bytes, spec: ContentCipher, default_padding: RsaPadding
) -> _Info:
    cert = recipient.certificate
    public_key = cert.public_key()
    if isinstance(public_key, rsa.RSAPublicKey):
        _require_key_usage(cert, "key_encipherment")
        return _key_transport(recipient, public_key, cek, recipient.rsa_padding or default_padding)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, _SUPPORTED_CURVES):
            raise EncryptionError(
                f"cannot encrypt to {cert.subject.rfc4514_string()}: curve"
                f" {public_key.curve.name} is not supported (use P-256, P-384 or P-521)"
            )
        _require_key_usage(cert, "key_agreement")
        return _key_agreement(recipient, public_key, cek, spec)
    raise EncryptionError(
        f"cannot encrypt to {cert.subject.rfc4514_string()}: its {type(public_key).__name__}"
        " cannot receive encrypted mail (RSA or EC P-256/P-384/P-521 keys only)"
    )


def _require_key_usage(cert: x509.Certificate, usage: str) -> None:
    # RFC 8550 §4.4.2: a keyUsage extension, when present, must allow the key's role here.
    try:
        key_usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not getattr(key_usage, usage):
        raise EncryptionError(
            f"cannot encrypt to {cert.subject.rfc4514_string()}: its keyUsage lacks {usage}"
        )


def _subject_key_identifier(cert: x509.Certificate) -> bytes:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        raise EncryptionError(
            f"cannot identify {cert.subject.rfc4514_string()} by subjectKeyIdentifier:"
            " the certificate has none; use issuerAndSerialNumber"
        ) from None


def _key_transport(
    recipient: Recipient, public_key: rsa.RSAPublicKey, cek: bytes, rsa_padding: RsaPadding
) -> _Info:
    """KeyTransRecipientInfo: v0 with issuerAndSerialNumber, v2 with [0] subjectKeyIdentifier."""
    cert = recipient.certificate
    if recipient.identifier == "ski":
        version, rid = 2, _der(0x80, _subject_key_identifier(cert))
    else:
        version, rid = 0, issuer_and_serial(cert)
    if rsa_padding == "oaep":
        encrypted_key = public_key.encrypt(
            cek,
            padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
        )
        algorithm = _RSA_OAEP_SHA256_ALGORITHM
    else:
        encrypted_key = public_key.encrypt(cek, padding.PKCS1v15())
        algorithm = _RSA_PKCS1V15_ALGORITHM
    body = bytes((0x02, 0x01, version)) + rid + algorithm + _der(0x04, encrypted_key)
    return _der(0x30, body), version


def _key_agreement(
    recipient: Recipient, public_key: ec.EllipticCurvePublicKey, cek: bytes, spec: ContentCipher
) -> _Info:
    # One fresh ephemeral key per recipient: RFC 5753 allows sharing it among recipients on
    # the same curve, but separate KeyAgreeRecipientInfos keep every recipient independent.
    cert = recipient.certificate
    ephemeral = ec.generate_private_key(public_key.curve)
    wrap = KeyWrapAlgorithm({"algorithm": spec.wrap_oid})
    kek = derive_kek(ephemeral, public_key, kdf_hash="sha256", wrap=wrap, ukm=None)
    if recipient.identifier == "ski":
        rid = cms.KeyAgreementRecipientIdentifier(
            name="r_key_id",
            # A dict, not cms.RecipientKeyIdentifier: asn1crypto defines that name twice and
            # the later (RFC 5751 preference) definition has different field names.
            value={"subject_key_identifier": _subject_key_identifier(cert)},
        )
    else:
        rid = cms.KeyAgreementRecipientIdentifier(
            name="issuer_and_serial_number",
            value=cms.IssuerAndSerialNumber.load(issuer_and_serial(cert)),
        )
    point = ephemeral.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    originator = keys.PublicKeyInfo(
        # RFC 5753 §3.1.1 allows absent parameters; the curve is the recipient's.
        {"algorithm": keys.PublicKeyAlgorithm({"algorithm": "ec"}), "public_key": point}
    )
    info = cms.RecipientInfo(
        name="kari",
        value=cms.KeyAgreeRecipientInfo(
            {
                "version": "v3",
                "originator": cms.OriginatorIdentifierOrKey(
                    name="originator_key", value=originator
                ),
                "key_encryption_algorithm": cms.KeyEncryptionAlgorithm(
                    {"algorithm": ECDH_STD_SHA256KDF, "parameters": wrap}
                ),
                "recipient_encrypted_keys": [
                    {"rid": rid, "encrypted_key": aes_key_wrap(kek, cek)},
                ],
            }
        ),
    )
    return bytes(info.dump()), 3


def _open_element(identifier: int, head: bytes, tail_size: int) -> bytes:
    """Header and first bytes of an element whose last `tail_size` bytes come later."""
    return encode_header(identifier, len(head) + tail_size) + head


def _assemble(content: bytes, infos: list[_Info], spec: ContentCipher, cek: bytes) -> bytearray:
    authenticated = spec.authenticated
    if authenticated:
        iv = os.urandom(_GCM_NONCE_SIZE)
        # RFC 5084 GCMParameters: the nonce and, since it is not the default 12, the ICV length.
        parameters = _der(0x30, _der(0x04, iv) + bytes((0x02, 0x01, _GCM_TAG_SIZE)))
        ciphertext_size = len(content)
        trailer_size = 2 + _GCM_TAG_SIZE  # mac OCTET STRING
        version = 0  # RFC 5083 §2.1: always 0
    else:
        iv = os.urandom(spec.block_size)
        parameters = _der(0x04, iv)
        ciphertext_size = (len(content) // spec.block_size + 1) * spec.block_size
        trailer_size = 0
        # RFC 5652 §6.1: version 2 as soon as any RecipientInfo is not version 0.
        version = 0 if all(info_version == 0 for _, info_version in infos) else 2

    # Every element from the ContentInfo down to the encryptedContent ends with the
    # ciphertext (and, for GCM, the mac), which is written after the headers.
    tail = ciphertext_size + trailer_size
    algorithm = _der(0x30, _oid_der(spec.oid) + parameters)
    content_info = _open_element(
        0x30,
        _oid_der(ID_DATA)
        + algorithm
        + encode_header(0x80, ciphertext_size),  # [0] IMPLICIT OCTET STRING, primitive
        ciphertext_size,
    )
    # DER SET OF: elements sorted by their encodings.
    recipient_infos = _der(0x31, b"".join(sorted(der for der, _ in infos)))
    body = _open_element(0x30, bytes((0x02, 0x01, version)) + recipient_infos + content_info, tail)
    content_type = ID_AUTH_ENVELOPED_DATA if authenticated else ID_ENVELOPED_DATA
    head = _open_element(
        0x30,
        _oid_der(content_type) + _open_element(0xA0, body, tail),
        tail,
    )

    out = bytearray(len(head) + ciphertext_size + trailer_size)
    out[: len(head)] = head
    view = memoryview(out)[len(head) :]
    source = memoryview(content)
    if authenticated:
        gcm = Cipher(spec.algorithm(cek), modes.GCM(iv)).encryptor()
        # update_into wants block_size - 1 spare bytes; the mac's place provides them.
        written = gcm.update_into(source, view)
        gcm.finalize()
        view[written:] = _der(0x04, gcm.tag)
    else:
        encryptor = Cipher(spec.algorithm(cek), modes.CBC(iv)).encryptor()
        whole = len(content) - len(content) % spec.block_size
        written = encryptor.update_into(source[:whole], view)
        # PKCS#7 padding (RFC 5652 §6.3) only touches the last block, so pad just that.
        pad = spec.block_size - len(content) % spec.block_size
        last = encryptor.update(bytes(source[whole:]) + bytes((pad,)) * pad) + encryptor.finalize()
        view[written:] = last
    return out
