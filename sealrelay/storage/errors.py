"""The errors of SQL storage; each message tells the operator what to do."""

from __future__ import annotations

from sealrelay.exceptions import SealrelayError


class StorageError(SealrelayError):
    """The database cannot be used (bad URL, unreachable server, bad data)."""


class SchemaError(StorageError):
    """The database schema is newer than this sealrelay, or cannot be upgraded."""
