"""One plugin's handle on the database: opened for the configured URL, its schema brought
up to date once per process, a pooled connection lent to each thread that uses it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import peewee

from sealrelay.storage.database import connection, open_database
from sealrelay.storage.errors import StorageError
from sealrelay.storage.schema import Schema, migrate


class Storage:
    """The database of one plugin (its models are bound to *proxy*)."""

    def __init__(self, schema: Schema, proxy: peewee.DatabaseProxy) -> None:
        self.schema = schema
        self._proxy = proxy
        self._url: str | None = None
        self._db: peewee.Database | None = None
        self._ready = False
        self._lock = threading.Lock()

    def configure(self, url: str) -> None:
        """Use the database at *url* (reopened only when the URL changed)."""
        with self._lock:
            if url == self._url:
                return
            if self._db is not None:
                # Only idle connections: one still in use by another thread stays valid
                # until that thread is done with it.
                self._db.close_idle()  # type: ignore[attr-defined]
            self._db = open_database(url)
            self._proxy.initialize(self._db)
            self._url = url
            self._ready = False

    @property
    def db(self) -> peewee.Database:
        if self._db is None:
            raise StorageError(
                f"the {self.schema.title} is used before it was configured (no config given)"
            )
        return self._db

    def prepare(self) -> list[str]:
        """Create or upgrade the schema now; lines saying what was done."""
        with connection(self.db):
            lines = migrate(self.db, self.schema)
        self._ready = True
        return lines

    @contextmanager
    def session(self) -> Iterator[None]:
        """A connection for this thread; the schema is brought up to date once per process."""
        with connection(self.db):
            if not self._ready:
                with self._lock:
                    if not self._ready:
                        migrate(self.db, self.schema)
                        self._ready = True
            yield

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """A session in one transaction (on SQLite it holds the write lock from its start)."""
        with self.session(), self.db.atomic():
            yield

    def close(self) -> None:
        """Close the idle pooled connections (they are opened again when needed)."""
        if self._db is not None:
            self._db.close_idle()  # type: ignore[attr-defined]
