"""Versioned schemas: each plugin's tables carry their own version, upgraded in place.

A schema is a list of versions, each a list of SQL statements applied in order. ``migrate``
brings a database up to the newest version in one transaction: an empty one is created, an
older one is upgraded in place and keeps its data, a newer one is refused. It runs from
``sealrelay init`` and at start-up; nodes starting together serialise on a lock.
Statements are written once for both databases, with the few type names that differ filled
in per dialect (``{pk}``, ``{blob}``). Never edit a released version: add the next one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

import attrs
import peewee

from sealrelay.storage.database import execute, is_postgres
from sealrelay.storage.errors import SchemaError


#: Key of the schema version in a schema's meta table.
VERSION_KEY: Final = "schema_version"
#: pg_advisory_xact_lock key: "sealrel" in ASCII, so other applications' locks do not clash.
_PG_LOCK: Final = 0x7365616C72656C

_SQLITE_TYPES: Final = {"pk": "INTEGER PRIMARY KEY AUTOINCREMENT", "blob": "BLOB"}
_POSTGRES_TYPES: Final = {"pk": "SERIAL PRIMARY KEY", "blob": "BYTEA"}


@attrs.frozen(kw_only=True)
class Schema:
    """The tables one plugin keeps, version by version."""

    #: What the operator reads in ``init`` and in errors ("policy store", "key pool").
    title: str
    #: A ``(key TEXT PRIMARY KEY, value TEXT)`` table created by version 1, holding the version.
    meta_table: str
    #: Version number to a function returning its statements; numbered from 1 without gaps.
    versions: Mapping[int, Callable[[], list[str]]]

    @property
    def newest(self) -> int:
        return max(self.versions)


def _has_table(db: peewee.Database, table: str) -> bool:
    if is_postgres(db):
        # to_regclass follows search_path, so a schema other than "public" works too.
        row = execute(db, "SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    else:
        row = execute(
            db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
    return bool(row[0])


def schema_version(db: peewee.Database, schema: Schema) -> int:
    """The version of *schema* in *db*; 0 when it has none yet."""
    if not _has_table(db, schema.meta_table):
        return 0
    # db.param is the driver's placeholder ("?" or "%s"); the values are bound, not formatted.
    select = f"SELECT value FROM {schema.meta_table} WHERE key = {db.param}"  # noqa: S608
    row = execute(db, select, (VERSION_KEY,)).fetchone()
    if row is None:
        raise SchemaError(
            f"the database has a {schema.meta_table} table but no {schema.title} schema "
            "version: it was not made by sealrelay; point [storage] url at another database"
        )
    return int(row[0])


def migrate(db: peewee.Database, schema: Schema) -> list[str]:
    """Create or upgrade *schema* to its newest version; lines saying what was done."""
    types = _POSTGRES_TYPES if is_postgres(db) else _SQLITE_TYPES
    newest = schema.newest
    with db.atomic():
        if is_postgres(db):
            execute(db, "SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK,))
        found = schema_version(db, schema)
        if found > newest:
            raise SchemaError(
                f"the {schema.title} in the database has schema version {found}, newer than "
                f"this sealrelay knows ({newest}): upgrade sealrelay on this node"
            )
        if found == newest:
            return []
        for version in range(found + 1, newest + 1):
            for statement in schema.versions[version]():
                execute(db, statement.format(**types))
        table = schema.meta_table
        if found == 0:
            insert = f"INSERT INTO {table} (key, value) VALUES ({db.param}, {db.param})"  # noqa: S608
            execute(db, insert, (VERSION_KEY, str(newest)))
        else:
            update = f"UPDATE {table} SET value = {db.param} WHERE key = {db.param}"  # noqa: S608
            execute(db, update, (str(newest), VERSION_KEY))
    if found == 0:
        return [f"{schema.title}: created schema version {newest}"]
    return [f"{schema.title}: upgraded schema from version {found} to {newest}"]
