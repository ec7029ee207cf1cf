"""The errors of the SQL policy store; each message tells the operator what to do."""

from __future__ import annotations

from sealrelay.storage.errors import StorageError


class StoreError(StorageError):
    """The policy store cannot do what was asked (bad URL, unreachable database, bad data)."""


class PatternError(StoreError):
    """A policy rule's sender or recipient pattern is not one of the allowed forms."""
