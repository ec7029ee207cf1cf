"""Identity and certificate hooks: private keys, recipient certificates, trust, harvesting."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sealrelay.hookspecs import hookspec


if TYPE_CHECKING:
    from sealrelay.core.certificate import Certificate, Identity


@hookspec(firstresult=True)
def sealrelay_signing_identity(address: str) -> Identity | None:
    """Return the private key and certificate chain that signs mail from *address*.

    Called once per outbound message whose policy signs, when the ``sign`` stage is on.
    First answer wins.

    :param address: the normalised envelope sender.
    :returns: an :class:`~sealrelay.Identity` whose certificate is currently valid, or
        ``None`` when this plugin holds no key for the address.

    Failure semantics: an exception defers the message naming the plugin. When nobody
    answers and provisioning fails too, the message is deferred with a reason telling the
    operator to import or provision a key: it is never sent unsigned against its policy.
    """


@hookspec(firstresult=True)
def sealrelay_provision_identity(address: str) -> Identity | None:
    """Give a subscriber that has no key one now (from the key pool, or generated).

    Called when a registered subscriber sends mail that must be signed and
    ``sealrelay_signing_identity`` found no key, if the ``provision`` stage is on. First
    answer wins. The implementation stores the new identity so that later calls of
    ``sealrelay_signing_identity`` find it.

    :param address: the normalised address of a registered subscriber.
    :returns: the new :class:`~sealrelay.Identity`, or ``None`` when this plugin cannot
        provision (no CA, not configured).

    Failure semantics: an exception defers the message naming the plugin.
    """


@hookspec
def sealrelay_decryption_identities(address: str) -> list[Identity]:
    """Return every private key *address* ever had, so that old mail still decrypts.

    Called once per inbound encrypted message, when the ``decrypt`` stage is on. Collect-all:
    the core passes all of them to the decryptor, which picks keys by RecipientInfo.

    :param address: the normalised recipient.
    :returns: a list of :class:`~sealrelay.Identity` (empty when this plugin has none).

    Failure semantics: an exception marks the message as not decrypted (naming the plugin);
    the message is still delivered, never dropped.
    """


@hookspec
def sealrelay_recipient_certificates(address: str) -> list[Certificate]:
    """Return the certificates known for *address*, to encrypt mail to it.

    Called once per recipient whose policy may encrypt, when the ``encrypt`` stage is on.
    Collect-all: the core merges every store's candidates and picks the best one (trusted,
    valid now, not revoked, usable for encryption, bound to the address, latest expiry).

    :param address: the normalised recipient.
    :returns: a list of :class:`~sealrelay.Certificate`; set ``trusted`` only for a
        certificate that chains to a trust anchor or was trusted by an operator, and
        ``capabilities`` to what the holder announced.

    Failure semantics: an exception defers that recipient naming the plugin.
    """


@hookspec
def sealrelay_trust_anchors() -> list[Certificate]:
    """Return the CA certificates that signatures must chain to.

    Called once per inbound signed message, when the ``verify`` stage is on. Collect-all.
    Roots carried inside messages are never trust anchors.

    :returns: a list of :class:`~sealrelay.Certificate` (empty when this plugin has none).

    Failure semantics: an exception marks the signature as not verified (naming the
    plugin); the message is still delivered.
    """


@hookspec
def sealrelay_revocation_lists() -> list[bytes]:
    """Return the certificate revocation lists (DER) to check signers against.

    Called together with ``sealrelay_trust_anchors``. Collect-all.

    :returns: a list of DER-encoded CRLs (empty when this plugin has none).

    Failure semantics: as for ``sealrelay_trust_anchors``.
    """


@hookspec
def sealrelay_harvest_certificate(
    address: str, certificate: Certificate, chain: list[Certificate]
) -> str | None:
    """Keep the certificate of a correspondent whose signed mail verified.

    Called for every inbound message whose signature is ``valid`` (chain, validity,
    revocation, EKU and address all checked), when the ``harvest`` stage is on, so that later
    mail to *address* can be encrypted. Collect-all: every store may keep it.

    :param address: the normalised From address the signature was bound to.
    :param certificate: the signer's certificate, with ``capabilities`` from its signature.
    :param chain: the other certificates the signature carried.
    :returns: the fingerprint of the stored certificate, or ``None`` when nothing was stored.

    Failure semantics: an exception is logged with the plugin name; the message is still
    delivered.
    """
