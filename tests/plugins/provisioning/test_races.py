"""Several provisioners and several replenishers on one database (issue 6): a pooled key is
handed out once, and the pool is never filled beyond its size, whether the contenders are
threads of one node or processes of their own (other nodes, ``serve``'s replenishers, the
command line). Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from sealrelay.core.master_key import load_master_key
from sealrelay.plugins import keypool
from sealrelay.plugins.keypool.pool import generate_sealed
from tests.cli import Operator
from tests.plugins.provisioning import workers
from tests.plugins.provisioning.conftest import Relay, ok, public_der, wait_for


SPAWN = multiprocessing.get_context("spawn")
TIMEOUT = 60


def addresses_of(certificate: x509.Certificate) -> list[str]:
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.RFC822Name)


def results_of(queue: Any, count: int) -> list[Any]:
    """What *count* worker processes reported; the first failure's traceback fails the test."""
    reports = [queue.get(timeout=TIMEOUT) for _ in range(count)]
    errors = [detail for outcome, detail in reports if outcome != "ok"]
    assert not errors, errors[0]
    return [detail for _, detail in reports]


@contextmanager
def running(processes: Sequence[BaseProcess]) -> Iterator[None]:
    """Start the processes; at the end, each must have exited by itself with status 0 (one
    still running after the timeout is terminated, and fails the test)."""
    for process in processes:
        process.start()
    try:
        yield
    finally:
        for process in processes:
            process.join(TIMEOUT)
            if process.is_alive():
                process.terminate()
                process.join(TIMEOUT)
    assert [process.exitcode for process in processes] == [0] * len(processes)


def pool_rows(relay: Relay) -> dict[str, int]:
    """Rows of the pool by state, counted in the database itself."""
    with relay.backend.raw() as db:
        rows = db.execute_sql("SELECT state, COUNT(*) FROM sr_keypool GROUP BY state").fetchall()
    return {str(state): int(count) for state, count in rows}


# -- provisioners ------------------------------------------------------------------------

THREADS = 3
PROCESSES = 2
ROUNDS = 4
CLI_RUNS = 2
EACH = 3


@pytest.mark.parametrize("keypool_settings", [{"size": 20, "threshold": 1}], indirect=True)
def test_racing_provisioners_never_hand_out_one_key_twice(
    relay: Relay, operator: Operator, config_file: Path
):
    assert relay.fill() == 20
    # One provisioning first, so that this test is about the pool (the first provisionings
    # on an empty store race on more than the pool: see the next test).
    first = relay.provision("first@example.org").certificate.fingerprint

    barrier = SPAWN.Barrier(THREADS + PROCESSES)
    queue = SPAWN.Queue()
    processes = [
        SPAWN.Process(
            target=workers.provision,
            args=(str(config_file), [f"p{n}-{i}@example.org" for i in range(EACH)], barrier, queue),
        )
        for n in range(PROCESSES)
    ]

    def in_thread(number: int) -> list[str]:
        barrier.wait(timeout=TIMEOUT)
        return [
            relay.provision(f"t{number}-{i}@example.org").certificate.fingerprint
            for i in range(EACH)
        ]

    with running(processes), ThreadPoolExecutor(THREADS + CLI_RUNS) as executor:
        # The command line, as an operator on another node runs it, at the same time.
        cli_runs = [
            executor.submit(operator.run, "identity", "provision", f"c{n}@example.org", "--json")
            for n in range(CLI_RUNS)
        ]
        threads = [executor.submit(in_thread, number) for number in range(THREADS)]
        reported = [first]
        for future in threads:
            reported += future.result(timeout=TIMEOUT)
        reported += [
            ok(future.result(timeout=TIMEOUT)).json()["fingerprint"] for future in cli_runs
        ]
        for fingerprints in results_of(queue, PROCESSES):
            reported += fingerprints

    provisioned = 1 + THREADS * EACH + PROCESSES * EACH + CLI_RUNS
    certificates = relay.issued_certificates()
    assert len(reported) == len(set(reported)) == provisioned
    assert len(certificates) == provisioned
    assert sorted(a for c in certificates for a in addresses_of(c)) == sorted(
        ["first@example.org"]
        + [f"t{n}-{i}@example.org" for n in range(THREADS) for i in range(EACH)]
        + [f"p{n}-{i}@example.org" for n in range(PROCESSES) for i in range(EACH)]
        + [f"c{n}@example.org" for n in range(CLI_RUNS)]
    )
    # Every provisioning got a key of its own ...
    assert len({public_der(c.public_key()) for c in certificates}) == provisioned
    # ... and every one of them came from the pool: one claimed row each, none generated on
    # the spot (which would hide a double hand-out behind fresh keys).
    assert pool_rows(relay) == {"claimed": provisioned, "ready": 20 - provisioned}
    status = relay.status()
    assert (status["free"], status["handed_out_last_hour"]) == (20 - provisioned, provisioned)
    assert relay.admin("ca show").data["issued"] == provisioned


@pytest.mark.parametrize("keypool_settings", [{"size": 8, "threshold": 1}], indirect=True)
def test_the_first_provisionings_on_a_new_database_may_race_too(relay: Relay):
    """Nodes set up together provision their first subscribers at once: nothing is stored yet
    (no CA certificate, no master key id), and every one of them must still succeed."""
    assert relay.fill() == 8
    barrier = threading.Barrier(4)

    def in_thread(number: int) -> str:
        barrier.wait(timeout=TIMEOUT)
        return relay.provision(f"first{number}@example.org").certificate.fingerprint

    with ThreadPoolExecutor(4) as executor:
        fingerprints = list(executor.map(in_thread, range(4), timeout=TIMEOUT))
    certificates = relay.issued_certificates()
    assert len(set(fingerprints)) == len(certificates) == 4
    assert len({public_der(c.public_key()) for c in certificates}) == 4
    assert pool_rows(relay) == {"claimed": 4, "ready": 4}


