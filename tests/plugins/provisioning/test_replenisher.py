"""The pool is refilled by its replenisher after being drained, and provisioning still works
when the pool is empty (issue 6)."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from sealrelay.plugins import keypool
from tests.plugins.provisioning.conftest import ALICE, BOB, Relay, public_der, wait_for


POOL_LOGGER = "sealrelay.plugins.keypool.pool"


def free(relay: Relay) -> int:
    return int(relay.status()["free"])


def test_the_replenisher_refills_the_pool_after_it_is_drained(
    relay: Relay, caplog: pytest.LogCaptureFixture
):
    # size 4, threshold 2, check_interval 1
    assert relay.fill() == 4
    for number in range(4):
        relay.provision(f"drained{number}@example.org")
    assert relay.status()["free"] == 0
    assert relay.status()["handed_out_last_hour"] == 4

    stop = threading.Event()
    service = threading.Thread(target=keypool.replenish, args=(relay.bus, stop))
    with caplog.at_level(logging.INFO, logger="sealrelay.plugins.keypool"):
        service.start()
        try:
            wait_for(lambda: free(relay) == 4, 15, "the replenisher to refill the pool")
            # At the threshold the pool is left alone; below it, it is refilled to size.
            relay.provision("third@example.org")
            relay.provision("fourth@example.org")
            time.sleep(1.5)
            assert free(relay) == 2
            relay.provision("fifth@example.org")
            wait_for(lambda: free(relay) == 4, 15, "the replenisher to refill the pool again")
        finally:
            stop.set()
            service.join(timeout=5)
    assert not service.is_alive(), "the replenisher did not stop when told to"
    status = relay.status()
    assert (status["free"], status["generating"], status["handed_out_last_hour"]) == (4, 0, 7)
    added = [r.getMessage() for r in caplog.records if "key pool: added" in r.getMessage()]
    assert added == ["key pool: added 4 ec-p256 key(s)", "key pool: added 3 ec-p256 key(s)"]


def test_an_empty_pool_still_provisions_with_a_warning(
    relay: Relay, caplog: pytest.LogCaptureFixture
):
    assert relay.status()["free"] == 0
    with caplog.at_level(logging.WARNING, logger=POOL_LOGGER):
        identity = relay.provision(ALICE)
    [warning] = [r for r in caplog.records if r.name == POOL_LOGGER]
    assert warning.levelno == logging.WARNING
    assert "the key pool has no ec-p256 key ready: generating one now" in warning.getMessage()
    assert identity.certificate.addresses == (ALICE,)
    assert public_der(identity.private_key) == public_der(identity.certificate.x509.public_key())
    assert relay.status()["handed_out_last_hour"] == 0

    # With keys in the pool, no warning: the key comes from the pool.
    relay.fill()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=POOL_LOGGER):
        relay.provision(BOB)
    assert [r for r in caplog.records if r.name == POOL_LOGGER] == []
    assert relay.status()["handed_out_last_hour"] == 1
