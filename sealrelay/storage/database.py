"""Opening the database a storage URL names: SQLite (WAL) or PostgreSQL, pooled.

peewee keeps one connection per thread; hooks run in worker threads, so each hook call
borrows a pooled connection for its duration (``connection()``) and gives it back, and no
connection is shared between threads.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, cast

import peewee
from playhouse.pool import (  # type: ignore[import-untyped]  # peewee ships no stubs for it
    PooledPostgresqlDatabase,
    PooledSqliteDatabase,
)

from sealrelay.storage.errors import StorageError


SQLITE_PREFIX: Final = "sqlite:///"
POSTGRES_PREFIXES: Final = ("postgresql://", "postgres://")
#: More than the bus's worker threads; a thread waits for a free one rather than failing.
MAX_CONNECTIONS: Final = 32
WAIT_SECONDS: Final = 30
STALE_SECONDS: Final = 600

_SQLITE_PRAGMAS: Final = {
    # WAL lets readers go on while one writer writes (several processes on one node).
    "journal_mode": "wal",
    "synchronous": "normal",
    "foreign_keys": 1,
    # Writers wait for each other instead of failing with "database is locked".
    "busy_timeout": 10_000,
}


def open_database(url: str) -> peewee.Database:
    """A (not yet connected) database for *url*; StorageError for an unsupported URL."""
    if url.startswith(SQLITE_PREFIX):
        sqlite = PooledSqliteDatabase(
            url[len(SQLITE_PREFIX) :],
            pragmas=_SQLITE_PRAGMAS,
            # Every transaction takes the write lock at BEGIN: two writers then queue on
            # busy_timeout instead of one failing when it upgrades a read lock.
            lock_type="IMMEDIATE",
            check_same_thread=False,
            max_connections=MAX_CONNECTIONS,
            timeout=WAIT_SECONDS,
            stale_timeout=STALE_SECONDS,
        )
        return cast(peewee.Database, sqlite)
    if url.startswith(POSTGRES_PREFIXES):
        conninfo = "postgresql://" + url.split("://", 1)[1]
        postgres = PooledPostgresqlDatabase(
            conninfo,
            prefer_psycopg3=True,
            max_connections=MAX_CONNECTIONS,
            timeout=WAIT_SECONDS,
            stale_timeout=STALE_SECONDS,
        )
        return cast(peewee.Database, postgres)
    raise StorageError(
        f"storage URL {url!r} is not supported: use sqlite:///PATH or "
        "postgresql://USER@HOST:PORT/DB in [storage] url or SEALRELAY_STORAGE_URL"
    )


def execute(db: peewee.Database, sql: str, params: tuple[Any, ...] = ()) -> Any:
    """A raw statement (the schema migrations); returns the cursor."""
    return db.execute_sql(sql, params)  # type: ignore[no-untyped-call]


def is_postgres(db: peewee.Database) -> bool:
    return isinstance(db, peewee.PostgresqlDatabase)


@contextmanager
def connection(db: peewee.Database) -> Iterator[None]:
    """A connection for this thread for the block (nested blocks share it)."""
    if isinstance(db, peewee.SqliteDatabase) and db.is_closed():
        # The directory is made on first use, not when the plugin is configured: listing
        # plugins or printing help must not create anything.
        Path(db.database).parent.mkdir(parents=True, exist_ok=True)
    try:
        context = db.connection_context()
        context.__enter__()
    except peewee.OperationalError as error:
        raise StorageError(
            f"cannot connect to the database: {str(error).strip()}; check [storage] url "
            "and that the database server is running"
        ) from error
    try:
        yield
    finally:
        context.__exit__(None, None, None)
