"""Provisioning a subscriber with a warm and with an empty key pool, and the replenish rate.

    .venv/bin/python bench/keypool.py [--key-type rsa3072] [--warm N] [--empty N]
                                      [--postgres URL]

Provisioning is what ``subscriber add --provision`` and provisioning on send run:
``MessageBus.provision`` takes a key pair (``sealrelay_new_key_pair``, the ``keypool``
plugin), has the built-in CA certify it and policy_sql store it, sealed. With a warm pool
the key comes from the pool; with an empty one it is generated on the spot. The replenish
rate is keys per second put into the pool by one replenisher (as ``serve`` runs it) and by
``keypool fill`` on every core. The database is SQLite in a temporary directory, or
PostgreSQL when a URL is given (or SEALRELAY_TEST_POSTGRES_URL is set).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

from sealrelay.core.bus import MessageBus
from sealrelay.core.commands import CommandContext, CommandRegistry
from sealrelay.core.config import Config
from sealrelay.core.key_types import KEY_TYPES
from sealrelay.core.plugins import LoadedPlugins
from sealrelay.plugins import keypool
from sealrelay.testing import load_test_plugins, make_config


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def provision_times(bus: MessageBus, count: int, prefix: str) -> list[float]:
    times = []
    for number in range(count):
        started = time.perf_counter()
        bus.provision(f"{prefix}{number}@example.org")
        times.append(time.perf_counter() - started)
    return times


def command(plugins: LoadedPlugins, config: Config, name: str, **params: object) -> object:
    context = CommandContext(config=config, plugins=plugins, actor="bench")
    return CommandRegistry.from_plugins(plugins).execute(name, params, context).data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--key-type", default="rsa3072", choices=KEY_TYPES)
    parser.add_argument("--warm", type=int, default=100, help="provisionings from a warm pool")
    parser.add_argument("--empty", type=int, default=20, help="provisionings from an empty pool")
    parser.add_argument("--postgres", default=os.environ.get("SEALRELAY_TEST_POSTGRES_URL"))
    arguments = parser.parse_args()
    # The empty-pool path warns once per key by design; the table is what this prints.
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as directory:
        storage = {"url": arguments.postgres} if arguments.postgres else {}
        config = make_config(
            Path(directory),
            {
                "storage": storage,
                "keypool": {
                    "size": arguments.warm,
                    "threshold": 0,
                    "key_type": arguments.key_type,
                },
                "ca": {"key_type": "rsa3072"},
            },
        )
        plugins = load_test_plugins(config)
        command(plugins, config, "init")
        if arguments.postgres:
            print("PostgreSQL: the bench's tables are left in the database named by the URL")

        started = time.perf_counter()
        keypool.pool.configure(config)
        one = keypool.pool.replenish(lambda: keypool.pool.ready_count() >= 10)
        one_rate = one / (time.perf_counter() - started)

        started = time.perf_counter()
        filled = command(plugins, config, "keypool fill")
        all_rate = filled["added"] / (time.perf_counter() - started)  # type: ignore[index]

        with MessageBus(plugins, config) as bus:
            warm = provision_times(bus, arguments.warm, "warm")
            empty = provision_times(bus, arguments.empty, "empty")

    cores = os.cpu_count() or 1
    database = "PostgreSQL" if arguments.postgres else "SQLite"
    print(
        f"\nkey pool, {arguments.key_type} subscriber keys, RSA-3072 CA, {database}, {cores} cores"
    )
    print(f"{'provisioning':<28}{'n':>6}{'median ms':>12}{'p99 ms':>10}")
    for name, samples in (("warm pool", warm), ("empty pool (generated now)", empty)):
        print(
            f"{name:<28}{len(samples):>6}{statistics.median(samples) * 1000:>12.1f}"
            f"{percentile(samples, 0.99) * 1000:>10.1f}"
        )
    ratio = statistics.median(empty) / statistics.median(warm)
    print(f"empty / warm (median): {ratio:.1f}x")
    print(f"\n{'replenishing':<28}{'keys/s':>10}")
    print(f"{'one replenisher':<28}{one_rate:>10.2f}")
    print(f"{f'keypool fill ({cores} processes)':<28}{all_rate:>10.2f}")
    target = percentile(warm, 0.99) < 0.050 and ratio >= 10
    print(f"\ntarget (warm p99 < 50 ms, empty >= 10x warm): {'met' if target else 'NOT met'}")


if __name__ == "__main__":
    main()
