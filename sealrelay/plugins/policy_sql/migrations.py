"""The versioned schema: each version is a list of SQL statements applied in order.

``migrate`` brings any database up to ``SCHEMA_VERSION`` in one transaction: an empty one is
created, an older one is upgraded in place and keeps its data, a newer one is refused. It
runs from ``sealrelay init`` and at start-up; nodes starting together serialise on a lock.
Statements are written once for both databases, with the few type names that differ
filled in per dialect. Never edit a released version: add the next one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

import peewee

from sealrelay.plugins.policy_sql.database import execute, is_postgres
from sealrelay.plugins.policy_sql.errors import SchemaError


SCHEMA_VERSION: Final = 2
#: Key of the schema version in sr_meta.
VERSION_KEY: Final = "schema_version"
#: pg_advisory_xact_lock key: "sealrel" in ASCII, so other applications' locks do not clash.
_PG_LOCK: Final = 0x7365616C72656C

_SQLITE_TYPES: Final = {"pk": "INTEGER PRIMARY KEY AUTOINCREMENT", "blob": "BLOB"}
_POSTGRES_TYPES: Final = {"pk": "SERIAL PRIMARY KEY", "blob": "BYTEA"}


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


MIGRATIONS: Final[Mapping[int, Callable[[], list[str]]]] = {1: _version_1, 2: _version_2}


def _has_schema(db: peewee.Database) -> bool:
    if is_postgres(db):
        # to_regclass follows search_path, so a schema other than "public" works too.
        row = execute(db, "SELECT to_regclass('sr_meta') IS NOT NULL").fetchone()
    else:
        row = execute(
            db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'sr_meta'"
        ).fetchone()
    return bool(row[0])


def schema_version(db: peewee.Database) -> int:
    """The version of the schema in *db*; 0 when it has none yet."""
    if not _has_schema(db):
        return 0
    # db.param is the driver's placeholder ("?" or "%s"); the values are bound, not formatted.
    select = f"SELECT value FROM sr_meta WHERE key = {db.param}"  # noqa: S608
    row = execute(db, select, (VERSION_KEY,)).fetchone()
    if row is None:
        raise SchemaError(
            "the policy database has sealrelay tables but no schema version: it was not made "
            "by sealrelay; point [storage] url at another database"
        )
    return int(row[0])


def migrate(db: peewee.Database) -> list[str]:
    """Create or upgrade the schema to ``SCHEMA_VERSION``; lines saying what was done."""
    types = _POSTGRES_TYPES if is_postgres(db) else _SQLITE_TYPES
    with db.atomic():
        if is_postgres(db):
            execute(db, "SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK,))
        found = schema_version(db)
        if found > SCHEMA_VERSION:
            raise SchemaError(
                f"the policy database has schema version {found}, newer than this sealrelay "
                f"knows ({SCHEMA_VERSION}): upgrade sealrelay on this node"
            )
        if found == SCHEMA_VERSION:
            return []
        for version in range(found + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version]():
                execute(db, statement.format(**types))
        if found == 0:
            insert = f"INSERT INTO sr_meta (key, value) VALUES ({db.param}, {db.param})"  # noqa: S608
            execute(db, insert, (VERSION_KEY, str(SCHEMA_VERSION)))
        else:
            update = f"UPDATE sr_meta SET value = {db.param} WHERE key = {db.param}"  # noqa: S608
            execute(db, update, (str(SCHEMA_VERSION), VERSION_KEY))
    if found == 0:
        return [f"policy store: created schema version {SCHEMA_VERSION}"]
    return [f"policy store: upgraded schema from version {found} to {SCHEMA_VERSION}"]
