"""The policy store: answers the hooks from an in-memory cache over the database, and makes
the administrative changes (each in one transaction with its audit entry).

One store per process (the plugin module holds it). Lookups are thread-safe: the cache is
shared, each database access borrows a pooled connection for the calling thread.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import secrets
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, cast

import attrs
import peewee
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from sealrelay.core.address import Address, AddressError
from sealrelay.core.certificate import Certificate, Identity
from sealrelay.core.config import Config
from sealrelay.core.master_key import load_master_key
from sealrelay.core.policy import Policy
from sealrelay.core.sealed_keys import master_key_id, seal_private_key, unseal_private_key
from sealrelay.core.subscriber import Subscriber
from sealrelay.plugins.policy_sql import models
from sealrelay.plugins.policy_sql.cache import ChangeCache
from sealrelay.plugins.policy_sql.certificates import (
    CertificateFacts,
    Pkcs12Contents,
    crl_signed_by,
    issued_by,
    naive_utc,
    name_hash,
    read_crl,
)
from sealrelay.plugins.policy_sql.errors import StoreError
from sealrelay.plugins.policy_sql.migrations import SCHEMA
from sealrelay.plugins.policy_sql.patterns import (
    POLICY_FIELDS,
    Party,
    Pattern,
    Rule,
    RuleSet,
    normalise_group,
    rule_settings,
)
from sealrelay.storage.handle import Storage


#: Who the audit log names for changes made by provisioning and by the relay's CA.
PROVISIONING_ACTOR = "sealrelay:provisioning"
CA_ACTOR = "sealrelay:ca"
#: Longest chain of CA certificates followed from a certificate to a trust anchor.
MAX_CHAIN = 6
_MASTER_KEY_ID = "master_key_id"


def _now() -> dt.datetime:
    return naive_utc(dt.datetime.now(dt.UTC))


@attrs.frozen
class _Authority:
    """A stored CA certificate, as chain building needs it."""

    fingerprint: str
    certificate: x509.Certificate
    issuer_hash: str
    trust_anchor: bool
    trusted: bool
    valid: bool


@attrs.frozen
class _KeyEntry:
    identity: Identity
    can_sign: bool


class PolicyStore:
    """The SQL policy store of one process."""

    def __init__(self) -> None:
        self._config: Config | None = None
        self._storage = Storage(SCHEMA, models.database)
        self._cache = ChangeCache(self._read_counter)

    # -- set-up ---------------------------------------------------------------------------

    def configure(self, config: Config) -> None:
        """Use *config*'s database (reopening only when the URL changed)."""
        self._config = config
        self._storage.configure(config.storage_url)
        # The default policy fills what rules leave unset: cached policies may be stale.
        self._cache.invalidate()

    @property
    def config(self) -> Config:
        if self._config is None:
            raise StoreError("policy_sql is used before it was configured (no config given)")
        return self._config

    @property
    def db(self) -> peewee.Database:
        return self._storage.db

    def prepare(self) -> list[str]:
        """Create or upgrade the schema; check the master key against the stored keys."""
        lines = self._storage.prepare()
        with self._session():
            stored = models.Meta.get_or_none(models.Meta.key == _MASTER_KEY_ID)
            if stored is not None:
                self._check_master_key(stored.value)
        return lines

    def close(self) -> None:
        """Close the idle pooled connections (the store reconnects when used again)."""
        self._storage.close()

    def _session(self) -> AbstractContextManager[None]:
        return self._storage.session()

    def _read_counter(self) -> int:
        with self._session():
            return int(models.Change.get_by_id(1).counter)

    @contextmanager
    def _change(self) -> Iterator[None]:
        """One transaction that counts as a change: other nodes drop their caches.

        The counter is raised first: that takes its row, so changes run one at a time on
        PostgreSQL too, and what a change reads before it writes (is this certificate stored
        yet?) cannot be made stale by another node's change committing meanwhile."""
        with self._storage.transaction():
            models.Change.update(counter=models.Change.counter + 1).where(
                models.Change.id == 1
            ).execute()
            yield
        self._cache.invalidate()

    # -- policy ---------------------------------------------------------------------------

    def _rules(self) -> RuleSet:
        def load() -> RuleSet:
            with self._session():
                return RuleSet(_rule(row) for row in models.Rule.select())

        return self._cache.get("rules", None, load)

    def _groups(self, key: str) -> frozenset[str]:
        def load() -> frozenset[str]:
            with self._session():
                query = (
                    models.Group.select(models.Group.name)
                    .join(models.Membership)
                    .join(models.Subscriber)
                    .where(models.Subscriber.lookup_key == key, models.Subscriber.enabled)
                )
                return frozenset(row.name for row in query)

        return self._cache.get("groups", key, load)

    def _party(self, address: str) -> Party:
        if not address:
            return Party.of("")
        return Party.of(address, self._groups(Address.parse(address).lookup_key))

    def matching_rules(self, sender: str, recipient: str) -> tuple[Rule, ...]:
        """Every rule matching the pair, the winner first."""
        self._cache.sync()

        def match() -> tuple[Rule, ...]:
            return tuple(self._rules().matching(self._party(sender), self._party(recipient)))

        return self._cache.get("matching", (sender, recipient), match)

    def resolve(self, sender: str, recipient: str) -> Policy | None:
        """The winning rule's policy, or None (then ``[policy.default]`` applies)."""
        self._cache.sync()

        def resolve() -> Policy | None:
            rules = self.matching_rules(sender, recipient)
            return rules[0].policy(self.config.default_policy) if rules else None

        return self._cache.get("policy", (sender, recipient), resolve)

    def explain(self, sender: str, recipient: str) -> list[str]:
        lines = []
        for rank, rule in enumerate(self.matching_rules(sender, recipient)):
            verdict = "wins" if rank == 0 else "loses"
            lines.append(
                f"{rule.describe()} [{verdict}: recipient {rule.recipient.kind}, "
                f"sender {rule.sender.kind}]"
            )
        return lines

    # -- subscribers ----------------------------------------------------------------------

    def lookup_subscriber(self, address: str) -> Subscriber | None:
        self._cache.sync()
        key = Address.parse(address).lookup_key

        def load() -> Subscriber | None:
            with self._session():
                row = models.Subscriber.get_or_none(models.Subscriber.lookup_key == key)
                if row is None:
                    return None
                return _subscriber(row, self._member_of(row))

        return self._cache.get("subscriber", key, load)

    def check_credentials(self, login: str, password: str) -> str | None:
        """The subscriber's address when *password* is theirs, else None.

        Never cached, so a changed or removed password counts at once. An unknown login is
        checked against a dummy hash, so the answer takes as long either way.
        """
        try:
            key = Address.parse(login).lookup_key
        except AddressError:
            return None
        with self._session():
            row = models.Subscriber.get_or_none(models.Subscriber.lookup_key == key)
        stored = row.credentials if row is not None and row.enabled else None
        try:
            PasswordHasher().verify(stored or _dummy_hash(), password)
        except (VerificationError, InvalidHashError):
            return None
        return str(row.address) if row is not None and stored else None

    def _member_of(self, row: models.Subscriber) -> tuple[str, ...]:
        query = (
            models.Group.select(models.Group.name)
            .join(models.Membership)
            .where(models.Membership.subscriber == row.id)
            .order_by(models.Group.name)
        )
        return tuple(group.name for group in query)

    # -- certificates ---------------------------------------------------------------------

    def recipient_certificates(self, address: str) -> list[Certificate]:
        self._cache.sync()
        key = Address.parse(address).lookup_key

        def load() -> tuple[Certificate, ...]:
            with self._session():
                query = (
                    models.StoredCertificate.select()
                    .join(models.CertificateAddress)
                    .where(models.CertificateAddress.lookup_key == key)
                    .order_by(models.StoredCertificate.id)
                )
                return tuple(self._certificate(row) for row in query)

        return list(self._cache.get("certificates", key, load))

    def _certificate(self, row: models.StoredCertificate) -> Certificate:
        certificate = Certificate(
            der=bytes(row.der),
            source=row.source,
            capabilities=tuple(name for name in row.capabilities.split(",") if name),
        )
        return attrs.evolve(
            certificate,
            trusted=row.trusted or row.trust_anchor or self._chains(certificate.x509),
            revoked=row.serial in self._revoked_serials(row.issuer_hash),
        )

    def _authorities(self, subject_hash: str) -> tuple[_Authority, ...]:
        """Stored CA certificates with this subject."""

        def load() -> tuple[_Authority, ...]:
            now = _now()
            with self._session():
                query = models.StoredCertificate.select().where(
                    models.StoredCertificate.subject_hash == subject_hash,
                    models.StoredCertificate.is_ca,
                )
                return tuple(
                    _Authority(
                        fingerprint=row.fingerprint,
                        certificate=x509.load_der_x509_certificate(bytes(row.der)),
                        issuer_hash=row.issuer_hash,
                        trust_anchor=row.trust_anchor,
                        trusted=row.trusted,
                        valid=row.not_before <= now <= row.not_after,
                    )
                    for row in query
                )

        return self._cache.get("authorities", subject_hash, load)

    def _issuers(self, certificate: x509.Certificate) -> list[_Authority]:
        """The valid stored CA certificates whose key signed *certificate*."""
        return [
            authority
            for authority in self._authorities(name_hash(certificate.issuer))
            if authority.valid and issued_by(certificate, authority.certificate)
        ]

    def _chains(self, certificate: x509.Certificate) -> bool:
        """True when a path of stored, valid CA certificates leads to a trust anchor."""
        return self._path(certificate) is not None

    def _path(self, certificate: x509.Certificate) -> tuple[_Authority, ...] | None:
        """The CA certificates from the issuer of *certificate* up to a trust anchor (or an
        explicitly trusted CA), or None when there is no such path."""
        for issuer in self._issuers(certificate):
            path = self._authority_path(issuer, depth=1)
            if path is not None:
                return path
        return None

    def _authority_path(self, authority: _Authority, depth: int) -> tuple[_Authority, ...] | None:
        def load() -> tuple[_Authority, ...] | None:
            if authority.trust_anchor or authority.trusted:
                return (authority,)
            if depth >= MAX_CHAIN:
                return None
            for issuer in self._issuers(authority.certificate):
                if issuer.fingerprint == authority.fingerprint:
                    continue
                above = self._authority_path(issuer, depth + 1)
                if above is not None:
                    return (authority, *above)
            return None

        return self._cache.get("authority_path", authority.fingerprint, load)

    def _revoked_serials(self, issuer_hash: str) -> frozenset[str]:
        def load() -> frozenset[str]:
            with self._session():
                query = (
                    models.RevokedSerial.select(models.RevokedSerial.serial)
                    .join(models.Crl)
                    .where(models.Crl.issuer_hash == issuer_hash)
                )
                return frozenset(row.serial for row in query)

        return self._cache.get("revoked", issuer_hash, load)

    def trust_anchors(self) -> list[Certificate]:
        self._cache.sync()

        def load() -> tuple[Certificate, ...]:
            with self._session():
                query = models.StoredCertificate.select().where(
                    models.StoredCertificate.trust_anchor
                )
                return tuple(
                    Certificate(der=bytes(row.der), source=row.source, trusted=True)
                    for row in query
                )

        return list(self._cache.get("anchors", None, load))

    def revocation_lists(self) -> list[bytes]:
        self._cache.sync()

        def load() -> tuple[bytes, ...]:
            with self._session():
                return tuple(bytes(row.der) for row in models.Crl.select().order_by(models.Crl.id))

        return list(self._cache.get("crls", None, load))

    # -- private keys ---------------------------------------------------------------------

    def _master_key(self) -> bytes:
        return load_master_key(self.config)

    def _check_master_key(self, stored_id: str) -> None:
        configured = master_key_id(self._master_key())
        if configured != stored_id:
            raise StoreError(
                f"the private keys in the policy database are sealed under master key id "
                f"{stored_id}, but the configured master key has id {configured}: set "
                "SEALRELAY_MASTER_KEY or [security] master_key_file to the key this database "
                "was created with"
            )

    def _keys(self, key: str) -> tuple[_KeyEntry, ...]:
        """Every private key for the address, the most recently imported first."""

        def load() -> tuple[_KeyEntry, ...]:
            entries = []
            with self._session():
                query = (
                    models.PrivateKey.select(models.PrivateKey, models.StoredCertificate)
                    .join(models.StoredCertificate)
                    .join(models.CertificateAddress)
                    .where(models.CertificateAddress.lookup_key == key)
                    .order_by(models.PrivateKey.id.desc())
                )
                # The master key is read only when there is a key to open: a relay without
                # stored keys (or before `sealrelay init`) needs none.
                rows = list(query)
                master_key = self._master_key() if rows else b""
                for row in rows:
                    stored = row.certificate
                    certificate = self._certificate(stored)
                    path = self._path(certificate.x509) or ()
                    chain = tuple(
                        Certificate(der=_der(a.certificate), source="imported", trusted=True)
                        for a in path
                        if not a.trust_anchor
                    )
                    private_key = unseal_private_key(
                        master_key, bytes(row.sealed), binding=stored.fingerprint
                    )
                    identity = Identity(
                        address=key, certificate=certificate, chain=chain, private_key=private_key
                    )
                    usages = stored.key_usages.split(",") if stored.key_usages else []
                    can_sign = not usages or "digital_signature" in usages
                    entries.append(_KeyEntry(identity=identity, can_sign=can_sign))
            return tuple(entries)

        return self._cache.get("keys", key, load)

    def signing_identity(self, address: str) -> Identity | None:
        """The most recently imported key whose certificate is valid now and may sign."""
        self._cache.sync()
        now = dt.datetime.now(dt.UTC)
        for entry in self._keys(Address.parse(address).lookup_key):
            certificate = entry.identity.certificate
            if entry.can_sign and certificate.valid_at(now) and not certificate.revoked:
                return entry.identity
        return None

    def decryption_identities(self, address: str) -> list[Identity]:
        self._cache.sync()
        return [entry.identity for entry in self._keys(Address.parse(address).lookup_key)]

    # -- harvesting -----------------------------------------------------------------------

    def harvest(self, address: str, certificate: Certificate, chain: Sequence[Certificate]) -> str:
        """Keep a correspondent's certificate (and CA certificates of its chain); update the
        capabilities it announced. Idempotent: nothing changes when nothing is new."""
        facts = CertificateFacts.of(certificate.der)
        with self._session():
            existing = models.StoredCertificate.get_or_none(
                models.StoredCertificate.fingerprint == facts.fingerprint
            )
            capabilities = ",".join(certificate.capabilities)
            new_chain = [
                CertificateFacts.of(c.der)
                for c in chain
                if models.StoredCertificate.get_or_none(
                    models.StoredCertificate.fingerprint == c.fingerprint
                )
                is None
            ]
            unchanged = (
                existing is not None
                and (not capabilities or existing.capabilities == capabilities)
                and not any(c.is_ca for c in new_chain)
            )
        if unchanged:
            return facts.fingerprint
        now = _now()
        with self._change():
            row, _ = self._store_certificate(facts, source="harvested")
            if capabilities:
                row.capabilities = capabilities
                row.capabilities_seen_at = now
                row.save()
            for ca in new_chain:
                if ca.is_ca:
                    self._store_certificate(ca, source="harvested")
        return facts.fingerprint

    # -- administrative changes -----------------------------------------------------------

    def _audit(
        self, actor: str, action: str, target: str, before: Any = None, after: Any = None
    ) -> None:
        models.AuditEntry.create(
            at=_now(),
            actor=actor,
            action=action,
            target=target,
            before=None if before is None else json.dumps(before, sort_keys=True, default=str),
            after=None if after is None else json.dumps(after, sort_keys=True, default=str),
        )

    def add_subscriber(
        self,
        *,
        actor: str,
        address: str,
        groups: Sequence[str],
        display_name: str,
        password: str | None,
    ) -> dict[str, Any]:
        parsed = Address.parse(address)
        names = sorted({normalise_group(group) for group in groups})
        credentials = PasswordHasher().hash(password) if password is not None else None
        with self._change():
            if models.Subscriber.get_or_none(models.Subscriber.lookup_key == parsed.lookup_key):
                raise StoreError(
                    f"{parsed} is a subscriber already; `sealrelay subscriber list` shows it"
                )
            row = models.Subscriber.create(
                address=str(parsed),
                lookup_key=parsed.lookup_key,
                display_name=display_name,
                enabled=True,
                created_at=_now(),
                credentials=credentials,
            )
            for name in names:
                group = models.Group.get_or_none(models.Group.name == name)
                if group is None:
                    group = models.Group.create(name=name)
                models.Membership.create(subscriber=row, group=group)
            after = _subscriber_dict(row, tuple(names))
            self._audit(actor, "subscriber add", str(parsed), after=after)
        return after

    def list_subscribers(self) -> list[dict[str, Any]]:
        with self._session():
            return [
                _subscriber_dict(row, self._member_of(row))
                for row in models.Subscriber.select().order_by(models.Subscriber.lookup_key)
            ]

    def add_rule(
        self,
        *,
        actor: str,
        sender: str,
        recipient: str,
        settings: dict[str, Any],
        priority: int,
        comment: str,
    ) -> Rule:
        sender_pattern, recipient_pattern = Pattern.parse(sender), Pattern.parse(recipient)
        chosen = dict(rule_settings(settings))
        with self._change():
            row = models.Rule.create(
                sender_pattern=str(sender_pattern),
                recipient_pattern=str(recipient_pattern),
                priority=priority,
                comment=comment,
                created_at=_now(),
                **chosen,
            )
            rule = _rule(row)
            self._audit(actor, "policy add", f"rule {rule.id}", after=rule.to_dict())
        return rule

    def list_rules(self) -> list[Rule]:
        with self._session():
            return [_rule(row) for row in models.Rule.select().order_by(models.Rule.id)]

    def remove_rule(self, *, actor: str, rule_id: int) -> Rule:
        with self._change():
            row = models.Rule.get_or_none(models.Rule.id == rule_id)
            if row is None:
                raise StoreError(f"there is no rule {rule_id}; `sealrelay policy list` shows them")
            rule = _rule(row)
            row.delete_instance()
            self._audit(actor, "policy remove", f"rule {rule_id}", before=rule.to_dict())
        return rule

    def _store_certificate(
        self,
        facts: CertificateFacts,
        *,
        source: str,
        trusted: bool = False,
        trust_anchor: bool = False,
    ) -> tuple[models.StoredCertificate, str]:
        """Insert the certificate, or raise its trust flags; never lowers them. Returns the
        row and ``added``, ``updated`` or ``unchanged``. Call inside ``_change``."""
        row = models.StoredCertificate.get_or_none(
            models.StoredCertificate.fingerprint == facts.fingerprint
        )
        if row is not None:
            if (trusted and not row.trusted) or (trust_anchor and not row.trust_anchor):
                row.trusted = row.trusted or trusted
                row.trust_anchor = row.trust_anchor or trust_anchor
                row.save()
                return row, "updated"
            return row, "unchanged"
        row = models.StoredCertificate.create(
            fingerprint=facts.fingerprint,
            der=facts.der,
            subject=facts.subject,
            issuer=facts.issuer,
            subject_hash=facts.subject_hash,
            issuer_hash=facts.issuer_hash,
            serial=facts.serial,
            not_before=facts.not_before,
            not_after=facts.not_after,
            key_usages=",".join(facts.key_usages),
            is_ca=facts.is_ca,
            source=source,
            trusted=trusted,
            trust_anchor=trust_anchor,
            capabilities="",
            created_at=_now(),
        )
        for key in facts.addresses:
            models.CertificateAddress.create(certificate=row, lookup_key=key)
        return row, "added"

    def import_certificates(
        self,
        *,
        actor: str,
        certificates: Sequence[x509.Certificate],
        trust_anchor: bool,
        trusted: bool,
    ) -> list[dict[str, Any]]:
        results = []
        with self._change():
            for certificate in certificates:
                facts = CertificateFacts.of(certificate)
                if trust_anchor and not facts.is_ca:
                    raise StoreError(
                        f"{facts.subject} is not a CA certificate (no basicConstraints CA:TRUE) "
                        "and cannot be a trust anchor; import it with --trusted to trust it "
                        "on its own"
                    )
                before = self._certificate_summary(facts.fingerprint)
                row, outcome = self._store_certificate(
                    facts, source="imported", trusted=trusted, trust_anchor=trust_anchor
                )
                if outcome != "unchanged":
                    after = _certificate_dict(row, facts.addresses)
                    self._audit(actor, "cert import", facts.fingerprint, before, after)
                results.append({**_certificate_dict(row, facts.addresses), "outcome": outcome})
        return results

    def _certificate_summary(self, fingerprint: str) -> dict[str, Any] | None:
        row = models.StoredCertificate.get_or_none(
            models.StoredCertificate.fingerprint == fingerprint
        )
        if row is None:
            return None
        return _certificate_dict(row, ())

    def import_identity(
        self,
        *,
        actor: str,
        contents: Pkcs12Contents,
        origin: str,
        source: str = "imported",
        authority: x509.Certificate | None = None,
    ) -> dict[str, Any]:
        """Keep a private key with its certificate and chain; *authority*, when given, is
        kept as a trust anchor (the relay's own CA, for provisioned identities)."""
        facts = CertificateFacts.of(contents.certificate)
        if not facts.addresses:
            raise StoreError(
                f"{origin}: the certificate ({facts.subject}) carries no e-mail address, so it "
                "cannot sign or decrypt for anyone"
            )
        master_key = self._master_key()
        with self._change():
            stored_id = models.Meta.get_or_none(models.Meta.key == _MASTER_KEY_ID)
            if stored_id is None:
                models.Meta.create(key=_MASTER_KEY_ID, value=master_key_id(master_key))
            else:
                self._check_master_key(stored_id.value)
            if authority is not None:
                self._store_certificate(
                    CertificateFacts.of(authority), source=source, trust_anchor=True
                )
            row, _ = self._store_certificate(facts, source=source)
            for extra in contents.chain:
                self._store_certificate(CertificateFacts.of(extra), source=source)
            outcome = "unchanged"
            if models.PrivateKey.get_or_none(models.PrivateKey.certificate == row.id) is None:
                models.PrivateKey.create(
                    certificate=row,
                    sealed=seal_private_key(master_key, contents.key, binding=facts.fingerprint),
                    created_at=_now(),
                )
                outcome = "added"
            summary = {**_certificate_dict(row, facts.addresses), "outcome": outcome}
            if outcome == "added":
                self._audit(
                    actor,
                    "identity import" if source == "imported" else f"identity {source}",
                    facts.fingerprint,
                    after={k: v for k, v in summary.items() if k != "outcome"},
                )
        return summary

    def store_identity(self, identity: Identity, authority: Certificate | None) -> str:
        """Keep an identity the relay's CA has just certified (provisioning)."""
        contents = Pkcs12Contents(
            key=identity.private_key,
            certificate=identity.certificate.x509,
            chain=tuple(c.x509 for c in identity.chain),
        )
        summary = self.import_identity(
            actor=PROVISIONING_ACTOR,
            contents=contents,
            origin=f"the provisioned identity of {identity.address}",
            source="issued",
            authority=authority.x509 if authority is not None else None,
        )
        return str(summary["fingerprint"])

    def export_identity(self, address: str) -> Pkcs12Contents:
        """The newest private key of *address* with its certificate and its whole chain up
        to and including the trust anchor, for a mail client to import."""
        self._cache.sync()
        key = Address.parse(address).lookup_key
        entries = self._keys(key)
        if not entries:
            raise StoreError(
                f"no private key is stored for {address}; `sealrelay cert list --address "
                f"{address}` shows its certificates"
            )
        identity = entries[0].identity
        path = self._path(identity.certificate.x509) or ()
        return Pkcs12Contents(
            key=identity.private_key,
            certificate=identity.certificate.x509,
            chain=tuple(authority.certificate for authority in path),
        )

    def list_certificates(self, address: str | None) -> list[dict[str, Any]]:
        self._cache.sync()
        now = dt.datetime.now(dt.UTC)
        with self._session():
            query = models.StoredCertificate.select().order_by(models.StoredCertificate.id)
            if address is not None:
                key = Address.parse(address).lookup_key
                query = query.join(models.CertificateAddress).where(
                    models.CertificateAddress.lookup_key == key
                )
            addresses: dict[int, list[str]] = {}
            # Two queries for all rows rather than two per certificate.
            links = cast(
                Iterable[tuple[int, str]],
                models.CertificateAddress.select(
                    models.CertificateAddress.certificate, models.CertificateAddress.lookup_key
                ).tuples(),
            )
            for certificate_id, lookup_key in links:
                addresses.setdefault(certificate_id, []).append(lookup_key)
            with_keys = cast(
                Iterable[tuple[int]],
                models.PrivateKey.select(models.PrivateKey.certificate).tuples(),
            )
            keys = {certificate_id for (certificate_id,) in with_keys}
            rows = []
            for row in query:
                certificate = self._certificate(row)
                rows.append(
                    {
                        **_certificate_dict(row, tuple(addresses.get(row.id, ()))),
                        "status": _status(row, certificate, now),
                        "private_key": row.id in keys,
                    }
                )
        return rows

    def _crl_signer(self, crl: x509.CertificateRevocationList) -> models.StoredCertificate | None:
        issuer = name_hash(crl.issuer)
        with self._session():
            return next(
                (
                    row
                    for row in models.StoredCertificate.select().where(
                        models.StoredCertificate.subject_hash == issuer,
                        models.StoredCertificate.is_ca,
                    )
                    if crl_signed_by(crl, x509.load_der_x509_certificate(bytes(row.der)))
                ),
                None,
            )

    def import_crl(
        self, *, actor: str, crl: x509.CertificateRevocationList, origin: str
    ) -> dict[str, Any]:
        signer = self._crl_signer(crl)
        if signer is None:
            raise StoreError(
                f"{origin}: no stored CA certificate signed this CRL (issuer "
                f"{crl.issuer.rfc4514_string()}); import the issuing CA first with "
                "`sealrelay cert import`"
            )
        der = crl.public_bytes(Encoding.DER)
        fingerprint = Certificate(der=der).fingerprint
        summary: dict[str, Any] = {
            "fingerprint": fingerprint,
            "issuer": crl.issuer.rfc4514_string(),
            "this_update": naive_utc(crl.last_update_utc).isoformat(),
            "next_update": (
                naive_utc(crl.next_update_utc).isoformat() if crl.next_update_utc else None
            ),
            "revoked": len(crl),
        }
        with self._change():
            if models.Crl.get_or_none(models.Crl.fingerprint == fingerprint) is not None:
                return {**summary, "outcome": "unchanged"}
            row = models.Crl.create(
                fingerprint=fingerprint,
                ca=signer,
                issuer=crl.issuer.rfc4514_string(),
                issuer_hash=name_hash(crl.issuer),
                der=der,
                this_update=naive_utc(crl.last_update_utc),
                next_update=naive_utc(crl.next_update_utc) if crl.next_update_utc else None,
                created_at=_now(),
            )
            serials = [{"crl": row.id, "serial": format(r.serial_number, "x")} for r in crl]
            for start in range(0, len(serials), 500):
                models.RevokedSerial.insert_many(serials[start : start + 500]).execute()
            self._audit(actor, "crl import", fingerprint, after=summary)
        return {**summary, "outcome": "added"}

    def store_revocation_list(self, der: bytes) -> str | None:
        """Keep a CRL the relay's CA published; None when its CA is not stored here (then
        no certificate here can be on it)."""
        crl = read_crl(der, "the CRL of the relay's CA")
        if self._crl_signer(crl) is None:
            return None
        summary = self.import_crl(actor=CA_ACTOR, crl=crl, origin="the CRL of the relay's CA")
        return str(summary["fingerprint"])


