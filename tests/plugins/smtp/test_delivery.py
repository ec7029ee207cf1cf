"""Delivery from the spool: SMTP next hop (pooled, retried), bounces (RFC 3464), recovery,
the queue commands."""

from __future__ import annotations

import email
import email.policy
import errno
import getpass
import os
import socket
import time

import pytest

from sealrelay.core.commands import CommandContext, CommandRegistry
from sealrelay.exceptions import CommandError
from sealrelay.plugins.frontend_smtp import commands as queue_commands
from sealrelay.spool.delivery import MaildirTransport, RetrySchedule
from sealrelay.spool.store import EntryMeta, Spool
from tests.plugins.smtp.harness import (
    Sink,
    config_for,
    free_port,
    maildir_messages,
    make_message,
    running,
    wait_until,
)


@pytest.fixture
def sink():
    server = Sink().start()
    yield server
    server.stop()


def smtp_config(tmp_path, port: int, **sections):
    smtp = {"next_hop": f"smtp://127.0.0.1:{port}", **sections.pop("smtp", {})}
    return config_for(tmp_path, smtp=smtp, **sections)


def attempts(spool: Spool, entry_id: str) -> int:
    entry = spool.entry(entry_id)
    return entry.state.attempts if entry is not None else -1


def report_parts(raw: bytes) -> dict[str, email.message.Message]:
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    return {part.get_content_type(): part for part in message.walk()}


def test_smtp_next_hop_gets_each_copy_over_pooled_connections(tmp_path, sink):
    config = smtp_config(tmp_path, sink.port)
    with running(config) as relay:
        for number in range(5):
            relay.send("alice@example.org", ["bob@example.net"], make_message(f"n{number}"))
        received = sink.wait_for(5)
        relay.drain()
        transport = relay.frontend("delivery").transport
        assert transport._idle.qsize() >= 1  # connections went back to the pool
    assert {sender for sender, _, _ in received} == {"alice@example.org"}
    assert Spool.for_config(config).entry_ids() == []


def test_next_hop_down_keeps_the_message_until_it_returns(tmp_path):
    port = free_port()
    config = smtp_config(tmp_path, port)
    with running(config) as relay:
        relay.send("alice@example.org", ["bob@example.net"], make_message("patient"))
        spool = Spool.for_config(config)
        # At least one attempt failed (a loaded machine may fit in a retry before we look).
        wait_until(
            lambda: [e.state.attempts >= 1 for e in spool.entries()] == [True], what="attempt"
        )
        [entry] = spool.entries()
        assert "cannot connect" in entry.state.last_error
        sink = Sink(port).start()
        try:
            [(_, recipients, content)] = sink.wait_for(1, timeout=30)
        finally:
            sink.stop()
        assert recipients == ["bob@example.net"]
        assert b"Subject: patient" in content
        wait_until(lambda: spool.entry_ids() == [], what="the entry to go")


def test_permanent_refusal_bounces_once_with_a_dsn(tmp_path, sink):
    sink.refuse_rcpt = lambda a: "550 5.1.1 no such user" if a == "nobody@example.net" else None
    config = smtp_config(tmp_path, sink.port)
    with running(config) as relay:
        relay.send(
            "alice@example.org",
            ["nobody@example.net", "bob@example.net"],
            make_message("partly"),
        )
        received = sink.wait_for(2)
        relay.drain()
    by_sender = {sender: (rcpts, content) for sender, rcpts, content in received}
    assert by_sender["alice@example.org"][0] == ["bob@example.net"]
    recipients, dsn = by_sender["<>"]  # the bounce has the null sender
    assert recipients == ["alice@example.org"]
    headers = email.message_from_bytes(dsn)
    assert headers.get_content_type() == "multipart/report"
    assert headers.get_param("report-type") == "delivery-status"
    assert headers["Auto-Submitted"] == "auto-replied"
    parts = report_parts(dsn)
    status = parts["message/delivery-status"].as_string()
    assert "Reporting-MTA: dns; relay.test" in status
    assert "Final-Recipient: rfc822; nobody@example.net" in status
    assert "Action: failed" in status
    assert "Status: 5.1.1" in status
    assert "Diagnostic-Code: smtp; 550 5.1.1 no such user" in status
    assert "bob@example.net" not in status
    assert "Subject: partly" in parts["text/rfc822-headers"].as_string()
    assert Spool.for_config(config).entry_ids() == []
    # And the DSN was delivered once: two messages in all.
    assert len(sink.received) == 2


def test_a_bounce_is_never_bounced(tmp_path, sink):
    sink.refuse_rcpt = lambda address: "550 5.1.1 no such user"
    config = smtp_config(tmp_path, sink.port)
    with running(config) as relay:
        relay.send("<>", ["nobody@example.net"], make_message("a bounce"))
        wait_until(lambda: Spool.for_config(config).entry_ids() == [], what="removal")
        relay.drain()
        time.sleep(0.2)
    assert sink.received == []


