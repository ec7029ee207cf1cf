"""The tables of the policy store as peewee models, at the newest schema version.

The models describe the schema that ``migrations.py`` builds step by step; the migrations,
not ``create_tables``, create and upgrade it, so that an old database is upgraded in place.
Timestamps are naive UTC. Models are bound to ``database`` (a proxy) when the store opens.
"""

from __future__ import annotations

import peewee


database = peewee.DatabaseProxy()


class _Model(peewee.Model):
    class Meta:
        database = database
        legacy_table_names = False


class Meta(_Model):
    """Schema version and the id of the master key that sealed the stored private keys."""

    key = peewee.TextField(primary_key=True)
    value = peewee.TextField()

    class Meta:
        table_name = "sr_meta"


class Change(_Model):
    """One row whose counter every change increments: other nodes poll it to drop caches."""

    id = peewee.IntegerField(primary_key=True)
    counter = peewee.BigIntegerField()

    class Meta:
        table_name = "sr_changes"


class Group(_Model):
    id = peewee.AutoField()
    name = peewee.TextField(unique=True)

    class Meta:
        table_name = "sr_groups"


class Subscriber(_Model):
    id = peewee.AutoField()
    #: As given (the local part's case kept); ``lookup_key`` is what lookups compare.
    address = peewee.TextField()
    lookup_key = peewee.TextField(unique=True)
    display_name = peewee.TextField(default="")
    enabled = peewee.BooleanField(default=True)
    created_at = peewee.DateTimeField()
    #: An argon2id hash for front ends that log subscribers in (HTTP, SMTP AUTH); never a
    #: password. Added in schema version 2.
    credentials = peewee.TextField(null=True)

    class Meta:
        table_name = "sr_subscribers"


class Membership(_Model):
    id = peewee.AutoField()
    subscriber = peewee.ForeignKeyField(
        Subscriber, on_delete="CASCADE", column_name="subscriber_id"
    )
    group = peewee.ForeignKeyField(Group, on_delete="CASCADE", column_name="group_id")

    class Meta:
        table_name = "sr_group_members"


class Rule(_Model):
    id = peewee.AutoField()
    sender_pattern = peewee.TextField()
    recipient_pattern = peewee.TextField()
    # Policy fields the rule sets; NULL takes the value from [policy.default].
    sign = peewee.TextField(null=True)
    digest = peewee.TextField(null=True)
    encrypt = peewee.TextField(null=True)
    cipher = peewee.TextField(null=True)
    missing_certificate = peewee.TextField(null=True)
    encrypt_to_sender = peewee.BooleanField(null=True)
    priority = peewee.IntegerField(default=0)
    created_at = peewee.DateTimeField()
    #: The operator's note, shown in ``policy explain``. Added in schema version 2.
    comment = peewee.TextField(default="")

    class Meta:
        table_name = "sr_rules"


class StoredCertificate(_Model):
    id = peewee.AutoField()
    #: SHA-256 of the DER, lower-case hex.
    fingerprint = peewee.TextField(unique=True)
    der = peewee.BlobField()
    subject = peewee.TextField()
    issuer = peewee.TextField()
    # SHA-256 of the DER-encoded names: an issuer is found by its subject without comparing
    # string renderings of names.
    subject_hash = peewee.TextField(index=True)
    issuer_hash = peewee.TextField(index=True)
    #: Serial number, lower-case hex.
    serial = peewee.TextField()
    not_before = peewee.DateTimeField()
    not_after = peewee.DateTimeField()
    #: KeyUsage bits by their RFC 5280 names, comma-separated ("" when there is no extension).
    key_usages = peewee.TextField()
    is_ca = peewee.BooleanField()
    #: ``imported``, ``harvested`` or ``issued``.
    source = peewee.TextField()
    #: Trusted by an operator (``cert import --trusted``), whatever its chain.
    trusted = peewee.BooleanField()
    trust_anchor = peewee.BooleanField()
    #: SMIMECapabilities last seen in a signature by the holder, comma-separated cipher names.
    capabilities = peewee.TextField(default="")
    created_at = peewee.DateTimeField()
    #: When ``capabilities`` was last seen. Added in schema version 2.
    capabilities_seen_at = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "sr_certificates"


class CertificateAddress(_Model):
    id = peewee.AutoField()
    certificate = peewee.ForeignKeyField(
        StoredCertificate, on_delete="CASCADE", column_name="certificate_id"
    )
    lookup_key = peewee.TextField(index=True)

    class Meta:
        table_name = "sr_certificate_addresses"


class PrivateKey(_Model):
    id = peewee.AutoField()
    certificate = peewee.ForeignKeyField(
        StoredCertificate, on_delete="CASCADE", column_name="certificate_id", unique=True
    )
    #: The key sealed under the master key (sealrelay.core.sealed_keys), bound to the
    #: certificate's fingerprint. Never the key in the clear.
    sealed = peewee.BlobField()
    created_at = peewee.DateTimeField()

    class Meta:
        table_name = "sr_private_keys"


class Crl(_Model):
    id = peewee.AutoField()
    fingerprint = peewee.TextField(unique=True)
    #: The stored CA certificate whose key signed the CRL (checked on import).
    ca = peewee.ForeignKeyField(StoredCertificate, on_delete="CASCADE", column_name="ca_id")
    issuer = peewee.TextField()
    issuer_hash = peewee.TextField(index=True)
    der = peewee.BlobField()
    this_update = peewee.DateTimeField()
    next_update = peewee.DateTimeField(null=True)
    created_at = peewee.DateTimeField()

    class Meta:
        table_name = "sr_crls"


class RevokedSerial(_Model):
    id = peewee.AutoField()
    crl = peewee.ForeignKeyField(Crl, on_delete="CASCADE", column_name="crl_id")
    serial = peewee.TextField(index=True)

    class Meta:
        table_name = "sr_revoked_serials"


class AuditEntry(_Model):
    """One administrative change: who, when, what, and the data before and after (JSON)."""

    id = peewee.AutoField()
    at = peewee.DateTimeField()
    actor = peewee.TextField()
    action = peewee.TextField()
    target = peewee.TextField()
    before = peewee.TextField(null=True)
    after = peewee.TextField(null=True)

    class Meta:
        table_name = "sr_audit"


MODELS: tuple[type[peewee.Model], ...] = (
    Meta,
    Change,
    Group,
    Subscriber,
    Membership,
    Rule,
    StoredCertificate,
    CertificateAddress,
    PrivateKey,
    Crl,
    RevokedSerial,
    AuditEntry,
)
