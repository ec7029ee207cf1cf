"""SMTP throughput and latency: ``sealrelay serve`` against a bare aiosmtpd pass-through.

Both take mail on 127.0.0.1 and hand it to the same next hop (a minimal asyncio SMTP sink in
its own process). The pass-through is what a minimal relay does: aiosmtpd in, aiosmtplib out over
pooled connections, 250 once the next hop said 250. sealrelay runs the outbound pipeline (by
default signing with RSA-2048 and encrypting to an RSA-2048 certificate), syncs the result
to disk in its spool (a worker's journal, or a file of its own for a large message), answers
250, and delivers from the spool with pooled connections. For 10 KB
and 1 MB messages over 1 and 8 client connections it reports messages/s, p50/p99 latency
(command to 250, as the client sees it), the server side's CPU per message (and the part of it
in the kernel), and sealrelay's ratios to the pass-through; with --rounds, each case is
measured that many times, interleaved, and the table shows medians.

Run: .venv/bin/python -m bench.smtp [--seconds 5] [--rounds 3] [--workers 2]
[--crypto sign+encrypt]
Client, servers and sink share this machine's cores: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import aiosmtplib
import attrs
from aiosmtpd.controller import Controller

from sealrelay.spool.smtp_client import SmtpConnection


REPO = Path(__file__).resolve().parents[1]
SIZES = {"10 KB": 10 * 1024, "1 MB": 1024 * 1024}
CONNECTIONS = (1, 8)
_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def message_of(size: int, number: int) -> bytes:
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    body = (line * (size // len(line) + 1))[:size]
    return (
        b"From: alice@example.org\r\nTo: bob@example.net\r\nSubject: bench %d\r\n"
        b"Message-ID: <bench-%d@example.org>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" % (number, number)
    ) + body


# -- the servers (each runs in its own process) ------------------------------------------


class _SinkProtocol(asyncio.Protocol):
    """The next hop both relays deliver to, as cheap as an SMTP server can be: it answers
    every command with 250 (354 to DATA) and finds the end of the data by scanning whole
    chunks. aiosmtpd reads data line by line, about 20 ms of CPU per MB on this machine, which
    would leave less of the shared cores to the relays than they use themselves at 1 MB."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.in_data = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(b"220 sink ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        replies = []
        while True:
            if self.in_data:
                # The terminator may straddle chunks: search from a little before the new data.
                end = self.buffer.find(b"\r\n.\r\n", max(0, len(self.buffer) - len(data) - 4))
                if end < 0:
                    break
                del self.buffer[: end + 5]
                self.in_data = False
                replies.append(b"250 2.0.0 Ok\r\n")
                continue
            line_end = self.buffer.find(b"\r\n")
            if line_end < 0:
                break
            verb = bytes(self.buffer[:4]).upper()
            del self.buffer[: line_end + 2]
            if verb == b"EHLO":
                replies.append(b"250-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                self.in_data = True
                # The data may begin right after the command: the empty message's terminator.
                self.buffer[:0] = b"\r\n"
                replies.append(b"354 go ahead\r\n")
            elif verb == b"QUIT":
                replies.append(b"221 bye\r\n")
                self.transport.write(b"".join(replies))
                self.transport.close()
                return
            else:
                replies.append(b"250 Ok\r\n")
        if replies:
            self.transport.write(b"".join(replies))


def _sink_forever(port: int) -> None:
    async def serve() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        server = await loop.create_server(_SinkProtocol, "127.0.0.1", port)
        async with server:
            await stop.wait()

    asyncio.run(serve())


class _PassThrough:
    """aiosmtpd in, aiosmtplib out, pooled upstream connections, 250 after the next hop's."""

    def __init__(self, next_port: int) -> None:
        self.next_port = next_port
        self.idle: list[aiosmtplib.SMTP] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:  # noqa: N802
        client = self.idle.pop() if self.idle else None
        if client is None or not client.is_connected:
            client = aiosmtplib.SMTP(
                hostname="127.0.0.1", port=self.next_port, local_hostname="localhost"
            )
            await client.connect()
        await client.sendmail(
            envelope.mail_from,  # type: ignore[attr-defined]
            envelope.rcpt_tos,  # type: ignore[attr-defined]
            envelope.original_content,  # type: ignore[attr-defined]
        )
        self.idle.append(client)
        return "250 2.0.0 Ok"


def _serve_forever(handler: object, port: int) -> None:
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        server_hostname="bench",
        data_size_limit=64 * 1024 * 1024,
    )
    controller.start()
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    while not stop:
        time.sleep(0.1)
    controller.stop()


