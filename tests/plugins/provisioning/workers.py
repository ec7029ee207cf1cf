"""What the other processes of the race tests run: a relay node of their own, started from
the test's config.toml (spawned, so nothing is inherited from the test process but the
arguments). Each waits at a barrier with the others so that they really run at once, and
reports what it did (or the error) on a queue."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

from sealrelay.core.bus import MessageBus
from sealrelay.core.config import load_config
from sealrelay.core.plugins import load_plugins
from sealrelay.plugins import BUILTIN_PLUGINS, keypool


def _bus(config_path: str) -> MessageBus:
    config = load_config(Path(config_path))
    return MessageBus(load_plugins(config, builtins=BUILTIN_PLUGINS, entry_points=False), config)


def provision(config_path: str, addresses: list[str], barrier: Any, results: Any) -> None:
    """Provision each address in turn, as ``identity provision`` does; report fingerprints."""
    try:
        with _bus(config_path) as bus:
            barrier.wait(timeout=60)
            fingerprints = [bus.provision(address).certificate.fingerprint for address in addresses]
        results.put(("ok", fingerprints))
    except BaseException:  # noqa: BLE001 - the test process shows it
        results.put(("error", traceback.format_exc()))


def replenish_once(config_path: str, barrier: Any, results: Any) -> None:
    """Fill the pool to its size once (``KeyPool.replenish``); report the keys added."""
    try:
        with _bus(config_path):
            barrier.wait(timeout=60)
            added = keypool.pool.replenish()
        results.put(("ok", added))
    except BaseException:  # noqa: BLE001 - the test process shows it
        results.put(("error", traceback.format_exc()))


def replenisher(config_path: str, barrier: Any, stop: Any, results: Any) -> None:
    """The replenisher service as ``serve`` runs it, until *stop* is set."""
    try:
        with _bus(config_path) as bus:
            barrier.wait(timeout=60)
            keypool.replenish(bus, stop)
        results.put(("ok", None))
    except BaseException:  # noqa: BLE001 - the test process shows it
        results.put(("error", traceback.format_exc()))
