"""The spool on disk: one directory per node, one file per message to deliver.

Layout under ``<data_dir>/spool/<node>/``::

    tmp/            files being written (a name carries the writer's pid)
    queue/ID.msg    one JSON line (envelope, kind, arrival), then the message bytes
    queue/ID.state  delivery bookkeeping (attempts, delivered and bounced recipients)
    journal/        each worker's journal of entries in their first attempt (journal.py)

A message a worker delivers itself at once goes into that worker's journal, made durable
together with what its other threads wrote meanwhile; if the first attempt does not settle it,
it moves into ``queue/`` before it leaves the journal. Anything else (a large message, a
bounce, what a journal left behind) is written as a ``queue/`` entry: written, fsynced, renamed
into ``queue/``, and the directory fsynced. Either way the front end answers 250 only after
that. The ``.msg`` file's mtime is the time the entry is due for its next attempt, so looking
for due work needs no file reads. A deliverer holds an exclusive ``flock`` on the ``.msg``
file while it works on the entry; the kernel drops the lock when the process dies, so another
worker takes the entry over.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import fcntl
import json
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Final

import attrs

from sealrelay.core.config import Config
from sealrelay.exceptions import SealrelayError
from sealrelay.spool.journal import (
    Journal,
    Record,
    fsync_directory,
    journal_files,
    live_entries,
    read_records,
)


#: What a spool entry id may look like (``<transaction id>-<n>``); also keeps paths inside.
_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.-]{0,80}$")
KINDS: Final = ("outbound", "inbound", "dsn")
#: Larger messages are written as queue entries even when delivered at once: the journal would
#: turn over quickly for little gain, as the fsyncs cost little next to a large message.
JOURNAL_ENTRY_LIMIT: Final = 256 * 1024
#: Seconds between looks into the journals while an administrative command waits.
_JOURNAL_POLL: Final = 0.5


class SpoolError(SealrelayError):
    """The spool could not be written or read (disk full, permissions, a damaged file)."""

    def __init__(self, message: str, *, no_space: bool = False) -> None:
        super().__init__(message)
        #: True when the disk (or quota) is full: the SMTP reply is then 452 4.3.1.
        self.no_space = no_space


def _strings(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


def _failures(values: Iterable[FailedRecipient]) -> tuple[FailedRecipient, ...]:
    return tuple(values)


def check_id(entry_id: str) -> str:
    if not _ID.match(entry_id):
        raise SpoolError(f"{entry_id!r} is not a spool entry id (see `sealrelay queue list`)")
    return entry_id


@attrs.frozen(kw_only=True)
class EntryMeta:
    """What the deliverer needs besides the bytes: the envelope of this one copy."""

    id: str = attrs.field(validator=lambda _i, _a, value: check_id(value))
    #: Envelope sender; ``""`` for a bounce, which is never bounced itself.
    sender: str
    recipients: tuple[str, ...] = attrs.field(converter=_strings)
    kind: str = attrs.field(validator=attrs.validators.in_(KINDS))
    #: Seconds since the epoch when the message was accepted (the bounce deadline counts here).
    received_at: float
    #: The SMTP transaction the entry came from (one transaction may make several entries).
    transaction: str = ""
    client_address: str | None = None

    def to_json(self) -> bytes:
        return json.dumps(attrs.asdict(self), sort_keys=True, ensure_ascii=True).encode()

    @classmethod
    def from_json(cls, line: bytes) -> EntryMeta:
        values = json.loads(line)
        return cls(**values)


@attrs.frozen(kw_only=True)
class FailedRecipient:
    """A recipient that bounced: its RFC 3463 status and what the next hop said."""

    recipient: str
    status: str
    diagnostic: str
    #: The diagnostic is an SMTP reply (``Diagnostic-Code: smtp; ...`` in the DSN).
    smtp: bool = False


@attrs.frozen(kw_only=True)
class EntryState:
    """Delivery bookkeeping, rewritten atomically after every attempt."""

    attempts: int = 0
    delivered: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    failed: tuple[FailedRecipient, ...] = attrs.field(default=(), converter=_failures)
    last_error: str = ""
    #: The sender was told that the message is delayed (that happens once).
    delay_notified: bool = False

    def pending(self, meta: EntryMeta) -> list[str]:
        done = set(self.delivered) | {f.recipient for f in self.failed}
        return [r for r in meta.recipients if r not in done]

    def to_json(self) -> bytes:
        return json.dumps(attrs.asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> EntryState:
        values: dict[str, Any] = json.loads(data)
        values["failed"] = tuple(FailedRecipient(**f) for f in values.get("failed", ()))
        return cls(**values)


@attrs.frozen(kw_only=True)
class QueuedEntry:
    """One entry as ``sealrelay queue list`` shows it."""

    meta: EntryMeta
    state: EntryState
    size: int
    next_attempt: float
    #: A deliverer holds it right now.
    active: bool
    #: In a worker's journal: in its first attempt, right now (``active`` too).
    in_journal: bool = False


def _write_synced(path: str | Path, *chunks: bytes, lock: bool = False) -> int | None:
    """Create *path* (never overwriting) with *chunks*, and fsync it. With *lock*, the file is
    flocked before anything is in it and its descriptor returned, still open and locked."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if lock:
            fcntl.flock(descriptor, fcntl.LOCK_EX)  # nobody else knows the file yet
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                view = view[os.write(descriptor, view) :]
        os.fsync(descriptor)
    except BaseException:
        os.close(descriptor)
        raise
    if lock:
        return descriptor
    os.close(descriptor)
    return None


