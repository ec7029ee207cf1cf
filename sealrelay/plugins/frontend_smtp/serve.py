"""``sealrelay serve``: a supervisor, several event-loop worker processes, and a process for
each background service.

Each worker opens its own bus and runs every front end the plugins create (the SMTP listener
shares the port with SO_REUSEPORT, the deliverer shares the spool through file locks). Each
background service the plugins contribute (the key-pool replenisher, the CRL refresher) runs
in a process of its own, away from the event loops and the message workers. The supervisor
replaces a process that dies and, on SIGTERM or SIGINT, asks every one to stop (stop
accepting, finish what is in flight) and waits for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Final

from sealrelay.core.bus import MessageBus
from sealrelay.core.config import Config, split_listen
from sealrelay.core.frontend import Frontend
from sealrelay.core.plugins import LoadedPlugins, blame, operator_error
from sealrelay.core.service import BackgroundService
from sealrelay.exceptions import CommandError, SealrelayError
from sealrelay.spool.store import Spool, SpoolError


log = logging.getLogger(__name__)


class ServeError(SealrelayError):
    """The relay could not keep running (a worker that cannot start); exit status 1."""


#: A worker exits with this status when it could not start: the supervisor gives up then.
EXIT_STARTUP: Final = 3
#: A worker that dies sooner than this after starting is replaced only after a pause.
_QUICK_DEATH: Final = 2.0
_POLL: Final = 0.05


def _say(message: str) -> None:
    print(f"sealrelay: {message}", file=sys.stderr, flush=True)


def check_port(listen: str) -> None:
    """Fail early, in the supervisor, when the port is taken by something else, including
    another ``serve`` (which binds with SO_REUSEPORT too, so binding alone would succeed)."""
    host, port = split_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    target = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104 - a probe
    try:
        socket.create_connection((target, port), timeout=1).close()
    except OSError:
        pass  # nobody answers: free, or bound without listening (the bind below tells)
    else:
        raise CommandError(f"[smtp] listen = {listen!r}: something already listens there")
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            hint = " (another program listens there)" if error.errno == errno.EADDRINUSE else ""
            raise CommandError(
                f"[smtp] listen = {listen!r}: cannot bind: {error.strerror}{hint}"
            ) from None


class Supervisor:
    """Starts, watches and stops the worker processes."""

    def __init__(self, config: Config, plugins: LoadedPlugins, workers: int) -> None:
        self.config = config
        self.plugins = plugins
        self.workers = workers
        self.spool = Spool.for_config(config)
        self._children: dict[int, tuple[int, float]] = {}
        self._services: dict[int, tuple[BackgroundService, float]] = {}
        self._stopping = False
        self._quick_deaths = 0

    def run(self) -> str:
        check_port(self.config.smtp.listen)
        self.spool.prepare()
        self._recover()
        previous = {
            sig: signal.signal(sig, self._on_stop) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        services = self._background_services()
        ready_read, ready_write = os.pipe()
        os.set_blocking(ready_read, False)
        try:
            for service in services:
                self._spawn_service(service)
            for index in range(self.workers):
                self._spawn(index, ready_write)
            self._supervise(ready_read, ready_write)
        finally:
            self._stop_children()
            self._recover_after_exit()
            os.close(ready_read)
            os.close(ready_write)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return "stopped"

    def _recover(self, writer_pid: int | None = None) -> None:
        """Take over what workers that are gone (all, or one) left in the spool."""
        for line in self.spool.recover(writer_pid=writer_pid):
            _say(f"worker {writer_pid}: {line}" if writer_pid else line)

    def _recover_after_exit(self, writer_pid: int | None = None) -> None:
        """``_recover`` once workers (all, or one) have exited: a failure is told, and the
        journals stay for the next start, while the other workers go on."""
        try:
            self._recover(writer_pid)
        except (SpoolError, OSError) as error:
            whose = f"worker {writer_pid}" if writer_pid else "the workers"
            _say(f"cannot take over what {whose} left in the spool: {error}")

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _background_services(self) -> list[BackgroundService]:
        hook = self.plugins.pm.hook.sealrelay_background_services
        try:
            answers = hook(config=self.config)
        except Exception as error:
            culprit = blame(self.plugins.pm, "sealrelay_background_services", error)
            raise operator_error(error, culprit, "to list its background services") from error
        return [service for answer in answers for service in answer or []]

    def _services_line(self) -> str:
        running = ", ".join(
            f"{service.name} (pid {pid})" for pid, (service, _) in sorted(self._services.items())
        )
        return f"background services: {running or 'none'}"

    def _spawn_service(self, service: BackgroundService) -> None:
        pid = _fork(lambda: run_service(self.config, self.plugins, service))
        self._services[pid] = (service, time.monotonic())

    def _spawn(self, index: int, ready_write: int) -> None:
        def work() -> int:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            return asyncio.run(run_worker(self.config, self.plugins, ready_write))

        pid = _fork(work)
        self._children[pid] = (index, time.monotonic())

    def _supervise(self, ready_read: int, ready_write: int) -> None:
        ready = 0
        host, port = split_listen(self.config.smtp.listen)
        while not self._stopping:
            with contextlib.suppress(BlockingIOError):
                ready += len(os.read(ready_read, 64))
                if ready == self.workers:
                    _say(
                        f"serving {self.config.smtp.protocol.upper()} on {host}:{port} with "
                        f"{self.workers} worker(s), pid {os.getpid()}; spool {self.spool.root}; "
                        f"next hop {self.config.smtp.next_hop}; {self._services_line()}; "
                        "stop with SIGTERM"
                    )
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid, status = 0, 0
            if pid == 0:
                time.sleep(_POLL)
                continue
            self._replace(pid, status, ready_write)

    def _replace(self, pid: int, status: int, ready_write: int) -> None:
        if pid in self._services:
            self._replace_service(pid, status)
            return
        index, started = self._children.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        self._recover_after_exit(pid)
        if code == EXIT_STARTUP:
            raise ServeError("a worker could not start (see the messages above)")
        if code in (0, -signal.SIGINT):
            # Stopped by a signal meant for all of us (Ctrl-C reaches the whole process
            # group): give that signal a moment to reach this process too.
            time.sleep(_POLL * 4)
            if self._stopping:
                return
        _say(f"worker {index} (pid {pid}) died ({_cause(code)}); starting a new one")
        self._pause_after(started)
        if not self._stopping:
            self._spawn(index, ready_write)

    def _replace_service(self, pid: int, status: int) -> None:
        service, started = self._services.pop(pid)
        if self._stopping:
            return
        code = os.waitstatus_to_exitcode(status)
        _say(f"background service {service.name} (pid {pid}) ended ({_cause(code)}); restarting it")
        self._pause_after(started)
        if not self._stopping:
            self._spawn_service(service)
            _say(self._services_line())

    def _pause_after(self, started: float) -> None:
        """Back off when processes die as soon as they start (a broken database, say)."""
        if time.monotonic() - started < _QUICK_DEATH:
            self._quick_deaths += 1
            time.sleep(min(0.1 * 2**self._quick_deaths, 10.0))
        else:
            self._quick_deaths = 0

    def _stop_children(self) -> None:
        running = set(self._children) | set(self._services)
        for pid in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.config.smtp.shutdown_timeout + 5
        while running and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(_POLL)
            else:
                running.discard(pid)
        for pid in running:
            _say(f"process {pid} did not stop in time; killing it")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self._children.clear()
        self._services.clear()


def _fork(child: Callable[[], int]) -> int:
    """Run *child* in a new process that exits with its status; the child's pid."""
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            status = child()
        except BaseException:  # noqa: BLE001 - a child reports everything and exits
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(status)
    return pid


