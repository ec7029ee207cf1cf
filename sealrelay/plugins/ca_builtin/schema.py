"""The CA's tables: its key pairs (sealed), what it issued and revoked, its CRLs.

``SCHEMA`` builds them version by version (``sealrelay.storage.schema``); the peewee models
below describe the newest version. Timestamps are naive UTC. Never edit a released
version: add the next one.
"""

from __future__ import annotations

from typing import Final

import peewee

from sealrelay.storage.schema import Schema


def _version_1() -> list[str]:
    return [
        "CREATE TABLE sr_ca_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE sr_ca_authorities (id {pk}, fingerprint TEXT NOT NULL UNIQUE, "
        "der {blob} NOT NULL, sealed_key {blob} NOT NULL, active BOOLEAN NOT NULL, "
        "crl_number BIGINT NOT NULL, created_at TIMESTAMP NOT NULL)",
        "CREATE TABLE sr_ca_issued (id {pk}, "
        "authority_id INTEGER NOT NULL REFERENCES sr_ca_authorities (id), "
        "serial TEXT NOT NULL UNIQUE, fingerprint TEXT NOT NULL UNIQUE, "
        "address TEXT NOT NULL, not_after TIMESTAMP NOT NULL, issued_at TIMESTAMP NOT NULL, "
        "revoked_at TIMESTAMP, reason TEXT)",
        "CREATE INDEX sr_ca_issued_address ON sr_ca_issued (address)",
        "CREATE TABLE sr_ca_crls (id {pk}, "
        "authority_id INTEGER NOT NULL REFERENCES sr_ca_authorities (id), "
        "number BIGINT NOT NULL, der {blob} NOT NULL, this_update TIMESTAMP NOT NULL, "
        "next_update TIMESTAMP NOT NULL, UNIQUE (authority_id, number))",
    ]


SCHEMA: Final = Schema(
    title="certificate authority", meta_table="sr_ca_meta", versions={1: _version_1}
)

database = peewee.DatabaseProxy()


class _Model(peewee.Model):
    class Meta:
        database = database
        legacy_table_names = False


class Authority(_Model):
    """A CA key pair and certificate; the active one issues, every one keeps its CRL."""

    id = peewee.AutoField()
    fingerprint = peewee.TextField(unique=True)
    der = peewee.BlobField()
    #: The CA's private key sealed under the master key, bound to "ca:" + fingerprint.
    sealed_key = peewee.BlobField()
    active = peewee.BooleanField()
    #: The number of the last CRL issued (RFC 5280 CRLNumber), raised in the same transaction.
    crl_number = peewee.BigIntegerField()
    created_at = peewee.DateTimeField()

    class Meta:
        table_name = "sr_ca_authorities"


class Issued(_Model):
    id = peewee.AutoField()
    authority = peewee.ForeignKeyField(Authority, column_name="authority_id")
    #: Lower-case hex, as CRLs and ``cert list`` show serials.
    serial = peewee.TextField(unique=True)
    fingerprint = peewee.TextField(unique=True)
    address = peewee.TextField()
    not_after = peewee.DateTimeField()
    issued_at = peewee.DateTimeField()
    revoked_at = peewee.DateTimeField(null=True)
    #: A name from ``issuing.REASONS``.
    reason = peewee.TextField(null=True)

    class Meta:
        table_name = "sr_ca_issued"


class Crl(_Model):
    id = peewee.AutoField()
    authority = peewee.ForeignKeyField(Authority, column_name="authority_id")
    number = peewee.BigIntegerField()
    der = peewee.BlobField()
    this_update = peewee.DateTimeField()
    next_update = peewee.DateTimeField()

    class Meta:
        table_name = "sr_ca_crls"


MODELS: Final[tuple[type[peewee.Model], ...]] = (Authority, Issued, Crl)
