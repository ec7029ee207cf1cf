"""The workers' journal (sealrelay/spool/journal.py) through the spool: what a message answered
250 on the journal's word goes through when its writer lives, dies, or is cut off mid-write."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sealrelay.spool import journal as journal_module
from sealrelay.spool.journal import read_records
from sealrelay.spool.store import (
    JOURNAL_ENTRY_LIMIT,
    Claim,
    EntryMeta,
    EntryState,
    Spool,
    SpoolError,
)


def meta(number: int) -> EntryMeta:
    return EntryMeta(
        id=f"t{number}-1",
        sender="alice@example.org",
        recipients=("bob@example.net",),
        kind="outbound",
        received_at=1_700_000_000.0 + number,
        transaction=f"t{number}",
    )


def message(number: int) -> bytes:
    return b"Subject: %d\r\n\r\n" % number + b"body of message %d\r\n" % number * 50


@pytest.fixture
def spool(tmp_path):
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    yield spool
    spool.close()


def deliver_at_once(spool: Spool, entries: list[tuple[EntryMeta, bytes]]) -> list[Claim]:
    """Spool entries as the front end does for delivery by itself; once they are durable."""
    claims, durable = spool.store_for_delivery(entries)
    durable.result(timeout=30)  # a journal whose thread died fails here, without hanging
    return claims


def in_threads(work: Callable[[int], None], count: int) -> None:
    """Run ``work(0)`` to ``work(count - 1)`` at once, each in a thread, and wait for all."""
    threads = [threading.Thread(target=work, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def journal_file(spool: Spool):
    [path] = spool.journal_dir.iterdir()
    return path


def in_a_process_that_dies(root: Path, work: Callable[[Spool], object]) -> int:
    """Run *work* on the spool at *root* in a child that then exits at once, as if killed;
    the child's pid."""
    pid = os.fork()
    if pid == 0:
        try:
            work(Spool(root))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_entries_for_delivery_come_back_claimed_and_are_listed_as_being_delivered(spool):
    [claim] = deliver_at_once(spool, [(meta(1), message(1))])
    assert claim.content == message(1)
    assert claim.only_in_journal
    assert list(spool.queue_dir.iterdir()) == []  # in the journal, not as a file of its own
    assert spool.claim("t1-1") is None  # no other deliverer's scan takes it
    [entry] = spool.entries()
    assert (entry.meta, entry.active, entry.size) == (meta(1), True, len(message(1)))
    assert spool.content("t1-1") == message(1)
    assert spool.entry_ids() == ["t1-1"]
    with pytest.raises(SpoolError, match="being delivered"):
        spool.wait_claim("t1-1", timeout=0.1)
    claim.remove(sync=False)
    assert spool.entry_ids() == []
    with pytest.raises(SpoolError, match="no spool entry"):
        spool.wait_claim("t1-1", timeout=0.1)


def test_an_entry_its_first_attempt_does_not_settle_moves_into_the_queue(spool):
    [claim] = deliver_at_once(spool, [(meta(1), message(1))])
    state = EntryState(attempts=1, last_error="451 try later")
    claim.save_state(state, next_attempt=time.time() + 60)
    assert not claim.only_in_journal
    assert spool.claim("t1-1") is None  # held by this claim, now as a queue/ entry
    claim.release()
    again = spool.claim("t1-1")
    assert again is not None
    assert (again.meta, again.content, again.state) == (meta(1), message(1), state)
    again.release()
    # Marked done in the journal: a replay does not bring a second copy.
    spool.close()
    assert Spool(spool.root).recover() == []
    assert spool.entry_ids() == ["t1-1"]
    assert list(spool.journal_dir.iterdir()) == []