def _spawn(*arguments: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.smtp", *arguments],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )


def _wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port} after {timeout}s")


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU time of *pid* and its children now running (sealrelay's workers): (all, of which
    in the kernel)."""
    total = system = 0.0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(child) for child in children]
    except FileNotFoundError:
        return 0.0, 0.0
    for one in pids:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICKS
        system += int(fields[12]) / _TICKS
    return total, system


# -- the client ---------------------------------------------------------------------------


async def _connection(
    port: int, size: int, deadline: float, latencies: list[float], offset: int
) -> None:
    # The relay's own SMTP client: it sends a message with a few C-level scans, where
    # aiosmtplib spent about 20 ms of CPU per MB, more than either server, on the same cores.
    client = await SmtpConnection.open(
        "127.0.0.1", port, local_hostname="localhost", timeout=60, tls=None
    )
    number = offset
    while time.monotonic() < deadline:
        number += 1
        message = message_of(size, number)
        started = time.perf_counter()
        sent = await client.send("alice@example.org", ["bob@example.net"], message, [])
        if sent.data is None or not sent.data.ok:
            raise SystemExit(f"the server refused a message: {sent}")
        latencies.append(time.perf_counter() - started)
    await client.quit()


async def _load(port: int, size: int, connections: int, seconds: float) -> list[float]:
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    await asyncio.gather(
        *(_connection(port, size, deadline, latencies, n * 1_000_000) for n in range(connections))
    )
    return latencies


@attrs.frozen
class Result:
    server: str
    size: str
    connections: int
    messages: int
    per_second: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_message: float
    #: The part of it spent in the kernel (fsync, file and socket calls, thread wake-ups).
    system_ms_per_message: float


def measure(
    name: str, pid: int, port: int, *, size: str, connections: int, seconds: float
) -> Result:
    asyncio.run(_load(port, SIZES[size], connections, 0.5))  # warm up: connections, caches
    cpu_before, system_before = _cpu_seconds(pid)
    started = time.monotonic()
    latencies = asyncio.run(_load(port, SIZES[size], connections, seconds))
    elapsed = time.monotonic() - started
    cpu_after, system_after = _cpu_seconds(pid)
    cpu, system = cpu_after - cpu_before, system_after - system_before
    latencies.sort()
    count = len(latencies)
    return Result(
        server=name,
        size=size,
        connections=connections,
        messages=count,
        per_second=count / elapsed,
        p50_ms=statistics.median(latencies) * 1000,
        p99_ms=latencies[min(count - 1, int(count * 0.99))] * 1000,
        cpu_ms_per_message=cpu / count * 1000,
        system_ms_per_message=system / count * 1000,
    )


#: What the relay does to every message: --crypto.
CRYPTO = {
    "none": ("none", "never"),
    "sign": ("clear", "never"),
    "sign+encrypt": ("clear", "always"),
}


def _sealrelay_config(
    directory: Path, port: int, sink_port: int, workers: int, crypto: str
) -> Path:
    sign_mode, encrypt = CRYPTO[crypto]
    path = directory / "config.toml"
    # No key-pool replenisher: the bench provisions no keys, and filling a new pool would
    # generate keys through the measurements, its CPU counted as the relay's.
    path.write_text(
        f'[storage]\ndata_dir = "{directory}/var"\nurl = "sqlite:///{directory}/db.sqlite"\n'
        f'[smtp]\nlisten = "127.0.0.1:{port}"\nnext_hop = "smtp://127.0.0.1:{sink_port}"\n'
        f"workers = {workers}\nmax_message_size = 67108864\n"
        f'[policy.default]\nsign = "{sign_mode}"\nencrypt = "{encrypt}"\n'
        "[keypool]\ngenerators = 0\n"
    )
    return path


def _sealrelay(config: Path, *arguments: str) -> list[str]:
    return [sys.executable, "-m", "sealrelay", "-c", str(config), *arguments]


def _self_signed(directory: Path, name: str, address: str) -> tuple[Path, Path]:
    """An RSA-2048 e-mail certificate and its key, made with openssl."""
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-keyout", str(key), "-out", str(cert)),
            *("-subj", f"/CN={name}/emailAddress={address}"),
            *("-addext", f"subjectAltName=email:{address}"),
            *("-addext", "extendedKeyUsage=emailProtection"),
            *("-addext", "keyUsage=critical,digitalSignature,keyEncipherment"),
        ],
        check=True,
        capture_output=True,
    )
    return key, cert


def _with_keys(config: Path, crypto: str) -> None:
    """Alice's key to sign with, and with sign+encrypt Bob's certificate to encrypt to."""
    directory = config.parent / "demo"
    directory.mkdir()
    key, cert = _self_signed(directory, "alice", "alice@example.org")
    p12, password = directory / "alice.p12", directory / "pass"
    password.write_text("bench\n")
    subprocess.run(
        [
            *("openssl", "pkcs12", "-export", "-inkey", str(key), "-in", str(cert)),
            *("-out", str(p12), "-passout", f"file:{password}"),
        ],
        check=True,
    )
    subprocess.run(
        _sealrelay(config, "identity", "import", str(p12), "--password-file", str(password)),
        check=True,
        capture_output=True,
    )
    if crypto == "sign+encrypt":
        _, bob = _self_signed(directory, "bob", "bob@example.net")
        subprocess.run(
            _sealrelay(config, "cert", "import", str(bob), "--trusted"),
            check=True,
            capture_output=True,
        )


def run(seconds: float, workers: int, crypto: str, rounds: int = 1) -> list[Result]:
    sink_port, bare_port, relay_port = free_port(), free_port(), free_port()
    processes = [_spawn("sink", str(sink_port))]
    results = []
    with tempfile.TemporaryDirectory(prefix="sealrelay-bench-") as scratch:
        try:
            _wait_port(sink_port)
            bare = _spawn("bare", str(bare_port), str(sink_port))
            processes.append(bare)
            config = _sealrelay_config(Path(scratch), relay_port, sink_port, workers, crypto)
            subprocess.run(_sealrelay(config, "init"), check=True, capture_output=True)
            if crypto != "none":
                _with_keys(config, crypto)
            relay = subprocess.Popen(_sealrelay(config, "serve"), stdin=subprocess.DEVNULL)
            processes.append(relay)
            _wait_port(bare_port)
            _wait_port(relay_port)
            time.sleep(1.0)  # every worker up
            for size in SIZES:
                for connections, _ in itertools.product(CONNECTIONS, range(rounds)):
                    for name, process, port in (
                        ("bare aiosmtpd", bare, bare_port),
                        ("sealrelay", relay, relay_port),
                    ):
                        result = measure(
                            name,
                            process.pid,
                            port,
                            size=size,
                            connections=connections,
                            seconds=seconds,
                        )
                        print(_line(result), flush=True)
                        results.append(result)
        finally:
            for process in reversed(processes):
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)
    return results


def _line(r: Result) -> str:
    return (
        f"{r.server:<14} {r.size:>6} {r.connections:>2} conn: {r.per_second:8.1f} msg/s  "
        f"p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms  "
        f"CPU {r.cpu_ms_per_message:6.2f} ms/msg  ({r.messages} messages)"
    )


def _median(results: Sequence[Result]) -> Result:
    """Each figure's median over the rounds of one measurement."""
    first = results[0]
    figures = {
        name: statistics.median(getattr(r, name) for r in results)
        for name in (
            "per_second",
            "p50_ms",
            "p99_ms",
            "cpu_ms_per_message",
            "system_ms_per_message",
        )
    }
    messages = sum(r.messages for r in results)
    return Result(first.server, first.size, first.connections, messages, **figures)