# -- replenishers ------------------------------------------------------------------------


class Monitor:
    """Watches the pool's rows while replenishers run: the most ever ready, and ready plus
    being generated (what the pool holds or has promised)."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.most_ready = 0
        self.most_held = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rows = pool_rows(self.relay)
            ready, generating = rows.get("ready", 0), rows.get("generating", 0)
            self.most_ready = max(self.most_ready, ready)
            self.most_held = max(self.most_held, ready + generating)
            self.samples += 1
            self._stop.wait(0.01)

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(TIMEOUT)


def replenish_at(barrier: threading.Barrier) -> int:
    """``KeyPool.replenish`` once the others waiting at *barrier* are there too."""
    barrier.wait(timeout=TIMEOUT)
    return keypool.pool.replenish()


def settled(relay: Relay, size: int) -> Callable[[], bool]:
    """No reservation is left and the pool holds at least *size* ready keys (more is the
    overfilling the test looks for)."""

    def check() -> bool:
        rows = pool_rows(relay)
        return rows.get("ready", 0) >= size and "generating" not in rows

    return check


@pytest.mark.parametrize("keypool_settings", [{"size": 12, "threshold": 12}], indirect=True)
def test_replenishers_running_at_once_fill_the_pool_to_exactly_its_size(
    relay: Relay, config_file: Path
):
    size = 12
    # Two replenisher services in processes of their own (as `serve` runs them), one
    # `KeyPool.replenish` in another process, and two replenisher services in threads.
    barrier = SPAWN.Barrier(5)
    queue = SPAWN.Queue()
    stop_processes = SPAWN.Event()
    stop_threads = threading.Event()
    processes = [
        SPAWN.Process(
            target=workers.replenisher, args=(str(config_file), barrier, stop_processes, queue)
        )
        for _ in range(2)
    ]
    processes.append(
        SPAWN.Process(target=workers.replenish_once, args=(str(config_file), barrier, queue))
    )

    def service() -> None:
        barrier.wait(timeout=TIMEOUT)
        keypool.replenish(relay.bus, stop_threads)

    threads = [threading.Thread(target=service) for _ in range(2)]
    with Monitor(relay) as monitor, running(processes):
        for thread in threads:
            thread.start()
        try:
            wait_for(settled(relay, size), TIMEOUT, "the pool to fill")
            assert pool_rows(relay) == {"ready": size}
            # Drained at once, then refilled by several replenishers released together.
            for round_ in range(1, ROUNDS + 1):
                with ThreadPoolExecutor(4) as executor:
                    list(executor.map(lambda _: keypool.pool.take("ec-p256"), range(size)))
                    together = threading.Barrier(4)
                    added = [executor.submit(replenish_at, together) for _ in range(4)]
                    assert sum(f.result(timeout=TIMEOUT) for f in added) <= size
                wait_for(settled(relay, size), TIMEOUT, "the pool to fill again")
                assert pool_rows(relay) == {"ready": size, "claimed": size * round_}
        finally:
            stop_threads.set()
            stop_processes.set()
            for thread in threads:
                thread.join(TIMEOUT)
        reports = results_of(queue, 3)
    assert not any(thread.is_alive() for thread in threads)
    assert monitor.samples > 10
    assert (monitor.most_ready, monitor.most_held) == (size, size)
    status = relay.status()
    assert (status["free"], status["generating"]) == (size, 0)
    # The one-shot replenisher added what it could reserve, never more than the pool lacked.
    assert 0 <= sum(r for r in reports if r is not None) <= size


@pytest.mark.parametrize("keypool_settings", [{"size": 4, "threshold": 4}], indirect=True)
def test_a_crashed_replenishers_reservation_is_given_up_when_its_lease_expires(
    relay: Relay, caplog: pytest.LogCaptureFixture
):
    # A replenisher reserves the whole pool, then dies before generating anything.
    crashed = keypool.pool.reserve(4)
    assert len(crashed) == 4
    assert pool_rows(relay) == {"generating": 4}
    # While its lease runs, the rows are its own: nobody reserves beyond the size.
    assert keypool.pool.replenish() == 0
    assert keypool.pool.reserve(4) == []
    # The lease runs out (moved into the past in the database) ...
    with relay.backend.raw() as db:
        db.execute_sql(
            f"UPDATE sr_keypool SET lease_until = {db.param} WHERE state = 'generating'",  # noqa: S608
            (dt.datetime(2000, 1, 1),),
        )
    # ... and the next replenisher gives the reservation up and fills the pool itself.
    assert keypool.pool.replenish() == 4
    assert pool_rows(relay) == {"ready": 4}
    assert relay.status()["generating"] == 0
    # The crashed one comes back late with a key: it is dropped, the pool stays at its size.
    master_key = load_master_key(relay.config)
    late = generate_sealed("ec-p256", master_key, crashed[0].binding)
    with caplog.at_level("WARNING", logger="sealrelay.plugins.keypool.pool"):
        assert keypool.pool.fill(crashed[0], late) is False
    assert "longer than its lease" in caplog.text
    assert pool_rows(relay) == {"ready": 4}
    # The keys in the pool are whole: each opens under the master key and is handed out.
    taken = [keypool.pool.take("ec-p256") for _ in range(4)]
    assert len({public_der(key) for key in taken}) == 4
    assert pool_rows(relay) == {"claimed": 4}