def test_recovery_moves_what_a_dead_writer_left_in_its_journal_into_the_queue(spool):
    def work(child: Spool) -> None:
        claims = deliver_at_once(child, [(meta(n), message(n)) for n in (1, 2, 3)])
        claims[1].remove(sync=False)  # delivered

    pid = in_a_process_that_dies(spool.root, work)
    other = in_a_process_that_dies(
        spool.root, lambda child: deliver_at_once(child, [(meta(4), message(4))])
    )
    assert spool.entry_ids() == ["t1-1", "t3-1", "t4-1"]
    # Only the dead writer's journal: another worker's is its own business.
    lines = spool.recover(writer_pid=pid)
    assert lines == ["moved 2 entries from 1 journal file(s) to queue/"]
    assert sorted(p.name for p in spool.queue_dir.iterdir()) == ["t1-1.msg", "t3-1.msg"]
    assert [p.name for p in spool.journal_dir.iterdir()] == [f"{other}-1.jnl"]
    for number in (1, 3):
        [entry] = [e for e in spool.entries() if e.meta.id == f"t{number}-1"]
        assert (entry.meta, entry.active) == (meta(number), False)
        assert spool.content(f"t{number}-1") == message(number)
    assert spool.recover() == ["moved 1 entries from 1 journal file(s) to queue/"]
    assert spool.entry_ids() == ["t1-1", "t3-1", "t4-1"]
    assert list(spool.journal_dir.iterdir()) == []


def test_a_torn_tail_loses_only_the_record_it_cuts(spool, tmp_path):
    """Power lost mid-write: the journal ends anywhere in its last record, or goes on in
    zeros. The records before the cut are all recovered; the cut one (nobody was answered
    250 for it) is not."""
    deliver_at_once(spool, [(meta(n), message(n)) for n in (1, 2)])
    third = journal_file(spool).stat().st_size
    deliver_at_once(spool, [(meta(3), message(3))])
    spool.close()
    data = journal_file(spool).read_bytes()
    for cut in range(third, len(data), 97):
        for tail in (b"", b"\0" * 4096):
            copy = Spool(tmp_path / f"cut-{cut}-{len(tail)}")
            copy.prepare()
            path = copy.journal_dir / "4242-1.jnl"
            path.write_bytes(data[:cut] + tail)
            lines = copy.recover()
            assert copy.entry_ids() == ["t1-1", "t2-1"], (cut, len(tail))
            assert lines[-1] == "moved 2 entries from 1 journal file(s) to queue/"
            torn = cut - third + len(tail)
            if torn:
                assert lines[0] == f"ignored {torn} bytes at the end of {path}: an unfinished write"
            assert copy.content("t2-1") == message(2)


def test_a_damaged_byte_ends_the_journal_there(spool):
    deliver_at_once(spool, [(meta(n), message(n)) for n in (1, 2)])
    spool.close()
    path = journal_file(spool)
    data = bytearray(path.read_bytes())
    data[data.index(b"body of message 2") + 3] ^= 0x20
    path.write_bytes(bytes(data))
    records, torn = read_records(path)
    assert [r.kind for r in records] == [b"E"]
    assert torn > len(message(2))
    assert spool.recover()[0].startswith(f"ignored {torn} bytes at the end of {path}")
    assert spool.entry_ids() == ["t1-1"]


def test_threads_appending_at_once_share_syncs_and_each_waits_for_one_that_covers_it(
    spool, monkeypatch
):
    synced_upto = [0]
    syncs = []
    real_fdatasync = os.fdatasync

    def slow_disk(descriptor: int) -> None:
        covered = os.fstat(descriptor).st_size  # what this sync makes durable, at least
        time.sleep(0.005)
        real_fdatasync(descriptor)
        synced_upto[0] = max(synced_upto[0], covered)
        syncs.append(covered)

    monkeypatch.setattr(os, "fdatasync", slow_disk)
    early: list[int] = []

    def writer(thread: int) -> None:
        for number in range(thread * 100, thread * 100 + 20):
            deliver_at_once(spool, [(meta(number), message(number))])
            data = journal_file(spool).read_bytes()
            if synced_upto[0] < data.index(message(number)) + len(message(number)):
                early.append(number)  # answered before a sync covered it

    in_threads(writer, 8)
    assert early == []
    assert len(spool.entry_ids()) == 160
    assert len(syncs) <= 80, f"{len(syncs)} syncs for 160 appends: no group commit"


