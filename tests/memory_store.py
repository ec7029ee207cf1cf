"""An in-memory store plugin for tests: identities, certificates, trust anchors, CRLs and
subscribers, implementing the store hooks the way a real store would (harvested certificates
are kept and used for the next message)."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding

from sealrelay import Certificate, Identity, IssuedCertificate, Subscriber, hookimpl
from tests.pki import TestIdentity


def certificate_of(identity: TestIdentity, **kwargs: object) -> Certificate:
    return Certificate(der=identity.cert.public_bytes(Encoding.DER), trusted=True, **kwargs)  # type: ignore[arg-type]


def identity_of(test_identity: TestIdentity, address: str | None = None) -> Identity:
    return Identity(
        address=address or test_identity.address or "",
        certificate=certificate_of(test_identity),
        chain=tuple(
            Certificate(der=cert.public_bytes(Encoding.DER), trusted=True)
            for cert in test_identity.chain
        ),
        private_key=test_identity.key,
    )


class MemoryStore:
    def __init__(self) -> None:
        self.identities: dict[str, list[Identity]] = {}
        self.certificates: dict[str, list[Certificate]] = {}
        self.anchors: list[Certificate] = []
        self.crls: list[bytes] = []
        self.subscribers: set[str] = set()
        self.harvested: list[tuple[str, str]] = []
        #: Addresses given a key by provisioning (sealrelay_store_identity), in order.
        self.provisioned: list[str] = []
        #: The key pair and certificate provisioning hands out, and the CA that certificate
        #: chains to; None: this store has no key pair (or no CA) to provision with.
        self.provision_with: Identity | None = None
        self.provision_authority: Certificate | None = None

    def add_identity(self, identity: Identity) -> None:
        self.identities.setdefault(identity.address, []).append(identity)
        self.subscribers.add(identity.address)

    @hookimpl
    def sealrelay_signing_identity(self, address: str) -> Identity | None:
        return self.identities.get(address, [None])[-1]

    @hookimpl
    def sealrelay_decryption_identities(self, address: str) -> list[Identity]:
        return list(self.identities.get(address, []))

    @hookimpl
    def sealrelay_recipient_certificates(self, address: str) -> list[Certificate]:
        return list(self.certificates.get(address, []))

    @hookimpl
    def sealrelay_trust_anchors(self) -> list[Certificate]:
        return list(self.anchors)

    @hookimpl
    def sealrelay_revocation_lists(self) -> list[bytes]:
        return list(self.crls)

    @hookimpl
    def sealrelay_lookup_subscriber(self, address: str) -> Subscriber | None:
        return Subscriber(address=address) if address in self.subscribers else None

    # Provisioning, the three steps the bus runs. A stand-in: the "new" key pair and its
    # certificate are those of `provision_with`, whatever the address (the hook tests in
    # tests/test_hooks.py check the real contract: fresh keys, certificates for them).

    @hookimpl
    def sealrelay_new_key_pair(self) -> PrivateKeyTypes | None:
        return self.provision_with.private_key if self.provision_with is not None else None

    @hookimpl
    def sealrelay_issue_certificate(self, public_key: PublicKeyTypes) -> IssuedCertificate | None:
        given = self.provision_with
        if given is None or self.provision_authority is None:
            return None  # no CA here
        if public_key != given.private_key.public_key():
            return None  # not the key this store handed out: not its to certify
        return IssuedCertificate(
            certificate=given.certificate, chain=given.chain, authority=self.provision_authority
        )

    @hookimpl
    def sealrelay_store_identity(self, identity: Identity, authority: Certificate | None) -> str:
        self.provisioned.append(identity.address)
        self.add_identity(identity)
        if authority is not None and authority not in self.anchors:
            self.anchors.append(authority)
        return identity.certificate.fingerprint

    @hookimpl
    def sealrelay_harvest_certificate(self, address: str, certificate: Certificate) -> str:
        # The bus harvests only after chain, validity, revocation and address checks passed.
        trusted = Certificate(
            der=certificate.der,
            source="harvested",
            trusted=True,
            capabilities=certificate.capabilities,
        )
        self.certificates.setdefault(address, []).append(trusted)
        self.harvested.append((address, certificate.fingerprint))
        return certificate.fingerprint
