"""The in-memory cache that answers hooks, and how it learns of changes on other nodes.

Every change to the store increments one counter row in the same transaction. Each process
reads that counter at most once per ``POLL_SECONDS`` (on the next lookup after the interval),
and when it moved, drops everything cached. A change made on one node therefore shows on
every node sharing the database within ``POLL_SECONDS`` plus one lookup; a change made in
this process drops the cache at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, Final, TypeVar


POLL_SECONDS: Final = 0.5
#: Entries per memo before it is emptied; bounds memory with many distinct addresses.
MAX_ENTRIES: Final = 200_000

_T = TypeVar("_T")
_MISSING: Final = object()


class ChangeCache:
    """Named memos, emptied together when the change counter moves."""

    def __init__(self, read_counter: Callable[[], int], poll_seconds: float = POLL_SECONDS) -> None:
        self._read_counter = read_counter
        self._poll_seconds = poll_seconds
        self._lock = threading.Lock()
        self._memos: dict[str, dict[Hashable, Any]] = {}
        self._counter: int | None = None
        self._polled_at = float("-inf")
        # Incremented on every drop, so that a value computed from data read before a drop
        # is not stored after it.
        self._generation = 0

    def sync(self) -> None:
        """Poll the counter if the interval has passed; drop everything when it moved."""
        if time.monotonic() - self._polled_at < self._poll_seconds:
            return
        counter = self._read_counter()
        with self._lock:
            self._polled_at = time.monotonic()
            if counter != self._counter:
                self._counter = counter
                self._drop()

    def invalidate(self) -> None:
        """Drop everything now and poll again on the next lookup (after a local change)."""
        with self._lock:
            self._polled_at = float("-inf")
            self._drop()

    def _drop(self) -> None:
        self._memos = {}
        self._generation += 1

    def get(self, memo: str, key: Hashable, compute: Callable[[], _T]) -> _T:
        """The cached value of *key* in *memo*, computing (and keeping) it when missing."""
        entries = self._memos.get(memo)
        if entries is not None:
            # One dict lookup: another thread may empty the memo between two.
            found = entries.get(key, _MISSING)
            if found is not _MISSING:
                return found  # type: ignore[no-any-return]
        generation = self._generation
        value = compute()
        with self._lock:
            if generation == self._generation:
                entries = self._memos.setdefault(memo, {})
                if len(entries) >= MAX_ENTRIES:
                    entries.clear()
                entries[key] = value
        return value
