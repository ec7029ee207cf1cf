"""Decrypt CMS EnvelopedData and AuthEnvelopedData, DER or BER (indefinite lengths, chunks).

Errors, in the order they are checked:

- `MalformedMessage`: the input is too large, not ASN.1, not an (Auth)EnvelopedData, or its
  structure or algorithm parameters are broken.
- `NoMatchingKey`: no RecipientInfo names any of the given keys.
- `UnsupportedAlgorithm`: a message for us whose content cipher or key management scheme
  sealrelay does not implement.
- `DecryptionFailed`: a RecipientInfo named one of our keys, but the content could not be
  recovered. Every cause raises it with the same message and no chained cause.

No private key is used before the last stage: matching compares identifiers only.

A failed AES-CBC decryption with a wrong key is caught by the padding check only with
probability 255/256 (as in every CMS implementation); AES-GCM always detects it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import attrs
from asn1crypto import algos
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from sealrelay.smime.asn1 import (
    ID_AUTH_ENVELOPED_DATA,
    ID_ENVELOPED_DATA,
    GCMParameters,
    oid_dotted,
)
from sealrelay.smime.ber import (
    CONTEXT,
    TAG_INTEGER,
    TAG_OCTET_STRING,
    TAG_OID,
    TAG_SEQUENCE,
    TAG_SET,
    UNIVERSAL,
    Element,
    Fields,
    Reader,
)
from sealrelay.smime.ciphers import BY_OID, ContentCipher
from sealrelay.smime.errors import DecryptionFailed, MalformedMessage, UnsupportedAlgorithm
from sealrelay.smime.recipients import (
    KeyPair,
    decryption_candidates,
    find_recipient,
    recover_key,
)


__all__ = ["DEFAULT_MAX_SIZE", "DecryptedContent", "KeyPair", "decrypt_content"]

#: Larger inputs are refused before parsing: a relay's message size limit plus base64 slack.
DEFAULT_MAX_SIZE = 64 * 1024 * 1024

_FAILED = "the message could not be decrypted: it is corrupted, forged or not for this key"
# RFC 5084 §3.2 allows 12 to 16 octet GCM tags; RFC 5084 recommends a 12 octet nonce and
# cryptography accepts 8 to 128.
_GCM_TAG_SIZES = range(12, 17)
_GCM_NONCE_SIZES = range(8, 129)


@attrs.frozen
class DecryptedContent:
    """The recovered content and how it was protected."""

    content: bytes = attrs.field(repr=False)
    #: Dotted OID of the encrypted content's type; id-data (1.2.840.113549.1.7.1) for S/MIME.
    content_type: str
    #: sealrelay cipher name, e.g. "aes256-gcm", "aes128-cbc", "des-ede3-cbc".
    cipher: str
    #: True for AuthEnvelopedData: the content is integrity protected (AES-GCM).
    authenticated: bool
    #: How the content key reached us: "rsa-pkcs1v15", "rsa-oaep" or "ecdh".
    key_management: str
    #: The certificate of the key that decrypted the message.
    certificate: x509.Certificate


class _Envelope(NamedTuple):
    """(A NamedTuple: built for every message, where a frozen attrs class costs twice as much.)"""

    authenticated: bool
    recipient_infos: Element  # the RecipientInfos SET
    content_type: str
    #: The content encryption algorithm (dotted OID) and its parameters, as received.
    cipher_oid: str
    cipher_params: Element | None
    encrypted_content: Element
    #: Additional authenticated data: the authAttrs re-tagged as a SET OF (RFC 5083 §2.2).
    aad: bytes | None
    mac: bytes | None


def decrypt_content(
    data: bytes | bytearray | memoryview,
    keys: Sequence[KeyPair],
    *,
    max_size: int = DEFAULT_MAX_SIZE,
) -> DecryptedContent:
    """Decrypt a CMS ContentInfo with whichever of `keys` (in order of preference) it names."""
    view = memoryview(data).cast("B")
    if len(view) > max_size:
        raise MalformedMessage(
            f"encrypted message of {len(view)} bytes exceeds the {max_size}-byte limit"
        )
    candidates = decryption_candidates(keys)
    # Generous for real CMS (openssl and gpgsm chunk by 4 KiB, each nesting level walks the
    # chunks again), tight for a flood of tiny elements.
    reader = Reader(view, max_reads=100_000 + len(view) // 64)
    try:
        envelope = _parse(reader)
        match = find_recipient(reader, envelope.recipient_infos, candidates)
        cipher, iv = _content_cipher(reader, envelope)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError) as exc:
        # asn1crypto parses lazily and reports broken input with whichever builtin error the
        # failing accessor met; all of them mean the same thing here.
        raise MalformedMessage(f"malformed CMS structure: {exc}") from None
    cek = recover_key(match, cipher.key_size)
    if envelope.mac is not None:
        content = _decrypt_gcm(
            reader, envelope=envelope, cipher=cipher, cek=cek, nonce=iv, tag=envelope.mac
        )
    else:
        content = _decrypt_cbc(reader, envelope.encrypted_content, cipher, cek, iv)
    return DecryptedContent(
        content=content,
        content_type=envelope.content_type,
        cipher=cipher.name,
        authenticated=envelope.authenticated,
        key_management=match.scheme,
        certificate=match.certificate,
    )


def _oid(reader: Reader, element: Element) -> str:
    if element.constructed:
        raise MalformedMessage("constructed OBJECT IDENTIFIER")
    return oid_dotted(reader.bytes_of(element))


def _algorithm_identifier(reader: Reader, element: Element) -> tuple[str, Element | None]:
    """(dotted algorithm, parameters element) of an AlgorithmIdentifier, read by hand: the IV
    in it differs in every message, and asn1crypto took longer than the AES decryption."""
    parts = list(reader.children(element))
    if not 1 <= len(parts) <= 2 or not parts[0].is_(UNIVERSAL, TAG_OID):
        raise MalformedMessage("malformed content encryption AlgorithmIdentifier")
    return _oid(reader, parts[0]), parts[1] if len(parts) == 2 else None


def _parse(reader: Reader) -> _Envelope:
    top = reader.element(0, len(reader.buf))
    if top.end != len(reader.buf):
        raise MalformedMessage("data follows the end of the CMS ContentInfo")
    if not top.is_(UNIVERSAL, TAG_SEQUENCE):
        raise MalformedMessage("not a CMS ContentInfo")
    content_info = Fields(reader, top, 2)
    content_type = _oid(reader, content_info.require(UNIVERSAL, TAG_OID))
    wrapper = content_info.require(CONTEXT, 0)
    content_info.end()
    if content_type not in (ID_ENVELOPED_DATA, ID_AUTH_ENVELOPED_DATA):
        raise MalformedMessage(
            f"CMS content type {content_type} is not EnvelopedData or AuthEnvelopedData"
        )
    authenticated = content_type == ID_AUTH_ENVELOPED_DATA
    explicit = Fields(reader, wrapper, 1)
    body = Fields(reader, explicit.require(UNIVERSAL, TAG_SEQUENCE), 7)
    explicit.end()

    body.require(UNIVERSAL, TAG_INTEGER)  # version: implied by the fields that follow
    body.take(CONTEXT, 0, optional=True)  # originatorInfo: certificates we do not need
    recipient_infos = body.require(UNIVERSAL, TAG_SET)
    encrypted_content_info = Fields(reader, body.require(UNIVERSAL, TAG_SEQUENCE), 3)
    aad = mac = None
    if authenticated:
        auth_attrs = body.take(CONTEXT, 1, optional=True)
        if auth_attrs is not None:
            if auth_attrs.indefinite:
                raise MalformedMessage("AuthEnvelopedData authAttrs are not DER encoded")
            aad = b"\x31" + reader.bytes_of(auth_attrs)[1:]
        mac_element = body.require(UNIVERSAL, TAG_OCTET_STRING)
        mac = reader.octets(mac_element)
        body.take(CONTEXT, 2, optional=True)  # unauthAttrs
    else:
        body.take(CONTEXT, 1, optional=True)  # unprotectedAttrs
    body.end()

    inner_type = _oid(reader, encrypted_content_info.require(UNIVERSAL, TAG_OID))
    cipher_oid, cipher_params = _algorithm_identifier(
        reader, encrypted_content_info.require(UNIVERSAL, TAG_SEQUENCE)
    )
    encrypted = encrypted_content_info.take(CONTEXT, 0, optional=True)
    encrypted_content_info.end()
    if encrypted is None:
        raise MalformedMessage("the message carries no encrypted content (detached content)")
    return _Envelope(
        authenticated, recipient_infos, inner_type, cipher_oid, cipher_params, encrypted, aad, mac
    )


def _content_cipher(reader: Reader, envelope: _Envelope) -> tuple[ContentCipher, bytes]:
    """The content cipher and its IV or nonce."""
    cipher = BY_OID.get(envelope.cipher_oid)
    params = envelope.cipher_params
    if cipher is None:
        name = algos.EncryptionAlgorithmId.map(envelope.cipher_oid)
        raise UnsupportedAlgorithm(f"content encryption algorithm {name} is not supported")
    if cipher.authenticated != envelope.authenticated:
        kind = "AuthEnvelopedData" if envelope.authenticated else "EnvelopedData"
        raise MalformedMessage(f"{cipher.name} cannot be used in {kind}")
    if cipher.authenticated:
        if params is None:
            raise MalformedMessage(f"{cipher.name} without its GCM parameters")
        gcm = GCMParameters.load(reader.definite(params))
        nonce = bytes(gcm["aes_nonce"].native)
        tag_size = int(gcm["aes_icvlen"].native)
        if len(nonce) not in _GCM_NONCE_SIZES or tag_size not in _GCM_TAG_SIZES:
            raise MalformedMessage("AES-GCM nonce or tag length is out of range")
        if envelope.mac is None or len(envelope.mac) != tag_size:
            raise MalformedMessage("AuthEnvelopedData mac does not have the announced length")
        return cipher, nonce
    if params is None or not params.is_(UNIVERSAL, TAG_OCTET_STRING):
        raise MalformedMessage(f"{cipher.name} without its IV")
    iv = reader.octets(params)
    if len(iv) != cipher.block_size:
        raise MalformedMessage(f"{cipher.name} IV must be {cipher.block_size} bytes")
    return cipher, iv


def _ciphertext_size(reader: Reader, element: Element) -> int:
    if not element.constructed:
        return element.content_end - element.content_start
    return sum(len(chunk) for chunk in reader.octet_string_chunks(element))


def _decrypt_cbc(
    reader: Reader, element: Element, cipher: ContentCipher, cek: bytes, iv: bytes
) -> bytes:
    size = _ciphertext_size(reader, element)
    block = cipher.block_size
    if size == 0 or size % block:
        raise DecryptionFailed(_FAILED)
    # update_into needs one block of room beyond the data it is given.
    out = bytearray(size + block)
    view = memoryview(out)
    decryptor = Cipher(cipher.algorithm(cek), modes.CBC(iv)).decryptor()
    written = 0
    for chunk in reader.octet_string_chunks(element):
        written += decryptor.update_into(chunk, view[written:])
    decryptor.finalize()
    # Unpad only the last block, with cryptography's constant-time unpadder.
    unpadder = padding.PKCS7(block * 8).unpadder()
    try:
        last = unpadder.update(bytes(view[written - block : written])) + unpadder.finalize()
    except ValueError:
        raise DecryptionFailed(_FAILED) from None
    view.release()
    out[written - block :] = last
    return bytes(out)


def _decrypt_gcm(
    reader: Reader,
    *,
    envelope: _Envelope,
    cipher: ContentCipher,
    cek: bytes,
    nonce: bytes,
    tag: bytes,
) -> bytes:
    size = _ciphertext_size(reader, envelope.encrypted_content)
    out = bytearray(size + cipher.block_size)
    view = memoryview(out)
    decryptor = Cipher(
        cipher.algorithm(cek), modes.GCM(nonce, tag, min_tag_length=len(tag))
    ).decryptor()
    if envelope.aad is not None:
        decryptor.authenticate_additional_data(envelope.aad)
    written = 0
    for chunk in reader.octet_string_chunks(envelope.encrypted_content):
        written += decryptor.update_into(chunk, view[written:])
    try:
        decryptor.finalize()
    except InvalidTag:
        raise DecryptionFailed(_FAILED) from None
    view.release()
    del out[written:]
    return bytes(out)
