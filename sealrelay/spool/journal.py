"""A worker's journal: the entries it delivers itself, made durable many at a time.

A message answered 250 must be on disk first. Writing each entry as a file of its own costs two
fsyncs (the file and its directory), about 0.2 ms of CPU and 0.4 ms of waiting on this kind of
machine, per message, and the thread that waits can do nothing else meanwhile. A worker
instead appends the entries it is about to deliver to a file of its own, and a thread of the
journal makes everything appended meanwhile durable with one ``fdatasync`` (group commit).
The writer gets a future that completes then; until it does, nobody is answered 250 and the
pipeline threads go on with the next message. An entry the first attempt does not settle is
copied into ``queue/`` (the spool proper) before it leaves the journal, so the journal only
ever holds entries in their first attempt.

Layout: ``<spool>/journal/<pid>-<n>.jnl``. A file is a sequence of records::

    crc32 (4 bytes, big-endian, over everything after it) | kind (1 byte) | length (4) | payload

- ``E``: an entry: its ``EntryMeta`` JSON, a newline, the message.
- ``D``: entries done with (delivered, bounced or copied into ``queue/``): their ids, one per line.

A reader stops at the first record that is short or fails its checksum: that is the tail
written when the process or the machine died, and nobody was answered 250 for it (a record
is acknowledged only after an ``fdatasync`` that covers it). When the worker is gone, what
its journal still holds goes into ``queue/`` and the files are deleted (``Spool.recover``):
the supervisor does it for a dead worker, and ``serve`` for all at start-up and when it stops.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import struct
import threading
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Final

import attrs


log = logging.getLogger(__name__)

#: A journal file is closed for appending once it is this big; deleted once nothing in it is
#: live.
ROTATE_AT: Final = 32 * 1024 * 1024
ENTRY: Final = b"E"
DONE: Final = b"D"
_HEAD = struct.Struct(">IcI")
_NAME = re.compile(r"^(\d+)-(\d+)\.jnl$")
_APPEND_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
_IOV_MAX = 1024  # buffers per writev (Linux)


#: What the journal raises, made by its owner from what failed: (action, path, error).
ErrorFactory = Callable[[str, str, OSError], Exception]


@attrs.frozen
class Record:
    kind: bytes
    payload: bytes


def _checksum(kind: bytes, length: bytes, parts: Sequence[bytes]) -> int:
    crc = zlib.crc32(length, zlib.crc32(kind))
    for part in parts:
        crc = zlib.crc32(part, crc)
    return crc


def _head(kind: bytes, parts: Sequence[bytes]) -> bytes:
    length = sum(len(part) for part in parts)
    crc = _checksum(kind, length.to_bytes(4, "big"), parts)
    return _HEAD.pack(crc, kind, length)


def read_records(path: str | Path) -> tuple[list[Record], int]:
    """The intact records of a journal file, and how many bytes after them were not (a torn
    tail; 0 for a file written to the end)."""
    with open(path, "rb") as handle:
        data = handle.read()
    records: list[Record] = []
    offset = 0
    while offset + _HEAD.size <= len(data):
        crc, kind, length = _HEAD.unpack_from(data, offset)
        start = offset + _HEAD.size
        payload = data[start : start + length]
        if len(payload) != length or kind not in (ENTRY, DONE):
            break
        if _checksum(kind, length.to_bytes(4, "big"), (payload,)) != crc:
            break
        records.append(Record(kind, payload))
        offset = start + length
    return records, len(data) - offset


def live_entries(records: Sequence[Record]) -> dict[str, bytes]:
    """Entry records not marked done, by id: what a journal still holds (payload: the
    ``EntryMeta`` JSON line, then the message)."""
    live: dict[str, bytes] = {}
    for record in records:
        if record.kind == ENTRY:
            line_end = record.payload.index(b"\n")
            live[json.loads(record.payload[:line_end])["id"]] = record.payload
        else:
            for entry_id in record.payload.decode("ascii").split("\n"):
                live.pop(entry_id, None)
    return live


def journal_files(directory: str | Path, *, writer_pid: int | None = None) -> list[Path]:
    """The journal files in *directory* (those of one writer), oldest first per writer."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        match = _NAME.match(name)
        if match and (writer_pid is None or int(match.group(1)) == writer_pid):
            found.append((int(match.group(1)), int(match.group(2)), name))
    return [Path(directory, name) for _, _, name in sorted(found)]


class _File:
    """One journal file open for appending, and the entries in it still live."""

    def __init__(self, path: str, descriptor: int) -> None:
        self.path = path
        self.descriptor = descriptor
        self.size = 0
        self.live = 0