def _spool_error(action: str, path: str | Path, error: OSError) -> SpoolError:
    no_space = error.errno in (errno.ENOSPC, errno.EDQUOT)
    return SpoolError(
        f"cannot {action} {path}: {error.strerror or error}"
        + ("; free disk space in the data directory" if no_space else ""),
        no_space=no_space,
    )


class Spool:
    """The spool directory of this node. Thread-safe and shared by all worker processes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.queue_dir = root / "queue"
        self.tmp_dir = root / "tmp"
        self.journal_dir = root / "journal"
        # The same as strings, for the paths of every message (see entry_file).
        self._queue = str(self.queue_dir)
        self._tmp = str(self.tmp_dir)
        self._journal: Journal | None = None
        self._journal_lock = threading.Lock()

    @classmethod
    def for_config(cls, config: Config) -> Spool:
        node = config.delivery.node or os.uname().nodename
        return cls(config.data_dir / "spool" / node)

    def prepare(self) -> bool:
        """Create the directories; True when they were missing."""
        missing = not self.queue_dir.is_dir()
        try:
            self.queue_dir.mkdir(parents=True, exist_ok=True)
            self.tmp_dir.mkdir(exist_ok=True)
            self.journal_dir.mkdir(exist_ok=True)
        except OSError as error:
            raise _spool_error("create", self.root, error) from None
        return missing

    def entry_file(self, entry_id: str, suffix: str) -> str:
        """The path of an entry's ``.msg`` or ``.state`` file, as a string: pathlib costs more
        than the system calls on the path every message takes."""
        return f"{self._queue}/{check_id(entry_id)}{suffix}"

    def msg_path(self, entry_id: str) -> Path:
        return Path(self.entry_file(entry_id, ".msg"))

    def state_path(self, entry_id: str) -> Path:
        return Path(self.entry_file(entry_id, ".state"))

    # -- writing --------------------------------------------------------------------------

    def store(self, entries: Sequence[tuple[EntryMeta, bytes]]) -> None:
        """Write entries for a deliverer's scan to find, durably, or none of them (then
        raise SpoolError): as ``queue/`` files. Returns once they are on disk: a crash at
        any later moment loses nothing."""
        self._store_files(entries, claim=False)

    def store_for_delivery(
        self, entries: Sequence[tuple[EntryMeta, bytes]]
    ) -> tuple[list[Claim], Future[None]]:
        """Write entries that the caller delivers itself at once, all or none. They come back
        claimed, which saves reading back what the caller has in memory. The future completes
        once they are on disk, or fails with SpoolError: only then may the sender hear 250,
        or 4xx (and then nothing is delivered). A write that fails at once raises SpoolError.

        Unless one is large, they go into this process's journal, where many messages share
        one sync, and the calling thread need not wait for it.
        """
        if all(len(content) <= JOURNAL_ENTRY_LIMIT for _, content in entries):
            journal = self._own_journal()
            durable = journal.append(
                [(meta.id, meta.to_json(), content) for meta, content in entries]
            )
            claims: list[Claim] = [
                JournalClaim(self, journal, meta, content) for meta, content in entries
            ]
            return claims, durable
        written: Future[None] = Future()
        written.set_result(None)
        return self._store_files(entries, claim=True), written

    def _own_journal(self) -> Journal:
        journal = self._journal
        if journal is None or journal.pid != os.getpid():  # none yet, or made before a fork
            with self._journal_lock:
                journal = self._journal
                if journal is None or journal.pid != os.getpid():
                    journal = self._journal = Journal(str(self.journal_dir), _spool_error)
        return journal

    def close(self) -> None:
        """Close this process's journal (at shutdown)."""
        if self._journal is not None and self._journal.pid == os.getpid():
            self._journal.close()

    def _store_files(
        self, entries: Sequence[tuple[EntryMeta, bytes]], *, claim: bool
    ) -> list[Claim]:
        """``store`` as ``queue/`` entries: a file each, fsynced, renamed into the queue, and
        the queue directory fsynced."""
        written: list[str] = []
        temporary: list[str] = []
        descriptors: list[int] = []
        pid = os.getpid()
        try:
            for meta, content in entries:
                path = f"{self._tmp}/{meta.id}.{pid}.msg"
                temporary.append(path)
                try:
                    descriptor = _write_synced(path, meta.to_json(), b"\n", content, lock=claim)
                except OSError as error:
                    raise _spool_error("write", path, error) from None
                if descriptor is not None:
                    descriptors.append(descriptor)
            for path, (meta, _) in zip(temporary, entries, strict=True):
                target = self.entry_file(meta.id, ".msg")
                try:
                    os.rename(path, target)
                except OSError as error:
                    raise _spool_error("move into the queue", path, error) from None
                written.append(target)
            try:
                fsync_directory(self._queue)
            except OSError as error:
                raise _spool_error("sync", self.queue_dir, error) from None
        except BaseException:
            for path in [*written, *temporary]:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            for descriptor in descriptors:
                os.close(descriptor)
            raise
        if not claim:
            return []
        return [
            FileClaim(self, descriptor, meta, content, EntryState())
            for descriptor, (meta, content) in zip(descriptors, entries, strict=True)
        ]

    # -- finding work ---------------------------------------------------------------------

    def _queued_ids(self) -> list[str]:
        try:
            names = os.listdir(self.queue_dir)
        except FileNotFoundError:
            return []
        return [name[:-4] for name in names if name.endswith(".msg")]

    def entry_ids(self) -> list[str]:
        """Every entry: in ``queue/``, and in a journal (being delivered)."""
        return sorted({*self._queued_ids(), *self._journaled()})

    def due(self, now: float) -> list[str]:
        """Ids of ``queue/`` entries whose next attempt is due, oldest first."""
        due: list[tuple[float, str]] = []
        try:
            scan = os.scandir(self.queue_dir)
        except FileNotFoundError:
            return []
        with scan:
            for item in scan:
                if not item.name.endswith(".msg"):
                    continue
                try:
                    mtime = item.stat().st_mtime
                except FileNotFoundError:
                    continue  # delivered and removed meanwhile
                if mtime <= now:
                    due.append((mtime, item.name[:-4]))
        return [entry_id for _, entry_id in sorted(due)]

    def claim(self, entry_id: str) -> Claim | None:
        """Lock a ``queue/`` entry for delivery; None when it is gone or another deliverer
        holds it."""
        path = self.msg_path(entry_id)
        try:
            descriptor = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                return None
            if os.fstat(descriptor).st_nlink == 0:  # removed between open and lock
                os.close(descriptor)
                return None
            meta, content = _read_entry(descriptor, path)
            return FileClaim(self, descriptor, meta, content, self._read_state(entry_id))
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(descriptor)
            raise

    def _read_state(self, entry_id: str) -> EntryState:
        try:
            return EntryState.from_json(self.state_path(entry_id).read_bytes())
        except FileNotFoundError:
            return EntryState()
        except (ValueError, TypeError) as error:
            raise SpoolError(f"damaged state file {self.state_path(entry_id)}: {error}") from None

    # -- recovery and administration ------------------------------------------------------

    def _journaled(self) -> dict[str, tuple[EntryMeta, bytes]]:
        """Entries still in the journals, not yet in ``queue/``."""
        records = []
        for path in journal_files(self.journal_dir):
            with contextlib.suppress(FileNotFoundError):  # its writer deleted it meanwhile
                records += read_records(path)[0]
        return self._not_queued(records)

    def _not_queued(self, records: Sequence[Record]) -> dict[str, tuple[EntryMeta, bytes]]:
        """The live entries of journal records that are not in ``queue/`` (yet)."""
        queued = set(self._queued_ids())
        try:
            return {
                entry_id: _split_entry(payload)
                for entry_id, payload in live_entries(records).items()
                if entry_id not in queued
            }
        except (ValueError, TypeError, KeyError) as error:
            raise SpoolError(
                f"damaged journal entry in {self.journal_dir}: {error!r}; move the journal "
                "file away to start, and deliver what is in it by hand"
            ) from None

    def recover(self, *, writer_pid: int | None = None) -> list[str]:
        """After the writers are gone (all, or the worker *writer_pid*): move what their
        journals still hold into ``queue/`` and delete the journals; remove half-written files
        and state files whose message is gone. Returns what was done, for the log."""
        done = self._replay(writer_pid)
        for directory, suffix in ((self.tmp_dir, None), (self.queue_dir, ".state")):
            try:
                names = os.listdir(directory)
            except FileNotFoundError:
                continue
            for name in names:
                path = directory / name
                if suffix is None:
                    if writer_pid is not None and f".{writer_pid}." not in name:
                        continue
                elif not name.endswith(suffix) or (directory / (name[:-6] + ".msg")).exists():
                    continue
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    done.append(f"removed a half-written spool file: {path}")
        return done

    def _replay(self, writer_pid: int | None) -> list[str]:
        held: dict[Path, int] = {}
        try:
            for path in journal_files(self.journal_dir, writer_pid=writer_pid):
                descriptor = _lock_if_unlocked(path)
                if descriptor is not None:
                    held[path] = descriptor
            if not held:
                return []
            done = []
            records: list[Record] = []
            for path in held:
                in_file, torn = read_records(path)
                records += in_file
                if torn:
                    # Written as the writer or the machine died, before anyone heard 250.
                    done.append(f"ignored {torn} bytes at the end of {path}: an unfinished write")
            entries = list(self._not_queued(records).values())
            if entries:
                self._store_files(entries, claim=False)
                done.append(
                    f"moved {len(entries)} entries from {len(held)} journal file(s) to queue/"
                )
            try:
                for path in held:
                    path.unlink()
                fsync_directory(self.journal_dir)
            except OSError as error:
                raise _spool_error("remove", self.journal_dir, error) from None
            return done
        finally:
            for descriptor in held.values():
                os.close(descriptor)

    def entries(self) -> Iterator[QueuedEntry]:
        journaled = self._journaled()
        for entry_id in sorted({*self._queued_ids(), *journaled}):
            entry = self._entry(entry_id, journaled)
            if entry is not None:
                yield entry

    def entry(self, entry_id: str) -> QueuedEntry | None:
        return self._entry(entry_id, None)

    def _entry(
        self, entry_id: str, journaled: dict[str, tuple[EntryMeta, bytes]] | None
    ) -> QueuedEntry | None:
        path = self.msg_path(entry_id)
        try:
            with path.open("rb") as handle:
                meta = EntryMeta.from_json(handle.readline())
                status = os.fstat(handle.fileno())
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
                    active = False
                except BlockingIOError:
                    active = True
        except FileNotFoundError:
            journaled = self._journaled() if journaled is None else journaled
            if entry_id not in journaled:
                # Moved from a journal into queue/ between the two looks, or gone.
                return self._entry(entry_id, {}) if path.exists() else None
            meta, content = journaled[entry_id]
            # In its first attempt, right now: due since it came.
            return QueuedEntry(
                meta=meta,
                state=EntryState(),
                size=len(content),
                next_attempt=meta.received_at,
                active=True,
                in_journal=True,
            )
        except (ValueError, TypeError) as error:
            raise SpoolError(f"damaged spool file {path}: {error}") from None
        return QueuedEntry(
            meta=meta,
            state=self._read_state(entry_id),
            size=status.st_size,
            next_attempt=status.st_mtime,
            active=active,
        )

    def content(self, entry_id: str) -> bytes:
        try:
            with self.msg_path(entry_id).open("rb") as handle:
                handle.readline()
                return handle.read()
        except FileNotFoundError:
            journaled = self._journaled()
            if entry_id in journaled:
                return journaled[entry_id][1]
            if self.msg_path(entry_id).exists():  # moved into queue/ between the two looks
                return self.content(entry_id)
            raise SpoolError(f"no spool entry {entry_id}") from None

    def wait_claim(self, entry_id: str, timeout: float) -> Claim:
        """Claim a ``queue/`` entry for an administrative change, waiting for a running
        delivery; an entry in its first attempt (in a journal) is waited for until that
        attempt moves it into ``queue/`` or ends it."""
        deadline = time.monotonic() + timeout
        journal_looked_at = 0.0
        while True:
            if not self.msg_path(entry_id).exists():
                # Reading the journals costs more than a look at queue/: not every round.
                now = time.monotonic()
                if now - journal_looked_at >= _JOURNAL_POLL:
                    if entry_id not in self._journaled() and not self.msg_path(entry_id).exists():
                        raise SpoolError(f"no spool entry {entry_id} (see `sealrelay queue list`)")
                    journal_looked_at = now
            claim = self.claim(entry_id)
            if claim is not None:
                return claim
            if time.monotonic() > deadline:
                raise SpoolError(f"entry {entry_id} is being delivered; try again in a moment")
            time.sleep(0.05)


