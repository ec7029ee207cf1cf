"""The key pool's table: one row per key pair, from reserved to handed out.

A row is ``generating`` (reserved by a replenisher until ``lease_until``; no key yet),
``ready`` (the key sealed under the master key, bound to the row's ``binding``) or
``claimed`` (handed out: the sealed key is erased, the row stays a while for statistics).
Timestamps are naive UTC. Never edit a released version: add the next one.
"""

from __future__ import annotations

from typing import Final

import peewee

from sealrelay.storage.schema import Schema


def _version_1() -> list[str]:
    return [
        "CREATE TABLE sr_keypool_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE sr_keypool (id {pk}, key_type TEXT NOT NULL, state TEXT NOT NULL, "
        "binding TEXT NOT NULL UNIQUE, sealed {blob}, lease_until TIMESTAMP, "
        "generation_us INTEGER, created_at TIMESTAMP NOT NULL, ready_at TIMESTAMP, "
        "claimed_at TIMESTAMP)",
        "CREATE INDEX sr_keypool_state ON sr_keypool (state, key_type)",
    ]


SCHEMA: Final = Schema(title="key pool", meta_table="sr_keypool_meta", versions={1: _version_1})

GENERATING: Final = "generating"
READY: Final = "ready"
CLAIMED: Final = "claimed"

database = peewee.DatabaseProxy()


class PoolKey(peewee.Model):
    id = peewee.AutoField()
    key_type = peewee.TextField()
    state = peewee.TextField()
    #: What the sealed key is bound to ("keypool:" and a random token): a sealed key copied
    #: into another row does not open there.
    binding = peewee.TextField(unique=True)
    sealed = peewee.BlobField(null=True)
    #: Until when a replenisher holds a ``generating`` row; an expired one is given up.
    lease_until = peewee.DateTimeField(null=True)
    #: How long generating the key took, in microseconds (an EC key takes less than a
    #: millisecond), for ``keypool status``.
    generation_us = peewee.IntegerField(null=True)
    created_at = peewee.DateTimeField()
    ready_at = peewee.DateTimeField(null=True)
    claimed_at = peewee.DateTimeField(null=True)

    class Meta:
        database = database
        table_name = "sr_keypool"


MODELS: Final[tuple[type[peewee.Model], ...]] = (PoolKey,)
