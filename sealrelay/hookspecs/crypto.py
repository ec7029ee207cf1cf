"""Cryptography hooks: sign, encrypt, decrypt, verify. Messages are raw RFC 5322 bytes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sealrelay.hookspecs import hookspec


if TYPE_CHECKING:
    from sealrelay.core.certificate import Certificate, Identity
    from sealrelay.core.policy import Policy
    from sealrelay.core.results import Decryption, Encryption, SignatureCheck


@hookspec(firstresult=True)
def sealrelay_sign_message(message: bytes, identity: Identity, policy: Policy) -> bytes | None:
    """Sign a whole message with *identity*, clear or opaque as ``policy.sign`` says.

    Called once per group of recipients whose policy signs, when the ``sign`` stage is on,
    before encryption (sign-then-encrypt is fixed). Never called for a message that is
    already signed or encrypted. First answer wins.

    :param message: the complete message, headers and body, as received (bytes).
    :param identity: the sender's key, certificate and chain.
    :param policy: the treatment; ``policy.sign`` is ``clear`` or ``opaque``, ``policy.digest``
        the digest to use.
    :returns: the complete signed message (outer headers kept), or ``None`` when this plugin
        does not handle the key type or mode.

    Failure semantics: an exception defers the group naming the plugin. If every plugin
    returns ``None`` the group is deferred: a message is never sent unsigned against policy.
    """


@hookspec(firstresult=True)
def sealrelay_encrypt_message(
    message: bytes, certificates: list[Certificate], policy: Policy
) -> Encryption | None:
    """Encrypt a whole (possibly signed) message to every certificate given.

    Called once per group of recipients whose policy encrypts and who all have a usable
    certificate, when the ``encrypt`` stage is on. First answer wins.

    :param message: the complete message, signed already when the policy signs.
    :param certificates: one certificate per recipient of the group (plus the sender's when
        ``policy.encrypt_to_sender``), each with the holder's announced ``capabilities``.
    :param policy: the treatment; ``policy.cipher`` is a cipher name or ``auto`` (the
        strongest every recipient announced, else AES-256-CBC).
    :returns: an :class:`~sealrelay.Encryption` with the message and the cipher used, or
        ``None`` when this plugin cannot encrypt to these certificates.

    Failure semantics: an exception defers the group naming the plugin. If every plugin
    returns ``None`` the group is deferred: plaintext is never sent in its place.
    """


@hookspec(firstresult=True)
def sealrelay_decrypt_message(message: bytes, identities: list[Identity]) -> Decryption | None:
    """Decrypt an encrypted message (EnvelopedData or AuthEnvelopedData).

    Called once per encrypted layer of an inbound message, when the ``decrypt`` stage is on.
    First answer wins.

    :param message: the complete encrypted message.
    :param identities: every key the addressee has had; choose by RecipientInfo.
    :returns: a :class:`~sealrelay.Decryption` with the inner entity, or ``None`` when this
        plugin does not handle the format.

    Failure semantics: raise :class:`~sealrelay.MessageError` with a short reason code
    (``no-key``, ``decryption-failed``, ``malformed``); the message is delivered as
    received, marked with that reason, never dropped. Every failure after a key matched must
    look the same (no padding oracle).
    """


@hookspec(firstresult=True)
def sealrelay_verify_signature(
    message: bytes,
    sender: str,
    trust_anchors: list[Certificate],
    revocation_lists: list[bytes],
) -> SignatureCheck | None:
    """Verify the outermost signature of a signed message (clear or opaque).

    Called once per signed layer of an inbound message, when the ``verify`` stage is on.
    First answer wins.

    :param message: the complete signed message.
    :param sender: the From address the signer's certificate must carry.
    :param trust_anchors: the CA certificates signatures must chain to.
    :param revocation_lists: DER CRLs to check the chain against.
    :returns: a :class:`~sealrelay.SignatureCheck` with the verdict (DESIGN.md section 4
        reason codes), the signed content and the signer's certificates; or ``None`` when
        this plugin does not handle the format.

    Failure semantics: a bad signature is a verdict, not an exception. An exception marks
    the signature as not verified (naming the plugin) and the message is still delivered.
    """
