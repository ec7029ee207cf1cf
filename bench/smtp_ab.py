"""A/B of sealrelay trees over SMTP: git revisions (or the working tree) against each other and
the bare pass-through of bench/smtp.py, interleaved in one run, for one size and connection
count. This is how a change to the SMTP path is judged on a machine whose speed drifts between
runs: only ratios taken in one run compare.

Run: .venv/bin/python -m bench.smtp_ab [--seconds 5] [--rounds 3] [--size "10 KB"]
[--connections 8] [--crypto sign+encrypt] TREE [TREE ...]

TREE is a git revision (exported with ``git archive`` into a scratch directory) or ``.`` (the
working tree), optionally followed by config settings for the ``[smtp]`` section:
``e55be38`` ``.`` ``.,pipeline_threads=2``.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.smtp import (
    CRYPTO,
    REPO,
    SIZES,
    Result,
    _sealrelay,
    _sealrelay_config,
    _spawn,
    _wait_port,
    _with_keys,
    free_port,
    measure,
)


def _tree(spec: str, scratch: Path) -> tuple[Path, list[str]]:
    """The directory to run a TREE spec from, and its [smtp] settings."""
    revision, *settings = spec.split(",")
    if revision == ".":
        return REPO, settings
    directory = scratch / f"tree-{revision}"
    directory.mkdir()
    archive = subprocess.run(
        ["git", "archive", revision], cwd=REPO, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
    return directory, settings


def _start(
    spec: str, scratch: Path, sink_port: int, workers: int, crypto: str
) -> tuple[subprocess.Popen[bytes], int]:
    tree, settings = _tree(spec, scratch)
    port = free_port()
    directory = scratch / f"relay-{port}"
    directory.mkdir()
    config = _sealrelay_config(directory, port, sink_port, workers, crypto)
    text = config.read_text().replace("[smtp]\n", "[smtp]\n" + "".join(f"{s}\n" for s in settings))
    config.write_text(text)
    # Every command from the tree under test: its own schemas, its own code.
    with contextlib.chdir(tree):
        subprocess.run(_sealrelay(config, "init"), check=True, capture_output=True)
        if crypto != "none":
            _with_keys(config, crypto)
        process = subprocess.Popen(_sealrelay(config, "serve"), stdin=subprocess.DEVNULL)
    return process, port


def run(
    specs: Sequence[str], *, seconds: float, rounds: int, size: str, connections: int, crypto: str
) -> dict[str, list[Result]]:
    sink_port, bare_port = free_port(), free_port()
    processes = [_spawn("sink", str(sink_port))]
    results: dict[str, list[Result]] = {"bare": []}
    with tempfile.TemporaryDirectory(prefix="sealrelay-ab-") as scratch:
        try:
            _wait_port(sink_port)
            servers = [("bare", _spawn("bare", str(bare_port), str(sink_port)), bare_port)]
            processes.append(servers[0][1])
            for spec in specs:
                process, port = _start(spec, Path(scratch), sink_port, 2, crypto)
                processes.append(process)
                servers.append((spec, process, port))
                results[spec] = []
            for _, _, port in servers:
                _wait_port(port)
            time.sleep(1.0)  # every worker up
            for _ in range(rounds):
                for name, process, port in servers:
                    result = measure(
                        name, process.pid, port, size=size, connections=connections, seconds=seconds
                    )
                    print(
                        f"{name:<30} {result.per_second:8.1f} msg/s  p99 {result.p99_ms:6.2f} ms  "
                        f"CPU {result.cpu_ms_per_message:5.2f} ms/msg",
                        flush=True,
                    )
                    results[name].append(result)
        finally:
            for process in reversed(processes):
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)
    return results


def report(results: dict[str, list[Result]]) -> str:
    def median(name: str, figure: str) -> float:
        return float(statistics.median(getattr(r, figure) for r in results[name]))

    bare_rate, bare_p99 = median("bare", "per_second"), median("bare", "p99_ms")
    bare_cpu = median("bare", "cpu_ms_per_message")
    lines = [
        "| tree | msg/s | ratio | p99 ms | p99 ratio | CPU ms/msg (kernel) | extra CPU ms/msg |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in results:
        rate, p99, cpu = (
            median(name, figure) for figure in ("per_second", "p99_ms", "cpu_ms_per_message")
        )
        lines.append(
            f"| {name} | {rate:.0f} | {rate / bare_rate:.2f} | {p99:.1f} | "
            f"{p99 / bare_p99:.2f} | {cpu:.2f} ({median(name, 'system_ms_per_message'):.2f}) | "
            f"{cpu - bare_cpu:+.2f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="+", metavar="TREE")
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="medians over this many rounds")
    parser.add_argument("--size", choices=tuple(SIZES), default="10 KB")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--crypto", choices=tuple(CRYPTO), default="sign+encrypt")
    options = parser.parse_args(sys.argv[1:] if argv is None else argv)
    results = run(
        options.trees,
        seconds=options.seconds,
        rounds=options.rounds,
        size=options.size,
        connections=options.connections,
        crypto=options.crypto,
    )
    print()
    print(f"{options.size}, {options.connections} connections, crypto: {options.crypto}")
    print(report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