def report(results: Sequence[Result]) -> str:
    """The table: medians over the rounds, sealrelay's ratios to the pass-through."""
    lines = [
        "| size | conn | bare msg/s | sealrelay msg/s | ratio | bare p50/p99 ms | "
        "sealrelay p50/p99 ms | p99 ratio | bare CPU ms/msg (kernel) | "
        "sealrelay CPU ms/msg (kernel) | extra CPU ms/msg |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in SIZES:
        for connections in CONNECTIONS:
            bare, relay = (
                _median([r for r in results if (r.server, r.size, r.connections) == key])
                for key in (("bare aiosmtpd", size, connections), ("sealrelay", size, connections))
            )
            lines.append(
                f"| {size} | {connections} | {bare.per_second:.0f} | {relay.per_second:.0f} | "
                f"{relay.per_second / bare.per_second:.2f} | "
                f"{bare.p50_ms:.1f} / {bare.p99_ms:.1f} | "
                f"{relay.p50_ms:.1f} / {relay.p99_ms:.1f} | {relay.p99_ms / bare.p99_ms:.2f} | "
                f"{bare.cpu_ms_per_message:.2f} ({bare.system_ms_per_message:.2f}) | "
                f"{relay.cpu_ms_per_message:.2f} ({relay.system_ms_per_message:.2f}) | "
                f"{relay.cpu_ms_per_message - bare.cpu_ms_per_message:+.2f} |"
            )
    return "\n".join(lines)


def _crypto_worker(size: int, seconds: float) -> int:
    """Sign and encrypt as many messages as fit in *seconds*, in this process alone."""
    from bench.smime import POLICY, Parties, message_of  # noqa: PLC0415 - only in workers
    from sealrelay.plugins import crypto_smime  # noqa: PLC0415

    parties = Parties.create()
    message, recipients = message_of(size), [parties.bob.certificate]
    count, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        signed = crypto_smime.sealrelay_sign_message(message, parties.alice, POLICY)
        assert signed is not None
        crypto_smime.sealrelay_encrypt_message(signed, recipients, POLICY)
        count += 1
    return count


def crypto_limit(seconds: float) -> str:
    """The sign+encrypt rate on every core with no SMTP at all: how far the relay is from the
    cryptography's own limit."""
    cores = os.cpu_count() or 1
    lines = []
    with multiprocessing.get_context("spawn").Pool(cores) as pool:
        for label, size in SIZES.items():
            counts = pool.starmap(_crypto_worker, [(size, seconds)] * cores)
            lines.append(f"{label}: {sum(counts) / seconds:.0f} msg/s")
    return f"raw sign+encrypt on {cores} cores, no SMTP: " + ", ".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["sink"]:
        _sink_forever(int(arguments[1]))
        return 0
    if arguments[:1] == ["bare"]:
        _serve_forever(_PassThrough(int(arguments[2])), int(arguments[1]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--workers", type=int, default=2, help="sealrelay worker processes")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="interleaved measurements of each case; the table shows their medians",
    )
    parser.add_argument(
        "--crypto",
        choices=tuple(CRYPTO),
        default="sign+encrypt",
        help="what sealrelay does to every message (RSA-2048 keys; default sign+encrypt)",
    )
    options = parser.parse_args(arguments)
    results = run(options.seconds, options.workers, options.crypto, options.rounds)
    print()
    print(f"sealrelay: {options.workers} workers, crypto: {options.crypto}, synced spool")
    print(report(results))
    print(crypto_limit(options.seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