def test_temporary_failures_bounce_after_max_age(tmp_path, sink):
    sink.refuse_rcpt = lambda address: "451 4.3.0 try later"
    config = smtp_config(tmp_path, sink.port, delivery={"max_age": 1})
    with running(config) as relay:
        relay.send("alice@example.org", ["bob@example.net"], make_message("stale"))
        sink.refuse_rcpt = lambda a: "451 4.3.0 try later" if a == "bob@example.net" else None
        [(sender, recipients, dsn)] = sink.wait_for(1, timeout=30)
        relay.drain()
    assert (sender, recipients) == ("<>", ["alice@example.org"])
    status = report_parts(dsn)["message/delivery-status"].as_string()
    assert "Status: 4.4.7" in status
    assert "451 4.3.0 try later" in status


def test_message_refused_at_data_bounces_every_recipient(tmp_path, sink):
    sink.refuse_data = lambda sender: "554 5.6.0 content refused" if sender != "<>" else None
    config = smtp_config(tmp_path, sink.port)
    with running(config) as relay:
        relay.send("alice@example.org", ["bob@example.net"], make_message("refused"))
        [(sender, _, dsn)] = sink.wait_for(1)
        relay.drain()
    assert sender == "<>"
    assert b"Status: 5.6.0" in dsn


def test_recovery_delivers_what_an_earlier_run_left_in_the_spool(tmp_path):
    config = config_for(tmp_path)
    spool = Spool.for_config(config)
    spool.prepare()
    spool.store(
        [
            (
                EntryMeta(
                    id="20260101000000.abc-1",
                    sender="alice@example.org",
                    recipients=("bob@example.net",),
                    kind="outbound",
                    received_at=time.time(),
                ),
                make_message("left over"),
            )
        ]
    )
    (spool.tmp_dir / "20260101000000.abd-1.999999.msg").write_bytes(b"half written")
    (spool.queue_dir / "gone-1.state").write_text("{}")
    assert len(spool.recover()) == 2
    with running(config) as relay:
        wait_until(lambda: len(maildir_messages(tmp_path / "outbox")) == 1, what="delivery")
        relay.drain()
    assert spool.entry_ids() == []


def test_maildir_delivery_does_not_duplicate_after_a_crash(tmp_path):
    # The crash: delivered into the Maildir, but the spool entry was not removed yet.
    config = config_for(tmp_path)
    meta = EntryMeta(
        id="20260101000000.def-1",
        sender="alice@example.org",
        recipients=("bob@example.net", "carol@example.net"),
        kind="outbound",
        received_at=time.time(),
    )
    spool = Spool.for_config(config)
    spool.prepare()
    spool.store([(meta, make_message("once"))])
    with running(config) as relay:
        wait_until(lambda: spool.entry_ids() == [], what="delivery")
        relay.drain()
    spool.store([(meta, make_message("once"))])  # as if the removal had not happened
    with running(config) as relay:
        wait_until(lambda: spool.entry_ids() == [], what="delivery")
        relay.drain()
    assert len(maildir_messages(tmp_path / "outbox")) == 2


def test_retry_schedule_doubles_up_to_the_maximum():
    schedule = RetrySchedule(initial=60, maximum=3600, max_age=432000)
    assert [schedule.delay(n) for n in (1, 2, 3, 7, 8, 20)] == [60, 120, 240, 3600, 3600, 3600]


# -- queue commands -------------------------------------------------------------------------


def test_queue_commands(tmp_path):
    # A next hop that is down, and a first retry far away: only `queue retry` makes it sooner.
    config = smtp_config(tmp_path, free_port(), delivery={"retry_initial": 600})
    with running(config) as relay:
        relay.send("alice@example.org", ["bob@example.net"], make_message("queued"))
        relay.send("alice@example.org", ["carol@example.net"], make_message("queued 2"))
        spool = Spool.for_config(config)
        wait_until(lambda: [e.state.attempts for e in spool.entries()] == [1, 1], what="attempts")
        relay.drain()
        registry = CommandRegistry.from_plugins(relay.plugins)
        context = CommandContext(config=config, plugins=relay.plugins, actor=getpass.getuser())

        listing = registry.execute("queue list", {}, context)
        rows = {r["pending"][0]: r for r in listing.data}
        assert sorted(rows) == ["bob@example.net", "carol@example.net"]
        assert rows["bob@example.net"]["attempts"] == 1
        assert "cannot connect" in rows["bob@example.net"]["last_error"]
        assert "2 message(s)" in listing.text

        first, second = rows["bob@example.net"]["id"], rows["carol@example.net"]["id"]
        shown = registry.execute("queue show", {"id": first}, context)
        assert "Subject: queued" in shown.data["headers"]

        entry = spool.entry(first)
        assert entry is not None
        assert entry.next_attempt > time.time() + 500
        registry.execute("queue retry", {"id": [first]}, context)
        # Due now: the running deliverer tries it again at its next look.
        wait_until(lambda: attempts(spool, first) == 2, what="the retry")

        registry.execute("queue delete", {"id": [second]}, context)
        assert spool.entry(second) is None
        with pytest.raises(CommandError, match="no spool entry"):
            registry.execute("queue show", {"id": second}, context)
        with pytest.raises(CommandError, match="not a spool entry id"):
            registry.execute("queue delete", {"id": ["../../etc/passwd"]}, context)
        assert registry.execute("queue flush", {}, context).data == {"retried": [first]}


