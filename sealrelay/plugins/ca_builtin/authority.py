"""The built-in certificate authority of one process: its key pairs sealed in the database,
issuing, revoking, and keeping its CRL fresh and published.

Several nodes share one CA through the database: serial numbers are random, and a CRL is
numbered and built in one transaction that holds the authority's row, so two nodes
revoking at once make two CRLs of which the later lists both.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import tempfile
import threading
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
    PublicKeyTypes,
)
from cryptography.hazmat.primitives.serialization import Encoding

from sealrelay.core.certificate import Certificate, IssuedCertificate
from sealrelay.core.config import Config
from sealrelay.core.key_types import generate_private_key, key_type_of
from sealrelay.core.master_key import load_master_key
from sealrelay.core.sealed_keys import seal_private_key, unseal_private_key
from sealrelay.plugins.ca_builtin import issuing
from sealrelay.plugins.ca_builtin.errors import CaError
from sealrelay.plugins.ca_builtin.schema import SCHEMA, Authority, Crl, Issued, database
from sealrelay.storage.handle import Storage


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _naive(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(tzinfo=None)


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=dt.UTC)


def _binding(fingerprint: str) -> str:
    return f"ca:{fingerprint}"


@attrs.frozen
class Signer:
    """An authority with its key opened, as issuing needs it."""

    id: int
    certificate: x509.Certificate = attrs.field(repr=False)
    key: CertificateIssuerPrivateKeyTypes = attrs.field(repr=False)

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(Encoding.DER)


@attrs.frozen
class PublishedCrl:
    """A CRL of one authority; ``new`` when this call issued it."""

    authority_id: int
    der: bytes
    number: int
    next_update: dt.datetime
    new: bool


class CertificateAuthority:
    """The CA of one process (the plugin module holds it)."""

    def __init__(self) -> None:
        self._config: Config | None = None
        self._storage = Storage(SCHEMA, database)
        self._signers: dict[int, Signer] = {}
        self._lock = threading.Lock()

    # -- set-up ---------------------------------------------------------------------------

    def configure(self, config: Config) -> None:
        self._config = config
        self._storage.configure(config.storage_url)

    @property
    def config(self) -> Config:
        if self._config is None:
            raise CaError("ca_builtin is used before it was configured (no config given)")
        return self._config

    def close(self) -> None:
        self._storage.close()

    def prepare(self) -> list[str]:
        """Create the schema and, the first time, the CA; publish its CRL file."""
        lines = self._storage.prepare()
        with self._storage.session():
            existing = Authority.get_or_none(Authority.active == True)  # noqa: E712 - SQL
        if existing is None:
            signer = self._create()
            lines.append(
                f"certificate authority: created {signer.certificate.subject.rfc4514_string()} "
                f"({self.config.ca.key_type}), sha256 {Certificate(der=signer.der).fingerprint}; "
                "give correspondents its certificate: `sealrelay ca export -o ca.pem`"
            )
        self.publish_files()
        return lines

    def _create(self) -> Signer:
        ca = self.config.ca
        key = generate_private_key(ca.key_type)
        name = ca.name or f"sealrelay CA {socket.gethostname()}"
        certificate = issuing.ca_certificate(key, name, _now(), ca.validity_days)  # type: ignore[arg-type]
        return self._add(certificate, key)

    def import_authority(self, certificate: x509.Certificate, key: PrivateKeyTypes) -> Signer:
        """Make an existing CA the one that issues from now on; earlier ones keep their CRLs."""
        signing_key = issuing.check_ca_certificate(certificate, key)
        if certificate.not_valid_after_utc <= dt.datetime.now(dt.UTC):
            raise CaError(f"{certificate.subject.rfc4514_string()} has expired")
        try:
            # Signing once before it is stored: a CA that cannot sign never becomes active.
            issuing.revocation_list(
                ca=certificate, ca_key=signing_key, revoked=(), number=0, now=_now(), days=1
            )
        except (ValueError, TypeError) as error:
            raise CaError(
                f"cannot sign with the CA {certificate.subject.rfc4514_string()}: {error}"
            ) from error
        return self._add(certificate, signing_key)

    def _add(self, certificate: x509.Certificate, key: PrivateKeyTypes) -> Signer:
        der = certificate.public_bytes(Encoding.DER)
        fingerprint = Certificate(der=der).fingerprint
        sealed = seal_private_key(load_master_key(self.config), key, binding=_binding(fingerprint))
        with self._storage.transaction():
            if Authority.get_or_none(Authority.fingerprint == fingerprint) is not None:
                raise CaError(f"the CA {fingerprint} is here already")
            Authority.update(active=False).execute()
            row = Authority.create(
                fingerprint=fingerprint,
                der=der,
                sealed_key=sealed,
                active=True,
                crl_number=0,
                created_at=_naive(_now()),
            )
        signer = Signer(row.id, certificate, key)  # type: ignore[arg-type]
        with self._lock:
            self._signers[row.id] = signer
        self.refresh_crl(signer.id, force=True)
        return signer

    # -- the signing keys -----------------------------------------------------------------

    def _signer(self, row: Authority) -> Signer:
        with self._lock:
            known = self._signers.get(row.id)
        if known is not None:
            return known
        key = unseal_private_key(
            load_master_key(self.config), bytes(row.sealed_key), binding=_binding(row.fingerprint)
        )
        signer = Signer(row.id, x509.load_der_x509_certificate(bytes(row.der)), key)  # type: ignore[arg-type]
        with self._lock:
            self._signers[row.id] = signer
        return signer

    def active(self) -> Signer | None:
        """The authority that issues, or None before ``sealrelay init`` made one."""
        with self._storage.session():
            row = Authority.get_or_none(Authority.active == True)  # noqa: E712 - SQL
        return None if row is None else self._signer(row)

    def _require_active(self) -> Signer:
        signer = self.active()
        if signer is None:
            raise CaError("the built-in CA does not exist yet: run `sealrelay init`")
        return signer

    def certificate(self) -> Certificate:
        """The certificate of the active authority, for correspondents to trust."""
        return Certificate(der=self._require_active().der, source="issued", trusted=True)

    # -- issuing and revoking -------------------------------------------------------------

    def issue(self, address: str, public_key: PublicKeyTypes) -> IssuedCertificate | None:
        signer = self.active()
        if signer is None:
            return None
        settings = self.config.ca
        now = _now()
        if signer.certificate.not_valid_after_utc <= now:
            raise CaError(
                f"the CA certificate {signer.certificate.subject.rfc4514_string()} has expired: "
                "import a new CA with `sealrelay ca import`"
            )
        serial = x509.random_serial_number()
        certificate = issuing.subscriber_certificate(
            ca=signer.certificate,
            ca_key=signer.key,
            address=address,
            public_key=public_key,
            serial=serial,
            now=now,
            days=settings.certificate_validity_days,
            crl_distribution_point=settings.crl_distribution_point,
        )
        issued = Certificate(
            der=certificate.public_bytes(Encoding.DER), source="issued", trusted=True
        )
        with self._storage.transaction():
            Issued.create(
                authority=signer.id,
                serial=format(serial, "x"),
                fingerprint=issued.fingerprint,
                address=address,
                not_after=_naive(certificate.not_valid_after_utc),
                issued_at=_naive(now),
            )
        return IssuedCertificate(
            certificate=issued,
            authority=Certificate(der=signer.der, source="issued", trusted=True),
        )

    def revoke(self, fingerprint: str, reason: str) -> tuple[dict[str, str], PublishedCrl]:
        """Put a certificate this CA issued on its CRL; the new CRL, to publish."""
        if reason not in issuing.REASONS:
            raise CaError(f"unknown reason {reason!r}; use one of {', '.join(issuing.REASONS)}")
        with self._storage.session():
            row = Issued.get_or_none(Issued.fingerprint == fingerprint.lower())
        if row is None:
            raise CaError(
                f"the built-in CA did not issue a certificate with fingerprint {fingerprint}; "
                "`sealrelay cert list` shows the fingerprints (a certificate from another CA "
                "is revoked by that CA)"
            )
        if row.revoked_at is None:
            with self._storage.transaction():
                Issued.update(revoked_at=_naive(_now()), reason=reason).where(
                    Issued.id == row.id, Issued.revoked_at.is_null()
                ).execute()
        info = {"fingerprint": row.fingerprint, "serial": row.serial, "address": row.address}
        authority_id = int(row.authority_id)  # type: ignore[attr-defined]
        return info, self.refresh_crl(authority_id, force=True)

    # -- CRLs -----------------------------------------------------------------------------

    def refresh_crl(self, authority_id: int, *, force: bool = False) -> PublishedCrl:
        """The authority's newest CRL; a new one when *force*, when there is none, or when
        the newest is past half its validity."""
        now = _now()
        with self._storage.session():
            latest = (
                Crl.select()
                .where(Crl.authority == authority_id)
                .order_by(Crl.number.desc())
                .first()
            )
        if latest is not None and not force and _naive(now) < _half_life(latest):
            return _published(latest, new=False)
        with self._storage.transaction():
            # Raising the number first takes the authority's row: CRLs are built one at a
            # time, each listing every revocation committed before it.
            Authority.update(crl_number=Authority.crl_number + 1).where(
                Authority.id == authority_id
            ).execute()
            row = Authority.get_by_id(authority_id)
            signer = self._signer(row)
            revoked = [
                issuing.Revocation(
                    serial=int(entry.serial, 16),
                    revoked_at=_aware(entry.revoked_at),  # type: ignore[arg-type]
                    reason=entry.reason,  # type: ignore[arg-type]
                )
                for entry in Issued.select()
                .where(Issued.authority == authority_id, Issued.revoked_at.is_null(False))
                .order_by(Issued.id)
            ]
            crl = issuing.revocation_list(
                ca=signer.certificate,
                ca_key=signer.key,
                revoked=revoked,
                number=row.crl_number,
                now=now,
                days=self.config.ca.crl_validity_days,
            )
            stored = Crl.create(
                authority=authority_id,
                number=row.crl_number,
                der=crl.public_bytes(Encoding.DER),
                this_update=_naive(now),
                next_update=_naive(crl.next_update_utc or now),
            )
            Crl.delete().where(Crl.authority == authority_id, Crl.number < stored.number).execute()
        return _published(stored, new=True)

    def _current_authorities(self) -> list[Authority]:
        """The authorities whose certificates may still be in use: their CA has not expired."""
        now = _now()
        with self._storage.session():
            rows = list(Authority.select(Authority.id, Authority.der, Authority.active))
        return [
            row
            for row in rows
            if x509.load_der_x509_certificate(bytes(row.der)).not_valid_after_utc > now
        ]

    def refresh_crls(self) -> list[PublishedCrl]:
        """Every current authority's CRL, re-issued where it is past half its validity."""
        return [self.refresh_crl(row.id) for row in self._current_authorities()]

    def publish_files(self) -> list[Path]:
        """Write every current authority's newest CRL to its file, where it changed."""
        return [self.publish_file(row.id) for row in self._current_authorities()]

    def publish_file(self, authority_id: int) -> Path:
        """Write the authority's newest CRL to its file when the file differs: the active
        authority's to ``[ca] crl_file``, an earlier one's beside it, named by its
        fingerprint (serve it where that CA's certificates point)."""
        crl = self.refresh_crl(authority_id)
        path = self.config.resolve(self.config.ca.crl_file)
        with self._storage.session():
            row = Authority.get_by_id(authority_id)
        if not row.active:
            path = path.with_name(f"{path.stem}-{row.fingerprint[:16]}{path.suffix}")
        try:
            if path.read_bytes() == crl.der:
                return path
        except OSError:
            pass
        _write_atomically(path, crl.der)
        return path

    def status(self) -> dict[str, object]:
        signer = self._require_active()
        certificate = Certificate(der=signer.der)
        with self._storage.session():
            issued = Issued.select().where(Issued.authority == signer.id).count()
            revoked = (
                Issued.select()
                .where(Issued.authority == signer.id, Issued.revoked_at.is_null(False))
                .count()
            )
        crl = self.refresh_crl(signer.id)
        return {
            "subject": certificate.subject,
            "fingerprint": certificate.fingerprint,
            "key_type": key_type_of(signer.certificate.public_key()),
            "not_before": certificate.not_before.isoformat(),
            "not_after": certificate.not_after.isoformat(),
            "issued": issued,
            "revoked": revoked,
            "crl_number": crl.number,
            "crl_next_update": crl.next_update.isoformat(),
            "crl_file": str(self.config.resolve(self.config.ca.crl_file)),
        }


def _half_life(crl: Crl) -> dt.datetime:
    this_update, next_update = crl.this_update, crl.next_update
    return this_update + (next_update - this_update) / 2


def _published(row: Crl, *, new: bool) -> PublishedCrl:
    return PublishedCrl(
        authority_id=int(row.authority_id),  # type: ignore[attr-defined]
        der=bytes(row.der),
        number=int(row.number),
        next_update=_aware(row.next_update),
        new=new,
    )


def _write_atomically(path: Path, data: bytes) -> None:
    """Readers of the file (a web server publishing it) see the old CRL or the new one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".crl-")
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp makes the file 0600; a CRL is public, for whoever serves it.
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except OSError as error:
        raise CaError(f"cannot publish the CRL at {path}: {error.strerror}") from error
