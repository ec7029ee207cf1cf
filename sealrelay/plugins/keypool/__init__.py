"""Built-in plugin ``keypool``: key pairs generated ahead of time, so that a new subscriber
gets a key at once (``sealrelay_new_key_pair``).

``[keypool] size`` keys of ``key_type`` are kept ready, sealed under the master key in the
database. ``serve`` runs ``generators`` replenisher processes (``sealrelay_background_services``)
at the lowest CPU priority, that wake every ``check_interval`` seconds and, when fewer than
``threshold`` keys are free, fill the pool back to ``size``. ``keypool fill`` fills it at
once on every core. An empty pool still answers: the key is generated on the spot, with a
warning in the log.
"""

from __future__ import annotations

import logging
import threading

from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from sealrelay.core.bus import MessageBus
from sealrelay.core.commands import AdminCommand
from sealrelay.core.config import Config
from sealrelay.core.service import BackgroundService
from sealrelay.hookspecs import hookimpl
from sealrelay.plugins.keypool import commands
from sealrelay.plugins.keypool.pool import KeyPool


log = logging.getLogger(__name__)

pool = KeyPool()
commands.bind(pool)


@hookimpl
def sealrelay_configure(config: Config) -> None:
    pool.configure(config)


@hookimpl
def sealrelay_prepare_state(config: Config) -> list[str]:
    pool.configure(config)
    return pool.prepare()


@hookimpl
def sealrelay_startup(config: Config) -> None:
    pool.configure(config)


@hookimpl
def sealrelay_shutdown() -> None:
    pool.close()


@hookimpl(trylast=True)
def sealrelay_new_key_pair(key_type: str) -> PrivateKeyTypes:
    return pool.take(key_type)


@hookimpl
def sealrelay_register_commands() -> list[type[AdminCommand]]:
    return list(commands.COMMANDS)


@hookimpl
def sealrelay_background_services(config: Config) -> list[BackgroundService]:
    return [
        BackgroundService(name=f"keypool-{index + 1}", run=replenish, nice=19)
        for index in range(config.keypool.generators)
    ]


def replenish(bus: MessageBus, stop: threading.Event) -> None:
    """Wake every ``check_interval`` seconds; below the threshold, fill the pool to size."""
    interval = bus.config.keypool.check_interval
    while not stop.is_set():
        if pool.below_threshold():
            added = pool.replenish(stop.is_set)
            if added:
                log.info("key pool: added %d %s key(s)", added, bus.config.keypool.key_type)
        stop.wait(interval)
