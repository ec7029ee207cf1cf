"""The spool on disk: one directory per node, one file per message to deliver.

Layout under ``<data_dir>/spool/<node>/``::

    tmp/            files being written (a name carries the writer's pid)
    queue/ID.msg    one JSON line (envelope, kind, arrival), then the message bytes
    queue/ID.state  delivery bookkeeping (attempts, delivered and bounced recipients)

An entry exists once its ``.msg`` file was written, fsynced, renamed into ``queue/`` and the
directory fsynced: only then does the front end answer 250. The ``.msg`` file's mtime is the
time the entry is due for its next attempt, so looking for due work needs no file reads. A
deliverer holds an exclusive ``flock`` on the ``.msg`` file while it works on the entry; the
kernel drops the lock when the process dies, so another worker takes the entry over.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from sealrelay.core.config import Config
from sealrelay.exceptions import SealrelayError


#: What a spool entry id may look like (``<transaction id>-<n>``); also keeps paths inside.
_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.-]{0,80}$")
KINDS: Final = ("outbound", "inbound", "dsn")


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


def _fsync_dir(path: str | Path) -> None:
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


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
        # The same as strings, for the paths of every message (see entry_file).
        self._queue = str(self.queue_dir)
        self._tmp = str(self.tmp_dir)

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

    def store(
        self, entries: Sequence[tuple[EntryMeta, bytes]], *, claim: bool = False
    ) -> list[Claim]:
        """Write every entry durably, or none of them (then raise SpoolError).

        Returns only after each file and the queue directory were fsynced: the caller may
        answer 250 then, and a crash at any later moment loses nothing. With *claim*, the
        entries come back claimed for delivery (locked from their creation on), which saves
        the deliverer reading back what it has in memory; else the list is empty.
        """
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
                os.rename(path, target)
                written.append(target)
            try:
                _fsync_dir(self._queue)
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
            Claim(self, descriptor, meta, content, EntryState())
            for descriptor, (meta, content) in zip(descriptors, entries, strict=True)
        ]

    # -- finding work ---------------------------------------------------------------------

    def entry_ids(self) -> list[str]:
        try:
            names = os.listdir(self.queue_dir)
        except FileNotFoundError:
            return []
        return sorted(name[:-4] for name in names if name.endswith(".msg"))

    def due(self, now: float) -> list[str]:
        """Ids of entries whose next attempt is due, oldest first."""
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
        """Lock an entry for delivery; None when it is gone or another deliverer holds it."""
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
            return Claim(self, descriptor, meta, content, self._read_state(entry_id))
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

    def recover(self, *, writer_pid: int | None = None) -> list[str]:
        """Remove half-written files (all, or those of one dead writer) and state files whose
        message is gone. Returns what was removed, for the log."""
        removed = []
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
                    removed.append(str(path))
        return removed

    def entries(self) -> Iterator[QueuedEntry]:
        for entry_id in self.entry_ids():
            entry = self.entry(entry_id)
            if entry is not None:
                yield entry

    def entry(self, entry_id: str) -> QueuedEntry | None:
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
            return None
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
            raise SpoolError(f"no spool entry {entry_id}") from None

    def wait_claim(self, entry_id: str, timeout: float) -> Claim:
        """Claim an entry for an administrative change, waiting for a running delivery."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.msg_path(entry_id).exists():
                raise SpoolError(f"no spool entry {entry_id} (see `sealrelay queue list`)")
            claim = self.claim(entry_id)
            if claim is not None:
                return claim
            if time.monotonic() > deadline:
                raise SpoolError(f"entry {entry_id} is being delivered; try again in a moment")
            time.sleep(0.05)


def _read_entry(descriptor: int, path: Path) -> tuple[EntryMeta, bytes]:
    with os.fdopen(os.dup(descriptor), "rb") as handle:
        handle.seek(0)
        header = handle.readline()
        content = handle.read()
    try:
        return EntryMeta.from_json(header), content
    except (ValueError, TypeError) as error:
        raise SpoolError(f"damaged spool file {path}: {error}") from None


class Claim:
    """An entry locked for delivery. Release it (``with`` block) when done with it."""

    def __init__(
        self, spool: Spool, descriptor: int, meta: EntryMeta, content: bytes, state: EntryState
    ) -> None:
        self.spool = spool
        self.meta = meta
        self.content = content
        self.state = state
        self._descriptor: int | None = descriptor

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def save_state(self, state: EntryState, *, next_attempt: float) -> None:
        """Record an attempt durably and set when the entry is due again."""
        spool = self.spool
        target = spool.state_path(self.meta.id)
        temporary = spool.tmp_dir / f"{self.meta.id}.{os.getpid()}.state"
        try:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            _write_synced(temporary, state.to_json())
            os.rename(temporary, target)
            _fsync_dir(spool.queue_dir)
            os.utime(spool.msg_path(self.meta.id), (next_attempt, next_attempt))
        except OSError as error:
            raise _spool_error("record delivery state in", target, error) from None
        self.state = state

    def remove(self, *, sync: bool = True) -> None:
        """Delete the entry: it is delivered or bounced.

        Without *sync* the directory is not fsynced, so a crash of the machine (not merely of
        the process) may bring the entry back to be delivered again: a duplicate, never a loss.
        """
        spool = self.spool
        try:
            # The message first: a state file left behind is cleaned up by recover(), while a
            # message left without its state would go again to recipients that have it.
            os.unlink(spool.entry_file(self.meta.id, ".msg"))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(spool.entry_file(self.meta.id, ".state"))
            if sync:
                _fsync_dir(spool.queue_dir)
        except OSError as error:
            raise _spool_error("remove", spool.msg_path(self.meta.id), error) from None

    def release(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None
