"""The policy store's versioned schema (``sealrelay.storage.schema`` applies it).

Never edit a released version: add the next one.
"""

from __future__ import annotations

from typing import Final

from sealrelay.storage.schema import Schema


def _version_1() -> list[str]:
    return [
        "CREATE TABLE sr_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE sr_changes (id INTEGER PRIMARY KEY, counter BIGINT NOT NULL)",
        "INSERT INTO sr_changes (id, counter) VALUES (1, 0)",
        "CREATE TABLE sr_groups (id {pk}, name TEXT NOT NULL UNIQUE)",
        "CREATE TABLE sr_subscribers (id {pk}, address TEXT NOT NULL, "
        "lookup_key TEXT NOT NULL UNIQUE, display_name TEXT NOT NULL, "
        "enabled BOOLEAN NOT NULL, created_at TIMESTAMP NOT NULL)",
        "CREATE TABLE sr_group_members (id {pk}, "
        "subscriber_id INTEGER NOT NULL REFERENCES sr_subscribers (id) ON DELETE CASCADE, "
        "group_id INTEGER NOT NULL REFERENCES sr_groups (id) ON DELETE CASCADE, "
        "UNIQUE (subscriber_id, group_id))",
        "CREATE INDEX sr_group_members_group ON sr_group_members (group_id)",
        "CREATE TABLE sr_rules (id {pk}, sender_pattern TEXT NOT NULL, "
        "recipient_pattern TEXT NOT NULL, sign TEXT, digest TEXT, encrypt TEXT, cipher TEXT, "
        "missing_certificate TEXT, encrypt_to_sender BOOLEAN, priority INTEGER NOT NULL, "
        "created_at TIMESTAMP NOT NULL)",
        "CREATE TABLE sr_certificates (id {pk}, fingerprint TEXT NOT NULL UNIQUE, "
        "der {blob} NOT NULL, subject TEXT NOT NULL, issuer TEXT NOT NULL, "
        "subject_hash TEXT NOT NULL, issuer_hash TEXT NOT NULL, serial TEXT NOT NULL, "
        "not_before TIMESTAMP NOT NULL, not_after TIMESTAMP NOT NULL, "
        "key_usages TEXT NOT NULL, is_ca BOOLEAN NOT NULL, source TEXT NOT NULL, "
        "trusted BOOLEAN NOT NULL, trust_anchor BOOLEAN NOT NULL, "
        "capabilities TEXT NOT NULL, created_at TIMESTAMP NOT NULL)",
        "CREATE INDEX sr_certificates_subject_hash ON sr_certificates (subject_hash)",
        "CREATE INDEX sr_certificates_issuer_hash ON sr_certificates (issuer_hash)",
        "CREATE TABLE sr_certificate_addresses (id {pk}, "
        "certificate_id INTEGER NOT NULL REFERENCES sr_certificates (id) ON DELETE CASCADE, "
        "lookup_key TEXT NOT NULL, UNIQUE (certificate_id, lookup_key))",
        "CREATE INDEX sr_certificate_addresses_lookup_key ON sr_certificate_addresses (lookup_key)",
        "CREATE TABLE sr_private_keys (id {pk}, "
        "certificate_id INTEGER NOT NULL UNIQUE "
        "REFERENCES sr_certificates (id) ON DELETE CASCADE, "
        "sealed {blob} NOT NULL, created_at TIMESTAMP NOT NULL)",
        "CREATE TABLE sr_crls (id {pk}, fingerprint TEXT NOT NULL UNIQUE, "
        "ca_id INTEGER NOT NULL REFERENCES sr_certificates (id) ON DELETE CASCADE, "
        "issuer TEXT NOT NULL, issuer_hash TEXT NOT NULL, der {blob} NOT NULL, "
        "this_update TIMESTAMP NOT NULL, next_update TIMESTAMP, created_at TIMESTAMP NOT NULL)",
        "CREATE INDEX sr_crls_issuer_hash ON sr_crls (issuer_hash)",
        "CREATE TABLE sr_revoked_serials (id {pk}, "
        "crl_id INTEGER NOT NULL REFERENCES sr_crls (id) ON DELETE CASCADE, "
        "serial TEXT NOT NULL)",
        "CREATE INDEX sr_revoked_serials_serial ON sr_revoked_serials (serial)",
        "CREATE TABLE sr_audit (id {pk}, at TIMESTAMP NOT NULL, actor TEXT NOT NULL, "
        "action TEXT NOT NULL, target TEXT NOT NULL, before TEXT, after TEXT)",
    ]


def _version_2() -> list[str]:
    """Subscriber credentials for front ends, notes on rules, when capabilities were seen."""
    return [
        "ALTER TABLE sr_subscribers ADD COLUMN credentials TEXT",
        "ALTER TABLE sr_rules ADD COLUMN comment TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE sr_certificates ADD COLUMN capabilities_seen_at TIMESTAMP",
    ]


SCHEMA: Final = Schema(
    title="policy store",
    meta_table="sr_meta",
    versions={1: _version_1, 2: _version_2},
)
#: The newest version of the policy store's schema.
SCHEMA_VERSION: Final = SCHEMA.newest