def test_a_full_journal_file_is_deleted_once_nothing_in_it_is_live(spool, monkeypatch):
    monkeypatch.setattr(journal_module, "ROTATE_AT", 2 * len(message(1)) + 800)
    claims = {n: deliver_at_once(spool, [(meta(n), message(n))])[0] for n in range(1, 6)}

    def files() -> list[str]:
        return sorted(p.name for p in spool.journal_dir.iterdir())

    pid = os.getpid()
    assert files() == [f"{pid}-1.jnl", f"{pid}-2.jnl", f"{pid}-3.jnl"]  # two entries each
    claims[1].remove(sync=False)
    assert len(files()) == 3  # t2 still lives in the first file
    # The second file is finished, but its done records may be about t2 in the first one:
    # it goes only after that one.
    for number in (3, 4):
        claims[number].remove(sync=False)
    assert len(files()) == 3
    claims[2].remove(sync=True)
    assert files() == [f"{pid}-3.jnl"]
    assert spool.entry_ids() == ["t5-1"]


def test_a_failed_sync_answers_4xx_and_the_journal_goes_on_in_a_new_file(spool, monkeypatch):
    [first] = deliver_at_once(spool, [(meta(1), message(1))])
    real_fdatasync = os.fdatasync

    def broken_disk(descriptor: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", broken_disk)
    with pytest.raises(SpoolError, match="Input/output error") as error:
        deliver_at_once(spool, [(meta(2), message(2))])
    assert not error.value.no_space
    monkeypatch.setattr(os, "fdatasync", real_fdatasync)
    # Nothing in the failed file is trusted any more: the next entry goes to a new file.
    deliver_at_once(spool, [(meta(3), message(3))])
    assert len(list(spool.journal_dir.iterdir())) == 2
    # Once what was acknowledged from it is delivered, the failed file goes, and with it the
    # entry the client was told to send again.
    first.remove(sync=False)
    assert len(list(spool.journal_dir.iterdir())) == 1
    assert spool.entry_ids() == ["t3-1"]


@pytest.mark.parametrize("record", ["entry", "done"])
def test_a_record_cut_short_by_a_full_disk_is_cut_back_and_hides_nothing_after_it(
    spool, monkeypatch, record
):
    [first] = deliver_at_once(spool, [(meta(1), message(1))])
    size = journal_file(spool).stat().st_size
    real_writev = os.writev

    def full_disk(descriptor: int, parts: list[bytes]) -> int:
        real_writev(descriptor, [parts[0][:5]])  # part of the record's head fitted
        raise OSError(errno.ENOSPC, "No space left on device")

    write = {
        "entry": lambda: deliver_at_once(spool, [(meta(2), message(2))]),
        "done": lambda: first.remove(sync=False),
    }[record]
    monkeypatch.setattr(os, "writev", full_disk)
    with pytest.raises(SpoolError, match="No space left on device") as error:
        write()
    assert error.value.no_space
    monkeypatch.setattr(os, "writev", real_writev)
    assert journal_file(spool).stat().st_size == size
    # Answered 250 after the failed write: a replay must find it.
    deliver_at_once(spool, [(meta(3), message(3))])
    spool.close()
    assert Spool(spool.root).recover() == ["moved 2 entries from 1 journal file(s) to queue/"]
    assert spool.entry_ids() == ["t1-1", "t3-1"]


def test_large_entries_and_entries_nobody_delivers_at_once_are_queue_files(spool):
    large = message(2) * (JOURNAL_ENTRY_LIMIT // len(message(2)) + 1)
    claims = deliver_at_once(spool, [(meta(1), message(1)), (meta(2), large)])
    assert [claim.only_in_journal for claim in claims] == [False, False]
    for claim in claims:
        claim.release()
    spool.store([(meta(3), message(3))])
    assert sorted(p.name for p in spool.queue_dir.iterdir()) == ["t1-1.msg", "t2-1.msg", "t3-1.msg"]
    assert list(spool.journal_dir.iterdir()) == []


def test_a_replay_leaves_the_journal_of_a_live_writer_alone(spool):
    deliver_at_once(spool, [(meta(1), message(1))])
    # Another serve on the same spool, or a start-up that thinks every writer is gone.
    assert Spool(spool.root).recover() == []
    assert [(e.meta.id, e.in_journal) for e in spool.entries()] == [("t1-1", True)]


def test_no_two_syncs_of_one_journal_file_run_at_once(spool, monkeypatch):
    """Linux reports a write-back error to one sync of a file only: a rotation that synced the
    file while the journal's thread did too could count lost data as durable."""
    monkeypatch.setattr(journal_module, "ROTATE_AT", 3 * len(message(1)))
    real_fdatasync = os.fdatasync
    active: set[int] = set()
    overlaps: list[int] = []
    guard = threading.Lock()

    def watched(descriptor: int) -> None:
        with guard:
            if descriptor in active:
                overlaps.append(descriptor)
            active.add(descriptor)
        time.sleep(0.002)
        real_fdatasync(descriptor)
        with guard:
            active.discard(descriptor)

    monkeypatch.setattr(os, "fdatasync", watched)

    def writer(thread: int) -> None:
        for number in range(thread * 100, thread * 100 + 25):
            [claim] = deliver_at_once(spool, [(meta(number), message(number))])
            claim.remove(sync=False)

    in_threads(writer, 6)
    assert overlaps == []
    assert spool.entry_ids() == []


def test_a_waiter_cannot_cancel_a_sync_that_others_share(spool, monkeypatch):
    release = threading.Event()
    real_fdatasync = os.fdatasync

    def slow_disk(descriptor: int) -> None:
        release.wait(5)
        real_fdatasync(descriptor)

    monkeypatch.setattr(os, "fdatasync", slow_disk)
    _, first = spool.store_for_delivery([(meta(1), message(1))])
    _, second = spool.store_for_delivery([(meta(2), message(2))])
    # asyncio cancels the future it wraps when the task awaiting it is cancelled (a client
    # gone, a worker stopping): the other writers' wait must not end with it.
    assert not first.cancel()
    release.set()
    assert first.result(5) is None
    assert second.result(5) is None


def test_a_journal_file_that_cannot_be_deleted_stops_nobody(spool, monkeypatch):
    monkeypatch.setattr(journal_module, "ROTATE_AT", 2 * len(message(1)))
    real_unlink = os.unlink

    def read_only(path: str) -> None:
        if str(path).endswith(".jnl"):
            raise OSError(errno.EROFS, "Read-only file system")
        real_unlink(path)

    monkeypatch.setattr(os, "unlink", read_only)
    for number in range(1, 8):
        [claim] = deliver_at_once(spool, [(meta(number), message(number))])
        claim.remove(sync=False)
    assert spool.entry_ids() == []
    assert len(list(spool.journal_dir.iterdir())) > 1  # left behind, with nothing live


def test_entries_whose_done_record_failed_do_not_keep_their_file(spool, monkeypatch):
    monkeypatch.setattr(journal_module, "ROTATE_AT", 2 * len(message(1)))
    [first] = deliver_at_once(spool, [(meta(1), message(1))])
    real_writev = os.writev

    def full_disk(descriptor: int, parts: list[bytes]) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "writev", full_disk)
    with pytest.raises(SpoolError):
        first.remove(sync=False)
    monkeypatch.setattr(os, "writev", real_writev)
    for number in range(2, 8):
        [claim] = deliver_at_once(spool, [(meta(number), message(number))])
        claim.remove(sync=False)
    # Delivered, if not recorded: the first file goes like the others.
    assert len(list(spool.journal_dir.iterdir())) == 1
