"""The key pool of one process: reserving, filling and handing out pooled key pairs.

Several replenishers and several relay nodes may share one pool:

- a key is handed out once: on PostgreSQL the claim takes its row with ``FOR UPDATE SKIP
  LOCKED`` (claims running at once take different rows, none waits); on SQLite every
  transaction holds the write lock from its start;
- the pool is never overfilled: a replenisher first reserves rows (``generating``, with a
  lease) in a transaction that counts ready and reserved rows under a lock, then generates
  outside any transaction and fills its own rows. A replenisher that dies loses only its
  lease, which the next reservation gives up.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, Final, cast

import attrs
import peewee
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from sealrelay.core.config import Config
from sealrelay.core.key_types import generate_private_key
from sealrelay.core.master_key import load_master_key
from sealrelay.core.sealed_keys import seal_private_key, unseal_private_key
from sealrelay.plugins.keypool.schema import (
    CLAIMED,
    GENERATING,
    READY,
    SCHEMA,
    PoolKey,
    database,
)
from sealrelay.storage.database import execute, is_postgres
from sealrelay.storage.handle import Storage


log = logging.getLogger(__name__)

#: How long a reservation holds a row before another replenisher may take its place.
LEASE: Final = dt.timedelta(minutes=10)
#: Handed-out rows are kept this long for ``keypool status``, then deleted.
KEEP_CLAIMED: Final = dt.timedelta(days=1)
#: pg_advisory_xact_lock key for reservations: "sr-pool" in ASCII.
_PG_RESERVE_LOCK: Final = 0x73722D706F6F6C


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


@attrs.frozen
class Slot:
    """A reserved row, to fill with a key sealed under its binding."""

    id: int
    binding: str


@attrs.frozen
class SealedKey:
    sealed: bytes = attrs.field(repr=False)
    generation_us: int


def generate_sealed(key_type: str, master_key: bytes, binding: str) -> SealedKey:
    """A new key, sealed at once: the plain key never leaves this call (it may run in a
    process of its own)."""
    started = time.perf_counter()
    key = generate_private_key(key_type)
    elapsed = max(1, round((time.perf_counter() - started) * 1_000_000))
    return SealedKey(seal_private_key(master_key, key, binding=binding), elapsed)


class KeyPool:
    """The pool as one process sees it (the plugin module holds it)."""

    def __init__(self) -> None:
        self._config: Config | None = None
        self._storage = Storage(SCHEMA, database)

    def configure(self, config: Config) -> None:
        self._config = config
        self._storage.configure(config.storage_url)

    @property
    def config(self) -> Config:
        if self._config is None:
            raise RuntimeError("the key pool is used before it was configured")
        return self._config

    def prepare(self) -> list[str]:
        return self._storage.prepare()

    def close(self) -> None:
        self._storage.close()

    def master_key(self) -> bytes:
        return load_master_key(self.config)

    # -- handing out ----------------------------------------------------------------------

    def take(self, key_type: str) -> PrivateKeyTypes:
        """A key of *key_type* nobody else gets: from the pool, else generated now."""
        claimed = self._claim(key_type)
        if claimed is not None:
            binding, sealed = claimed
            return unseal_private_key(self.master_key(), sealed, binding=binding)
        log.warning(
            "the key pool has no %s key ready: generating one now, which delays this "
            "subscriber; raise [keypool] size or generators, or check that `sealrelay serve` "
            "runs its keypool replenisher",
            key_type,
        )
        return generate_private_key(key_type)

    def _claim(self, key_type: str) -> tuple[str, bytes] | None:
        with self._storage.transaction():
            db = self._storage.db
            if is_postgres(db):
                row = execute(
                    db,
                    "WITH picked AS (SELECT id, binding, sealed FROM sr_keypool "
                    "WHERE state = %s AND key_type = %s ORDER BY id LIMIT 1 "
                    "FOR UPDATE SKIP LOCKED) "
                    "UPDATE sr_keypool SET state = %s, sealed = NULL, claimed_at = %s "
                    "FROM picked WHERE sr_keypool.id = picked.id "
                    "RETURNING picked.binding, picked.sealed",
                    (READY, key_type, CLAIMED, _now()),
                ).fetchone()
                return None if row is None else (str(row[0]), bytes(row[1]))
            found = (
                PoolKey.select()
                .where(PoolKey.state == READY, PoolKey.key_type == key_type)
                .order_by(PoolKey.id)
                .first()
            )
            if found is None:
                return None
            PoolKey.update(state=CLAIMED, sealed=None, claimed_at=_now()).where(
                PoolKey.id == found.id
            ).execute()
            return str(found.binding), bytes(found.sealed)

    # -- filling --------------------------------------------------------------------------

    def ready_count(self) -> int:
        with self._storage.session():
            return int(
                PoolKey.select()
                .where(PoolKey.state == READY, PoolKey.key_type == self.config.keypool.key_type)
                .count()
            )

    def below_threshold(self) -> bool:
        return self.ready_count() < self.config.keypool.threshold

    def reserve(self, limit: int) -> list[Slot]:
        """Reserve up to *limit* rows of what the pool lacks to reach its size."""
        settings = self.config.keypool
        now = _now()
        with self._storage.transaction():
            db = self._storage.db
            if is_postgres(db):
                execute(db, "SELECT pg_advisory_xact_lock(%s)", (_PG_RESERVE_LOCK,))
            PoolKey.delete().where(
                (PoolKey.state == GENERATING) & (PoolKey.lease_until < now)
                | (PoolKey.state == CLAIMED) & (PoolKey.claimed_at < now - KEEP_CLAIMED)
                | (PoolKey.state != CLAIMED) & (PoolKey.key_type != settings.key_type)
            ).execute()
            held = PoolKey.select().where(PoolKey.state.in_((READY, GENERATING))).count()
            wanted = min(limit, settings.size - held)
            slots = []
            for _ in range(max(wanted, 0)):
                binding = f"keypool:{secrets.token_hex(16)}"
                row = PoolKey.create(
                    key_type=settings.key_type,
                    state=GENERATING,
                    binding=binding,
                    lease_until=now + LEASE,
                    created_at=now,
                )
                slots.append(Slot(int(row.id), binding))
        return slots

    def fill(self, slot: Slot, key: SealedKey) -> bool:
        """Put a generated key in its reserved row; False when the lease was lost."""
        with self._storage.transaction():
            changed = (
                PoolKey.update(
                    state=READY,
                    sealed=key.sealed,
                    lease_until=None,
                    generation_us=key.generation_us,
                    ready_at=_now(),
                )
                .where(PoolKey.id == slot.id, PoolKey.state == GENERATING)
                .execute()
            )
        if not changed:
            log.warning("a pooled key took longer than its lease to generate and was dropped")
        return bool(changed)

    def replenish(self, should_stop: Callable[[], bool] = lambda: False) -> int:
        """Fill the pool to its size, one key at a time, in this process; keys added."""
        added = 0
        master_key = self.master_key()
        key_type = self.config.keypool.key_type
        while not should_stop():
            slots = self.reserve(1)
            if not slots:
                break
            added += self.fill(slots[0], generate_sealed(key_type, master_key, slots[0].binding))
        return added

    # -- reporting ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        settings = self.config.keypool
        now = _now()
        with self._storage.session():
            counts = dict(
                cast(
                    list[tuple[str, int]],
                    PoolKey.select(PoolKey.state, peewee.fn.COUNT(PoolKey.id))
                    .where(PoolKey.key_type == settings.key_type)
                    .group_by(PoolKey.state)
                    .tuples(),
                )
            )
            recent = [
                int(row.generation_us or 0)
                for row in PoolKey.select(PoolKey.generation_us)
                .where(PoolKey.generation_us.is_null(False), PoolKey.key_type == settings.key_type)
                .order_by(PoolKey.id.desc())
                .limit(20)
            ]
            handed_out = (
                PoolKey.select()
                .where(PoolKey.state == CLAIMED, PoolKey.claimed_at >= now - dt.timedelta(hours=1))
                .count()
            )
        seconds_per_key = sum(recent) / len(recent) / 1_000_000 if recent else None
        return {
            "key_type": settings.key_type,
            "size": settings.size,
            "threshold": settings.threshold,
            "free": counts.get(READY, 0),
            "generating": counts.get(GENERATING, 0),
            "handed_out_last_hour": handed_out,
            "seconds_per_key": seconds_per_key,
            "keys_per_second": (
                round(max(settings.generators, 1) / seconds_per_key, 2) if seconds_per_key else None
            ),
        }
