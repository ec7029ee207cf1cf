"""Identity and certificate hooks: private keys, recipient certificates, trust, harvesting."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sealrelay.hookspecs import hookspec


if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

    from sealrelay.core.certificate import Certificate, Identity, IssuedCertificate


@hookspec(firstresult=True)
def sealrelay_signing_identity(address: str) -> Identity | None:
    """Return the private key and certificate chain that signs mail from *address*.

    Called once per outbound message whose policy signs, when the ``sign`` stage is on.
    First answer wins.

    :param address: the normalised envelope sender.
    :returns: an :class:`~sealrelay.Identity` whose certificate is currently valid, or
        ``None`` when this plugin holds no key for the address.

    Failure semantics: an exception defers the message naming the plugin. When nobody
    answers and provisioning is off or fails, the message is deferred with a reason telling
    the operator to import or provision a key: it is never sent unsigned against its policy.
    """


@hookspec(firstresult=True)
def sealrelay_new_key_pair(key_type: str) -> PrivateKeyTypes | None:
    """Hand out a private key that nobody has been given before, for a subscriber.

    Called when a subscriber is provisioned (``subscriber add --provision``, or a registered
    subscriber sending mail without a key under ``[keypool] provision_on_send``), when the
    ``provision`` stage is on. First answer wins. Then ``sealrelay_issue_certificate``
    certifies the key and ``sealrelay_store_identity`` keeps it.

    :param key_type: the kind of key wanted, ``[keypool] key_type`` (``rsa3072``,
        ``ec-p256``, ...; see ``sealrelay.core.key_types``).
    :returns: a private key of that kind that is never handed out again, or ``None`` when
        this plugin has none of that kind.

    Failure semantics: an exception fails the provisioning naming the plugin (the message
    that needed the key is deferred).
    """


@hookspec(firstresult=True)
def sealrelay_issue_certificate(
    address: str, public_key: PublicKeyTypes
) -> IssuedCertificate | None:
    """Certify *public_key* for *address*: an S/MIME certificate from a CA the relay runs.

    Called during provisioning, after ``sealrelay_new_key_pair``. First answer wins.

    :param address: the normalised address of the subscriber (the certificate's
        rfc822Name).
    :param public_key: the public half of the key pair handed out.
    :returns: an :class:`~sealrelay.IssuedCertificate` (the certificate, its chain and the
        authority it chains to), or ``None`` when this plugin has no CA to issue with.

    Failure semantics: an exception fails the provisioning naming the plugin; the key pair
    is not used again.
    """


@hookspec
def sealrelay_store_identity(identity: Identity, authority: Certificate | None) -> str | None:
    """Keep a provisioned identity, so that ``sealrelay_signing_identity``,
    ``sealrelay_decryption_identities`` and ``sealrelay_recipient_certificates`` find it.

    Called at the end of provisioning. Collect-all: every store may keep it; provisioning
    fails when none does, since the key would be lost.

    :param identity: the private key, its certificate and chain.
    :param authority: the CA certificate the certificate chains to, to keep as a trust
        anchor (the relay's own CA), or ``None`` when it is trusted already.
    :returns: the fingerprint of the stored certificate, or ``None`` when this plugin keeps
        no identities. The private key must be stored sealed, never in the clear.

    Failure semantics: each store is called on its own; an exception is logged naming the
    plugin and the other stores are still asked. Provisioning fails only when no store kept
    the identity.
    """


@hookspec
def sealrelay_store_revocation_list(crl: bytes) -> str | None:
    """Keep a certificate revocation list the relay's CA has just issued.

    Called when a CA plugin publishes a new CRL (``sealrelay cert revoke``, and when the
    previous one nears its nextUpdate), so that stores stop using revoked certificates at
    once. Collect-all.

    :param crl: the CRL, DER.
    :returns: the CRL's fingerprint when this plugin stored it, else ``None``.

    Failure semantics: each store is called on its own; an exception is logged naming the
    plugin, the other stores still get the CRL, and the command that published it reports
    the failed store. The CRL stays published by its CA.
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
