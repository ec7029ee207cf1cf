"""Built-in S/MIME: signing, encryption, decryption and verification through ``sealrelay.smime``.

This module only translates between the hook API (sealrelay models, raw messages) and the
S/MIME library (cryptography objects, entities); the CMS work lives in the library.
"""

from __future__ import annotations

import functools

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from sealrelay import (
    Certificate,
    Decryption,
    Encryption,
    Identity,
    MessageError,
    Policy,
    RejectMessage,
    SignatureCheck,
    SignatureVerdict,
    hookimpl,
)
from sealrelay.smime import mime
from sealrelay.smime.decrypt import decrypt_content
from sealrelay.smime.envelope import Recipient, choose_cipher, encrypt_content_buffer
from sealrelay.smime.errors import (
    DecryptionFailed,
    MalformedMessage,
    NoMatchingKey,
    SigningError,
    SmimeError,
    UnsupportedAlgorithm,
)
from sealrelay.smime.memo import cached_by_identity, small_certificates
from sealrelay.smime.sign import Signer, sign_message
from sealrelay.smime.verify import VerificationResult, verify_entity


_ENCRYPTED_TYPES = {True: "authEnveloped-data", False: "enveloped-data"}


@hookimpl(trylast=True)
def sealrelay_sign_message(message: bytes, identity: Identity, policy: Policy) -> bytes | None:
    if policy.sign not in ("clear", "opaque"):
        return None
    try:
        signer = Signer(
            key=identity.private_key,
            certificate=identity.certificate.x509,
            chain=tuple(cert.x509 for cert in identity.chain),
            digest=policy.digest,
        )
    except SigningError as error:
        # A key that cannot sign, or that does not match its certificate, will not get
        # better by retrying: an operator has to replace it.
        raise RejectMessage(f"the signing key of {identity.address} is unusable: {error}") from None
    return sign_message(message, signer, mode="clear" if policy.sign == "clear" else "opaque")


@hookimpl(trylast=True)
def sealrelay_encrypt_message(
    message: bytes, certificates: list[Certificate], policy: Policy
) -> Encryption | None:
    if not certificates:
        return None
    cipher = policy.cipher
    if cipher == "auto":
        cipher = choose_cipher(cert.capabilities or None for cert in certificates)
    outer, entity = mime.detach_content(message)
    recipients = [_recipient(cert) for cert in certificates]
    der = encrypt_content_buffer(entity, recipients, cipher=cipher)  # type: ignore[arg-type]
    # Each full-size buffer is dropped as soon as the next one exists: at the peak only the
    # base64 lines and the joined message (each 1.37 times the content) are alive.
    del entity
    pieces = mime.pkcs7_mime_pieces(der, _ENCRYPTED_TYPES[cipher.endswith("-gcm")])
    del der
    return Encryption(content=mime.attach_pieces(outer, pieces), cipher=cipher)


def _recipient(cert: Certificate) -> Recipient:
    # RSA-OAEP only to those who announced it: gpgsm 2.2 and older clients cannot decrypt it.
    oaep = "rsaes-oaep" in cert.capabilities
    return Recipient(cert.x509, rsa_padding="oaep" if oaep else None)


@hookimpl(trylast=True)
def sealrelay_decrypt_message(message: bytes, identities: list[Identity]) -> Decryption | None:
    try:
        der = mime.parse_pkcs7_mime(message).der
        if not identities:
            raise NoMatchingKey("no private key is known for the recipient")
        decrypted = decrypt_content(
            der, [(identity.certificate.x509, identity.private_key) for identity in identities]
        )
    except NoMatchingKey:
        raise MessageError("no-key") from None
    except DecryptionFailed:
        raise MessageError("decryption-failed") from None
    except UnsupportedAlgorithm:
        raise MessageError("unsupported-algorithm") from None
    except (MalformedMessage, SmimeError):
        raise MessageError("malformed") from None
    return Decryption(content=mime.canonicalize(decrypted.content), cipher=decrypted.cipher)


@functools.lru_cache(maxsize=256)
def _crl(der: bytes) -> x509.CertificateRevocationList:
    return x509.load_der_x509_crl(der)


@hookimpl(trylast=True)
def sealrelay_verify_signature(
    message: bytes,
    sender: str,
    trust_anchors: list[Certificate],
    revocation_lists: list[bytes],
) -> SignatureCheck | None:
    try:
        result = verify_entity(
            message,
            trust_anchors=[anchor.x509 for anchor in trust_anchors],
            crls=[_crl(der) for der in revocation_lists],
            expected_address=sender or "",
        )
    except MalformedMessage:
        return SignatureCheck(
            verdict=SignatureVerdict(status="invalid", reason="malformed", crypto="malformed"),
            content=message,
        )
    return _check(result)


@cached_by_identity(maxsize=1024, admit=lambda cert, *_: small_certificates(cert))
def _certificate(cert: x509.Certificate, capabilities: tuple[str, ...] = ()) -> Certificate:
    # Made once per certificate: a sender's mail carries the same ones again and again, and
    # re-encoding each costs more than the rest of building the result.
    der = cert.public_bytes(Encoding.DER)
    return Certificate(der=der, source="message", capabilities=capabilities)


def _check(result: VerificationResult) -> SignatureCheck:
    verdict = SignatureVerdict(
        status=result.status,
        signer=result.signer,
        reason=result.reason,
        crypto=result.crypto,
        chain=result.chain,
        address=result.address,
    )
    signer = (
        _certificate(result.signer_certificate, result.capabilities)
        if result.signer_certificate is not None
        else None
    )
    return SignatureCheck(
        verdict=verdict,
        content=result.content,
        signer_certificate=signer,
        certificates=tuple(_certificate(cert) for cert in result.certificates),
    )