class Journal:
    """The journal of this process. Thread-safe: the pipeline threads append, the deliverer's
    threads mark entries done, and a thread of its own syncs."""

    def __init__(self, directory: str, error: ErrorFactory) -> None:
        self.directory = directory
        self.pid = os.getpid()
        self._error = error
        self._lock = threading.Lock()
        self._appended = threading.Condition(self._lock)  # wakes the syncing thread
        self._sync_ended = threading.Condition(self._lock)  # wakes who waits for it
        self._current: _File | None = None
        # Files no longer appended to, oldest first. One goes only after every older one:
        # a file's done records may be about entries in an older one, which a replay would
        # deliver again without them.
        self._retired: list[_File] = []
        self._files: dict[str, _File] = {}  # entry id -> the file its record is in
        self._number = 0
        # What the next sync makes durable: the future it completes, the entries it covers,
        # and the file they are in when anything waits for it at all.
        self._next_sync = _unstoppable()
        self._next_ids: list[str] = []
        self._wanted_in: _File | None = None
        self._syncing: _File | None = None
        self._closing = False
        self._syncer = threading.Thread(
            target=self._sync_forever, name="sealrelay-journal", daemon=True
        )
        self._syncer.start()

    def append(self, entries: Sequence[tuple[str, bytes, bytes]]) -> Future[None]:
        """Append ``(id, meta JSON, message)`` entries; the future completes once they are
        durable, or fails with what the sync raised (then they are not live any more).

        Raises at once if they cannot be written: then none of them is in the journal."""
        records = [
            (entry_id, [_head(ENTRY, (meta, b"\n", content)), meta, b"\n", content])
            for entry_id, meta, content in entries
        ]
        with self._lock:
            file = self._writable(sum(len(p) for _, parts in records for p in parts))
            self._write(file, [part for _, parts in records for part in parts])
            for entry_id, _ in records:
                self._files[entry_id] = file
                self._next_ids.append(entry_id)
            file.live += len(records)
            return self._want_sync(file)

    def done(self, entry_ids: Sequence[str], *, sync: bool = False) -> None:
        """Mark entries as done with: they are not replayed. Without *sync*, the record rides
        along with the next sync, and a crash of the machine before it brings the entries
        back (delivered twice, never lost)."""
        payload = "\n".join(entry_ids).encode("ascii")
        with self._lock:
            try:
                file = self._writable(len(payload) + _HEAD.size)
                self._write(file, [_head(DONE, (payload,)), payload])
            finally:
                # Done with, even when that cannot be written: the files they are in may go,
                # where a live entry would keep them and every later one. Until they go, a
                # replay delivers the entries once more.
                self._forget(entry_ids)
            synced = self._want_sync(file) if sync else None
        if synced is not None:
            synced.result()

    def close(self) -> None:
        """Sync what was appended and let go of the files (at shutdown): what is still live
        in them stays on disk for the replay, which their locks no longer keep away."""
        with self._lock:
            self._closing = True
            self._appended.notify()
        self._syncer.join()
        with self._lock:
            if self._current is not None:
                self._retire_synced(self._current)
            for file in self._retired:
                os.close(file.descriptor)
            self._retired = []

    # -- under the lock -------------------------------------------------------------------

    def _want_sync(self, file: _File) -> Future[None]:
        synced = self._next_sync
        if self._closing:
            self._retire_synced(file)  # appended after close(): nothing else syncs it
        else:
            self._wanted_in = file
            self._appended.notify()
        return synced

    def _write(self, file: _File, parts: list[bytes]) -> None:
        """Append whole records, or nothing: a reader stops at the first broken record, so
        a part left behind would hide every record after it."""
        try:
            _write_all(file.descriptor, parts)
        except OSError as error:
            try:
                os.ftruncate(file.descriptor, file.size)
            except OSError:
                self._fail(file)
            raise self._error("append to", file.path, error) from None
        file.size += sum(len(part) for part in parts)

    def _writable(self, needed: int) -> _File:
        while True:
            current = self._current
            if current is None:
                return self._open_next()
            if current.size == 0 or current.size + needed <= ROTATE_AT:
                return current
            self._retire_synced(current)  # may let go of the lock: look again

    def _retire_synced(self, file: _File) -> None:
        """Stop appending to *file* once all in it is durable: what waits for the next sync
        was in it, so it is complete now.

        Never while the syncing thread syncs it: Linux reports a write-back error to one
        sync of a file only, and the other would count lost data as durable. The wait lets
        go of the lock, so another thread may have retired the file meanwhile."""
        while self._syncing is file:
            self._sync_ended.wait()
        if file is not self._current:
            return
        try:
            os.fdatasync(file.descriptor)
        except OSError as error:
            self._fail(file)
            raise self._error("sync", file.path, error) from None
        self._retire(file)
        synced, self._next_sync, self._next_ids = self._next_sync, _unstoppable(), []
        self._wanted_in = None
        synced.set_result(None)

    def _fail(self, file: _File) -> None:
        """A sync of *file* failed. Linux may then drop the dirty pages and report success
        next time: nothing appended to it can be trusted, and it takes no more records."""
        if file is self._current:
            waiting, ids = self._next_sync, self._next_ids
            self._next_sync, self._next_ids, self._wanted_in = _unstoppable(), [], None
            self._forget(ids)
            waiting.set_exception(
                self._error("sync", file.path, OSError(errno.EIO, "an earlier sync failed"))
            )
        self._retire(file)

    def _forget(self, entry_ids: Sequence[str]) -> None:
        for entry_id in entry_ids:
            held = self._files.pop(entry_id, None)
            if held is not None:
                held.live -= 1
        self._drop_finished()

    def _open_next(self) -> _File:
        while True:
            self._number += 1
            path = f"{self.directory}/{self.pid}-{self._number}.jnl"
            try:
                descriptor = os.open(path, _APPEND_NEW, 0o600)
            except FileExistsError:
                continue  # left by an earlier process with this pid, not yet replayed
            except OSError as error:
                raise self._error("create", path, error) from None
            # Held while this process lives: a replay leaves locked files alone.
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            break
        try:
            fsync_directory(self.directory)  # the file itself must survive a crash
        except OSError as error:
            os.close(descriptor)
            os.unlink(path)
            raise self._error("sync", self.directory, error) from None
        self._current = _File(path, descriptor)
        return self._current

    def _retire(self, file: _File) -> None:
        if self._current is file:
            self._current = None
            self._retired.append(file)
        self._drop_finished()

    def _drop_finished(self) -> None:
        """Delete the oldest retired files while nothing in them is live. The directory is
        not synced: after a crash of the machine a file may come back, and its entries be
        delivered twice, never lost."""
        while self._retired and not self._retired[0].live:
            file = self._retired[0]
            if file is self._syncing:
                return  # the syncing thread calls again when it is done
            del self._retired[0]
            try:
                os.close(file.descriptor)
                os.unlink(file.path)
            except FileNotFoundError:
                pass
            except OSError as error:
                # Left on disk: a replay delivers its live entries once more, nothing worse.
                log.warning("cannot delete the journal file %s: %s", file.path, error)

    # -- the syncing thread ---------------------------------------------------------------

    def _sync_forever(self) -> None:
        with self._lock:
            while True:
                while self._wanted_in is None and not self._closing:
                    self._appended.wait()
                if self._wanted_in is None:
                    return
                self._sync_once(self._wanted_in)

    def _sync_once(self, file: _File) -> None:
        """One group commit: everything appended so far, in one fdatasync, with the lock let
        go meanwhile so that writers go on appending (for the next one)."""
        synced, ids = self._next_sync, self._next_ids
        self._next_sync, self._next_ids, self._wanted_in = _unstoppable(), [], None
        self._syncing = file
        self._lock.release()
        try:
            os.fdatasync(file.descriptor)
        except OSError as error:
            failure: OSError | None = error
        else:
            failure = None
        finally:
            self._lock.acquire()
            self._syncing = None
            self._sync_ended.notify_all()
        try:
            if failure is None:
                self._drop_finished()
            else:
                self._forget(ids)
                self._fail(file)
        finally:
            # Whatever else went wrong, no writer may wait for ever.
            if failure is None:
                synced.set_result(None)
            else:
                synced.set_exception(self._error("sync", file.path, failure))


def _unstoppable() -> Future[None]:
    """A future for writers to wait on that none of them can cancel: many share it, and the
    syncing thread must be able to complete it (asyncio cancels the future it wraps when the
    task that awaits it is cancelled)."""
    future: Future[None] = Future()
    future.set_running_or_notify_cancel()
    return future


def _write_all(descriptor: int, parts: Sequence[bytes]) -> None:
    for start in range(0, len(parts), _IOV_MAX):
        chunk = parts[start : start + _IOV_MAX]
        written = os.writev(descriptor, chunk)
        if written < sum(len(part) for part in chunk):
            # A short write (disk nearly full): the rest, or the error that explains it.
            rest = memoryview(b"".join(chunk))[written:]
            while rest:
                rest = rest[os.write(descriptor, rest) :]


def fsync_directory(path: str | Path) -> None:
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