def _der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(Encoding.DER)


def _rule(row: models.Rule) -> Rule:
    settings = rule_settings({name: getattr(row, name) for name in POLICY_FIELDS})
    return Rule(
        id=row.id,
        sender=Pattern.parse(row.sender_pattern),
        recipient=Pattern.parse(row.recipient_pattern),
        priority=row.priority,
        settings=settings,
        comment=row.comment,
    )


def _subscriber(row: models.Subscriber, groups: tuple[str, ...]) -> Subscriber:
    return Subscriber(
        address=row.address, display_name=row.display_name, groups=groups, enabled=row.enabled
    )


def _subscriber_dict(row: models.Subscriber, groups: tuple[str, ...]) -> dict[str, Any]:
    return {
        "address": row.address,
        "name": row.display_name,
        "groups": list(groups),
        "enabled": row.enabled,
        "has_credentials": row.credentials is not None,
    }


def _certificate_dict(row: models.StoredCertificate, addresses: tuple[str, ...]) -> dict[str, Any]:
    return {
        "fingerprint": row.fingerprint,
        "subject": row.subject,
        "issuer": row.issuer,
        "serial": row.serial,
        "addresses": list(addresses),
        "not_before": row.not_before.isoformat(),
        "not_after": row.not_after.isoformat(),
        "key_usages": [usage for usage in row.key_usages.split(",") if usage],
        "ca": row.is_ca,
        "source": row.source,
        "trust_anchor": row.trust_anchor,
        "explicitly_trusted": row.trusted,
        "capabilities": [name for name in row.capabilities.split(",") if name],
    }


def _status(row: models.StoredCertificate, certificate: Certificate, now: dt.datetime) -> str:
    """``revoked``, ``expired``, ``not-yet-valid``, ``trust-anchor``, ``valid`` (trusted and
    in its validity period) or ``untrusted``; the first that applies."""
    if certificate.revoked:
        return "revoked"
    if now > certificate.not_after:
        return "expired"
    if now < certificate.not_before:
        return "not-yet-valid"
    if row.trust_anchor:
        return "trust-anchor"
    return "valid" if certificate.trusted else "untrusted"


@functools.cache
def _dummy_hash() -> str:
    return PasswordHasher().hash(secrets.token_hex(16))