def _lock_if_unlocked(path: Path) -> int | None:
    """An open, locked descriptor of a journal file whose writer is gone; None while its
    writer lives (it holds the lock) or when the file is gone."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


def _split_entry(data: bytes) -> tuple[EntryMeta, bytes]:
    """An entry as stored: its ``EntryMeta`` JSON line, then the message."""
    line_end = data.index(b"\n")
    return EntryMeta.from_json(data[:line_end]), data[line_end + 1 :]


def _read_entry(descriptor: int, path: Path) -> tuple[EntryMeta, bytes]:
    with os.fdopen(os.dup(descriptor), "rb") as handle:
        handle.seek(0)
        data = handle.read()
    try:
        return _split_entry(data)
    except (ValueError, TypeError) as error:
        raise SpoolError(f"damaged spool file {path}: {error}") from None


class Claim(abc.ABC):
    """An entry held for delivery by this process. Release it (``with`` block) when done."""

    def __init__(self, spool: Spool, meta: EntryMeta, content: bytes, state: EntryState) -> None:
        self.spool = spool
        self.meta = meta
        self.content = content
        self.state = state

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    @property
    def only_in_journal(self) -> bool:
        """The entry is in this process's journal alone: no other deliverer's scan finds it,
        so this process must try it again itself if it lets go without settling it."""
        return False

    @abc.abstractmethod
    def save_state(self, state: EntryState, *, next_attempt: float) -> None:
        """Record an attempt durably and set when the entry is due again."""

    @abc.abstractmethod
    def remove(self, *, sync: bool = True) -> None:
        """Delete the entry: it is delivered or bounced.

        Without *sync* the removal is not made durable, so a crash of the machine (not merely
        of the process) may bring the entry back to be delivered again: a duplicate, never a
        loss.
        """

    @abc.abstractmethod
    def release(self) -> None:
        """Let go of the entry."""


class FileClaim(Claim):
    """A ``queue/`` entry, locked with ``flock`` on its ``.msg`` file while held."""

    def __init__(
        self, spool: Spool, descriptor: int, meta: EntryMeta, content: bytes, state: EntryState
    ) -> None:
        super().__init__(spool, meta, content, state)
        self._descriptor: int | None = descriptor

    def save_state(self, state: EntryState, *, next_attempt: float) -> None:
        spool = self.spool
        target = spool.state_path(self.meta.id)
        temporary = spool.tmp_dir / f"{self.meta.id}.{os.getpid()}.state"
        try:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            _write_synced(temporary, state.to_json())
            os.rename(temporary, target)
            fsync_directory(spool.queue_dir)
            os.utime(spool.msg_path(self.meta.id), (next_attempt, next_attempt))
        except OSError as error:
            raise _spool_error("record delivery state in", target, error) from None
        self.state = state

    def remove(self, *, sync: bool = True) -> None:
        spool = self.spool
        try:
            # The message first: a state file left behind is cleaned up by recover(), while a
            # message left without its state would go again to recipients that have it.
            os.unlink(spool.entry_file(self.meta.id, ".msg"))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(spool.entry_file(self.meta.id, ".state"))
            if sync:
                fsync_directory(spool.queue_dir)
        except OSError as error:
            raise _spool_error("remove", spool.msg_path(self.meta.id), error) from None

    def release(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None


class JournalClaim(Claim):
    """An entry in this process's journal. Its first attempt settles it: delivered, it is
    marked done; otherwise it moves into ``queue/`` (a FileClaim held from then on) before it
    is marked done."""

    def __init__(self, spool: Spool, journal: Journal, meta: EntryMeta, content: bytes) -> None:
        super().__init__(spool, meta, content, EntryState())
        self._journal = journal
        self._queued: Claim | None = None
        self._removed = False

    @property
    def only_in_journal(self) -> bool:
        return self._queued is None and not self._removed

    def save_state(self, state: EntryState, *, next_attempt: float) -> None:
        # Held in memory even when it cannot be written: a retry of this save starts from the
        # outcome the attempt reached, not from nothing (which would send again to recipients
        # that have the message).
        self.state = state
        if self._queued is None:
            [self._queued] = self.spool._store_files([(self.meta, self.content)], claim=True)
            self._mark_done(sync=False)  # in queue/ for good: a replay skips it anyway
        self._queued.save_state(state, next_attempt=next_attempt)

    def remove(self, *, sync: bool = True) -> None:
        if self._queued is not None:
            self._queued.remove(sync=sync)
        else:
            self._mark_done(sync=sync)
        self._removed = True

    def _mark_done(self, *, sync: bool) -> None:
        self._journal.done([self.meta.id], sync=sync)

    def release(self) -> None:
        if self._queued is not None:
            self._queued.release()
