"""``sealrelay serve`` runs the plugins' background services (the key-pool replenisher, the
CA's CRL refresher) in processes of their own, restarts one that dies, and stops them all."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

from tests.plugins.smtp.harness import wait_until
from tests.plugins.smtp.test_serve import server  # noqa: F401 - the fixture


POOL = {"size": 3, "threshold": 3, "key_type": "ec-p256", "check_interval": 1}


def children(relay) -> list[int]:
    pid = relay.process.pid
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def service_pids(relay) -> dict[str, int]:
    """The background services' processes, from the supervisor's latest line naming them."""
    lines = re.findall(rb"background services: ([^;\n]*)", relay.stderr)
    assert lines, f"serve named no background services; stderr: {relay.stderr.decode()}"
    found = re.findall(rb"([\w-]+) \(pid (\d+)\)", lines[-1])
    return {name.decode(): int(pid) for name, pid in found}


def free_keys(relay) -> int:
    status = json.loads(relay.run("keypool", "status", "--json").stdout)
    return int(status["free"])


def test_serve_runs_background_services_and_replaces_one_that_dies(server):  # noqa: F811
    relay = server(keypool=POOL, ca={"key_type": "ec-p256"}).start()
    services = service_pids(relay)
    assert sorted(services) == ["ca-crl", "keypool-1"]
    # Processes of their own, beside the one worker, children of the supervisor.
    assert set(services.values()) <= set(children(relay))
    assert len(relay.worker_pids()) == 1
    # The replenisher fills the pool it found empty, at the lowest CPU priority.
    wait_until(lambda: free_keys(relay) == 3, what="the replenisher to fill the pool")
    assert os.getpriority(os.PRIO_PROCESS, services["keypool-1"]) == 19

    os.kill(services["keypool-1"], signal.SIGKILL)
    relay.wait_for_output(
        f"background service keypool-1 (pid {services['keypool-1']}) ended (signal 9); "
        "restarting it".encode()
    )
    # The supervisor names the services again; one write, so the whole line comes at once.
    relay.wait_for_output(b"restarting it\nsealrelay: background services: ", timeout=10)
    replaced = service_pids(relay)
    assert replaced["keypool-1"] != services["keypool-1"]
    assert replaced["ca-crl"] == services["ca-crl"]
    # The new replenisher works: a key handed out is replaced.
    relay.run("identity", "provision", "alice@example.org")
    wait_until(lambda: free_keys(relay) == 3, what="the new replenisher to refill the pool")

    assert relay.terminate() == 0
    for pid in service_pids(relay).values():
        assert not os.path.exists(f"/proc/{pid}") or _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] == "Z"