def test_queue_commands_on_a_message_in_its_first_attempt(tmp_path, monkeypatch):
    monkeypatch.setattr(queue_commands, "_CLAIM_WAIT", 0.6)
    with socket.socket() as silent:  # a next hop that takes the connection and says nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        config = smtp_config(
            tmp_path,
            silent.getsockname()[1],
            smtp={"shutdown_timeout": 1},
            delivery={"timeout": 60},
        )
        with running(config) as relay:
            relay.send("alice@example.org", ["bob@example.net"], make_message("hanging"))
            spool = Spool.for_config(config)
            wait_until(lambda: [e.in_journal for e in spool.entries()] == [True], what="it")
            registry = CommandRegistry.from_plugins(relay.plugins)
            context = CommandContext(config=config, plugins=relay.plugins, actor="root")
            listing = registry.execute("queue list", {}, context)
            [row] = listing.data
            assert (row["active"], row["first_attempt"], row["attempts"]) == (True, True, 0)
            assert "(being delivered: first attempt)" in listing.text
            shown = registry.execute("queue show", {"id": row["id"]}, context)
            assert "Subject: hanging" in shown.data["headers"]
            # Being tried right now: due already.
            assert registry.execute("queue flush", {}, context).data == {"retried": [row["id"]]}
            with pytest.raises(CommandError, match="is being delivered; try again"):
                registry.execute("queue delete", {"id": [row["id"]]}, context)


def test_a_first_attempt_that_fails_unexpectedly_is_kept_in_the_queue_for_a_retry(
    tmp_path, monkeypatch
):
    """A bug in a transport must neither lose the message nor leave it in a worker's journal
    where no scan and no queue command reaches it."""
    real_send = MaildirTransport.send
    calls: list[str] = []

    async def flaky(self, meta, content, recipients):
        calls.append(meta.id)
        if len(calls) == 1:
            raise RuntimeError("a bug in the transport")
        return await real_send(self, meta, content, recipients)

    monkeypatch.setattr(MaildirTransport, "send", flaky)
    config = config_for(tmp_path)
    with running(config) as relay:
        with relay.client() as client:
            client.sendmail("alice@example.org", ["bob@example.net"], make_message("flaky"))
        spool = Spool.for_config(config)
        wait_until(
            lambda: [(e.state.attempts, e.in_journal) for e in spool.entries()] == [(1, False)],
            what="the failed attempt recorded in queue/",
        )
        [entry] = spool.entries()
        assert entry.state.last_error == "the attempt failed (see the log)"
        wait_until(lambda: len(maildir_messages(tmp_path / "outbox")) == 1, what="the retry")
        relay.drain()
    assert calls == [entry.meta.id, entry.meta.id]
    assert Spool.for_config(config).entry_ids() == []


def test_an_outcome_that_cannot_be_written_is_kept_and_sends_nothing_twice(
    tmp_path, sink, monkeypatch
):
    """The first attempt reaches bob and not carol (451), and the disk refuses the copy into
    queue/ that would record it. The next scan writes that outcome: bob does not get the
    message again, carol does once she can."""
    sink.refuse_rcpt = lambda address: "451 4.3.0 later" if address == "carol@example.net" else None
    real_rename = os.rename
    refused: list[str] = []

    def full_once(source, target) -> None:
        if str(target).endswith(".msg") and not refused:
            refused.append(str(target))
            raise OSError(errno.ENOSPC, "No space left on device")
        real_rename(source, target)

    monkeypatch.setattr(os, "rename", full_once)
    config = smtp_config(tmp_path, sink.port)
    with running(config) as relay:
        relay.send(
            "alice@example.org", ["bob@example.net", "carol@example.net"], make_message("kept")
        )
        spool = Spool.for_config(config)
        wait_until(
            lambda: (
                [(e.in_journal, e.state.delivered) for e in spool.entries()]
                == [(False, ("bob@example.net",))]
            ),
            what="the outcome written on a later scan",
        )
        assert refused
        [entry] = spool.entries()
        assert (entry.state.attempts, entry.state.pending(entry.meta)) == (1, ["carol@example.net"])
        assert "451 4.3.0 later" in entry.state.last_error
        sink.refuse_rcpt = lambda address: None
        registry = CommandRegistry.from_plugins(relay.plugins)
        context = CommandContext(config=config, plugins=relay.plugins, actor="root")
        registry.execute("queue retry", {"id": [entry.meta.id]}, context)
        wait_until(lambda: spool.entry_ids() == [], what="delivery to carol")
    assert [recipients for _, recipients, _ in sink.received] == [
        ["bob@example.net"],
        ["carol@example.net"],
    ]