def _cause(code: int) -> str:
    return f"signal {-code}" if code < 0 else f"exit status {code}"


def run_service(config: Config, plugins: LoadedPlugins, service: BackgroundService) -> int:
    """One background service: an opened bus, ``run`` until SIGTERM sets its stop event."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    os.nice(service.nice)
    with MessageBus(plugins, config) as bus:
        service.run(bus, stop)
    return 0


async def run_worker(config: Config, plugins: LoadedPlugins, ready_write: int | None) -> int:
    """One worker: open a bus, start every front end, run until SIGTERM, stop them."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bus = MessageBus(plugins, config)
    started: list[Frontend] = []
    try:
        try:
            await asyncio.to_thread(bus.open)
            answers = plugins.pm.hook.sealrelay_create_frontends(config=config, bus=bus)
            frontends: list[Frontend] = [f for answer in answers for f in answer or []]
            for frontend in frontends:
                await frontend.start()
                started.append(frontend)
        except Exception as error:  # noqa: BLE001 - reported to the operator as one line
            _say(f"worker {os.getpid()} cannot start: {type(error).__name__}: {error}")
            return EXIT_STARTUP
        if ready_write is not None:
            os.write(ready_write, b"1")
        await stop.wait()
    finally:
        for frontend in reversed(started):
            try:
                await frontend.stop()
            except Exception:
                log.exception("front end %s failed to stop cleanly", frontend.name)
        await asyncio.to_thread(bus.close)
    return 0
