"""``keypool status`` and ``keypool fill``."""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

from sealrelay.core.commands import AdminCommand, CommandContext, CommandResult, Parameter
from sealrelay.exceptions import CommandError
from sealrelay.plugins.keypool.pool import KeyPool, SealedKey, Slot, generate_sealed


#: The pool the plugin module created; set by the plugin when it is imported.
_pool: KeyPool | None = None


def bind(pool: KeyPool) -> None:
    global _pool  # noqa: PLW0603 - one pool per process, owned by the plugin module
    _pool = pool


def _pool_for(context: CommandContext) -> KeyPool:
    if _pool is None:
        raise CommandError("the keypool plugin is not loaded")
    _pool.configure(context.config)
    return _pool


class KeypoolStatus(AdminCommand):
    name = "keypool status"
    summary = "show the key pool: size, threshold, free, being generated, generation rate"
    read_only = True

    def run(self, context: CommandContext) -> CommandResult:
        status = _pool_for(context).status()
        rate = (
            f"{status['seconds_per_key'] * 1000:.2f} ms per key, "
            f"{status['keys_per_second']} keys/s with "
            f"{max(context.config.keypool.generators, 1)} generator(s)"
            if status["seconds_per_key"] is not None
            else "no key generated yet"
        )
        text = (
            f"{status['key_type']}: {status['free']} free of {status['size']} "
            f"(refilled below {status['threshold']}), {status['generating']} being generated, "
            f"{status['handed_out_last_hour']} handed out in the last hour; {rate}"
        )
        return CommandResult(data=status, text=text)


class KeypoolFill(AdminCommand):
    name = "keypool fill"
    summary = "fill the key pool to its size now, on every core, with a progress bar"
    parameters = (
        Parameter(
            name="jobs",
            kind="int",
            help="processes generating keys (default: one per core)",
        ),
    )

    def run(self, context: CommandContext) -> CommandResult:
        pool = _pool_for(context)
        jobs = self.params["jobs"] or os.cpu_count() or 1
        if jobs < 1:
            raise CommandError("--jobs must be at least 1")
        before = pool.ready_count()
        wanted = context.config.keypool.size - before
        added = _fill(pool, jobs, _Progress(max(wanted, 0))) if wanted > 0 else 0
        after = pool.ready_count()
        data = {"added": added, "free": after, "size": context.config.keypool.size}
        return CommandResult(
            data=data, text=f"added {added} key(s); {after} of {data['size']} free"
        )


class _Progress:
    """A bar on standard error when it is a terminal; nothing otherwise (scripts, JSON)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.shown = sys.stderr.isatty()

    def step(self) -> None:
        self.done += 1
        if self.shown:
            width = 30
            filled = width * self.done // max(self.total, 1)
            bar = "#" * filled + "." * (width - filled)
            sys.stderr.write(f"\r[{bar}] {self.done}/{self.total} keys")
            if self.done >= self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()


def _fill(pool: KeyPool, jobs: int, progress: _Progress) -> int:
    """Reserve a row per free process, generate in the processes, fill as each ends."""
    master_key = pool.master_key()
    key_type = pool.config.keypool.key_type
    added = 0
    # spawn, not fork: the children need nothing of this process (no pooled connections).
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as executor:
        running: dict[Future[SealedKey], Slot] = {}
        while True:
            for slot in pool.reserve(jobs - len(running)):
                future = executor.submit(generate_sealed, key_type, master_key, slot.binding)
                running[future] = slot
            if not running:
                return added
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                added += pool.fill(running.pop(future), future.result())
                progress.step()


COMMANDS: tuple[type[AdminCommand], ...] = (KeypoolStatus, KeypoolFill)
