"""The SMTP/LMTP front end against real clients on 127.0.0.1: replies, limits, direction,
policy at RCPT, AUTH, STARTTLS, and that 250 means "in the spool"."""

from __future__ import annotations

import base64
import errno
import os
import smtplib
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from sealrelay import Policy, RejectMessage, hookimpl
from sealrelay.exceptions import ConfigError
from sealrelay.spool.store import EntryMeta, Spool, SpoolError
from tests.plugins.smtp.harness import (
    AlwaysEncrypt,
    Credentials,
    Relay,
    config_for,
    maildir_messages,
    make_certificate,
    make_message,
    running,
    wait_until,
)


def raw_session(relay: Relay) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
    assert sock.recv(1024).startswith(b"220")
    return sock


def read_replies(sock: socket.socket, count: int) -> list[bytes]:
    """*count* complete replies (multi-line replies count once)."""
    data = b""
    while True:
        lines = data.split(b"\r\n")
        finished = [line for line in lines[:-1] if line[3:4] == b" "]
        if len(finished) >= count:
            return finished
        chunk = sock.recv(65536)
        if not chunk:
            return finished
        data += chunk


def delivered(relay: Relay, tmp_path, count: int) -> list[Any]:
    wait_until(lambda: len(maildir_messages(tmp_path / "outbox")) >= count, what="delivery")
    relay.drain()
    return maildir_messages(tmp_path / "outbox")


# -- the conversation ---------------------------------------------------------------------


def test_ehlo_offers_the_extensions_and_nothing_unconfigured(tmp_path):
    with running(config_for(tmp_path)) as relay, relay.client() as client:
        code, _ = client.ehlo()
        assert code == 250
        for extension in ("8bitmime", "smtputf8", "pipelining", "enhancedstatuscodes"):
            assert client.has_extn(extension), extension
        assert client.esmtp_features["size"] == "26214400"
        assert not client.has_extn("auth")  # [smtp] auth is off
        assert not client.has_extn("starttls")  # no certificate configured


def test_replies_to_pipelined_commands_are_not_held_back_by_nagle(tmp_path):
    # With Nagle's algorithm on, the second reply to a pipelined MAIL/RCPT/DATA waits for the
    # client's delayed ACK (40 ms on Linux) in every transaction.
    with running(config_for(tmp_path)) as relay, relay.client() as client:
        client.ehlo()
        [connection] = relay.frontend("smtp").connections
        sock = connection.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_outbound_and_inbound_go_their_ways_and_arrive_byte_exact(tmp_path):
    body = (
        ".a line that starts with a dot\r\n..two dots\r\n.\r\nGrüße, 8bit\r\n"
        + "x" * 998
        + "\r\ntrailing spaces   \r\n"
    )
    message = make_message("mixed", body)
    with running(config_for(tmp_path)) as relay:
        with relay.client() as client:
            client.ehlo()
            refused = client.sendmail(
                "alice@example.org",
                ["bob@example.net", "carol@example.org"],
                message,
                mail_options=["BODY=8BITMIME"],
            )
        assert refused == {}
        got = {m["Delivered-To"]: m for m in delivered(relay, tmp_path, 2)}
    outbound, inbound = got["bob@example.net"], got["carol@example.org"]
    # Outbound ran the outbound pipeline: no inbound annotations.
    assert outbound["X-Sealrelay-Signature"] is None
    # The local recipient got the inbound treatment (verify, annotate).
    assert inbound["X-Sealrelay-Signature"] == "none"
    raw = [p.read_bytes() for p in (tmp_path / "outbox" / "new").iterdir()]
    [outbound_raw] = [r for r in raw if b"Delivered-To: bob@example.net\r\n" in r]
    # Dot-unstuffed exactly; 8bit, a 998-octet line and trailing spaces intact.
    assert outbound_raw == (
        b"Return-Path: <alice@example.org>\r\nDelivered-To: bob@example.net\r\n" + message
    )


def test_local_to_local_mail_takes_the_inbound_path_only(tmp_path):
    with running(config_for(tmp_path)) as relay:
        relay.send("alice@example.org", ["carol@example.org"], make_message("internal"))
        [message] = delivered(relay, tmp_path, 1)
    assert message["Delivered-To"] == "carol@example.org"
    assert message["X-Sealrelay-Decryption"] == "none"


def test_null_sender_and_utf8_addresses_are_taken(tmp_path):
    with running(config_for(tmp_path)) as relay:
        with relay.client() as client:
            client.ehlo()
            client.sendmail("<>", ["bob@example.net"], make_message("bounce"))
            client.sendmail(
                "jörg@example.org",
                ["zoë@example.net"],
                make_message("utf8", From="jörg@example.org"),
                mail_options=["SMTPUTF8", "BODY=8BITMIME"],
            )
        messages = delivered(relay, tmp_path, 2)
    assert {m["Return-Path"] for m in messages} == {"<>", "<jörg@example.org>"}


def test_pipelined_commands_are_answered_in_order(tmp_path):
    with running(config_for(tmp_path)) as relay:
        sock = raw_session(relay)
        sock.sendall(b"EHLO localhost\r\n")
        read_replies(sock, 1)
        message = make_message("pipelined")
        sock.sendall(
            b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\n"
            b"RCPT TO:<carol@example.org>\r\nDATA\r\n"
        )
        replies = read_replies(sock, 4)
        assert [r[:3] for r in replies] == [b"250", b"250", b"250", b"354"]
        sock.sendall(message + b".\r\nQUIT\r\n")
        replies = read_replies(sock, 2)
        assert replies[0].startswith(b"250 2.0.0 OK queued as ")
        assert replies[1].startswith(b"221")
        sock.close()
        assert len(delivered(relay, tmp_path, 2)) == 2


def test_an_empty_message_is_taken(tmp_path):
    with running(config_for(tmp_path)) as relay:
        sock = raw_session(relay)
        sock.sendall(b"EHLO localhost\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n")
        read_replies(sock, 3)
        sock.sendall(b"DATA\r\n")
        read_replies(sock, 1)
        sock.sendall(b".\r\n")
        assert read_replies(sock, 1)[0].startswith(b"250")
        sock.close()
        delivered(relay, tmp_path, 1)


# -- policy at RCPT, relaying ---------------------------------------------------------------


def test_recipient_that_must_be_encrypted_without_certificate_is_refused_at_rcpt(tmp_path):
    with running(config_for(tmp_path), {"policy": AlwaysEncrypt()}) as relay:
        with relay.client() as client:
            client.ehlo()
            client.mail("alice@example.org")
            code, text = client.rcpt("secret@example.net")
            assert code == 550
            assert text.startswith(b"5.7.1 <secret@example.net>: policy requires encryption")
            assert b"sealrelay cert import" in text
            assert client.rcpt("bob@example.net")[0] == 250
            assert client.data(make_message("partly"))[0] == 250
        [message] = delivered(relay, tmp_path, 1)
        assert message["Delivered-To"] == "bob@example.net"


def test_policy_that_holds_refuses_temporarily_at_rcpt(tmp_path):
    plugins: dict[str, object] = {"policy": AlwaysEncrypt(hold=True)}
    with running(config_for(tmp_path), plugins) as relay, relay.client() as client:
        client.ehlo()
        client.mail("alice@example.org")
        code, text = client.rcpt("secret@example.net")
    assert code == 450
    assert text.startswith(b"4.7.1 ")


class SwitchablePolicy:
    """Mail to secret@example.net must be encrypted (no certificate is known) once switched on."""

    def __init__(self) -> None:
        self.strict = False

    @hookimpl
    def sealrelay_resolve_policy(self, recipient: str) -> Policy | None:
        if not self.strict or recipient != "secret@example.net":
            return None
        return Policy(sign="none", encrypt="always", origin="test")


def test_a_remembered_rcpt_acceptance_never_sends_against_a_changed_policy(tmp_path):
    # RCPT TO remembers accepted pairs for a few seconds; DATA must decide again.
    policy = SwitchablePolicy()
    with running(config_for(tmp_path), {"policy": policy}) as relay:
        with relay.client() as client:
            client.ehlo()
            client.mail("alice@example.org")
            assert client.rcpt("secret@example.net")[0] == 250
            client.rset()
            policy.strict = True
            client.mail("alice@example.org")
            assert client.rcpt("secret@example.net")[0] == 250  # the remembered answer
            code, text = client.data(make_message("now secret"))
            assert code == 550
            assert b"policy requires encryption" in text
            client.rset()
            client.mail("carol@example.org")  # another pair: asked afresh
            assert client.rcpt("secret@example.net")[0] == 550
        relay.drain()
        assert maildir_messages(tmp_path / "outbox") == []


def test_relaying_needs_a_trusted_network_or_auth(tmp_path):
    config = config_for(tmp_path, smtp={"relay_networks": ["192.0.2.0/24"]})
    with running(config) as relay, relay.client() as client:
        client.ehlo()
        client.mail("alice@example.org")
        code, text = client.rcpt("bob@example.net")
        assert (code, text) == (554, b"5.7.1 <bob@example.net>: Relay access denied")
        assert client.rcpt("carol@example.org")[0] == 250  # local recipients are always taken


# -- limits ---------------------------------------------------------------------------------


def test_size_limit_is_announced_and_enforced(tmp_path):
    config = config_for(tmp_path, smtp={"max_message_size": 10000})
    with running(config) as relay, relay.client() as client:
        client.ehlo()
        assert client.esmtp_features["size"] == "10000"
        code, _ = client.mail("alice@example.org", options=["SIZE=20000"])
        assert code == 552
        client.rset()
        client.mail("alice@example.org")
        client.rcpt("bob@example.net")
        code, text = client.data(make_message("big", "y" * 70 + "\r\n") * 200)
        assert (code, text) == (552, b"5.3.4 Message too big: the limit is 10000 bytes")
        # The session goes on.
        client.mail("alice@example.org")
        client.rcpt("bob@example.net")
        assert client.data(make_message("small"))[0] == 250


def test_recipient_limit(tmp_path):
    config = config_for(tmp_path, smtp={"max_recipients": 2})
    with running(config) as relay, relay.client() as client:
        client.ehlo()
        client.mail("alice@example.org")
        assert client.rcpt("a@example.net")[0] == 250
        assert client.rcpt("b@example.net")[0] == 250
        assert client.rcpt("c@example.net") == (452, b"4.5.3 Too many recipients")


def test_line_length_limit(tmp_path):
    with running(config_for(tmp_path)) as relay, relay.client() as client:
        client.ehlo()
        client.mail("alice@example.org")
        client.rcpt("bob@example.net")
        assert (
            client.data(make_message("longest", "z" * 998 + "\r\n." + "z" * 997 + "\r\n"))[0] == 250
        )
        client.mail("alice@example.org")
        client.rcpt("bob@example.net")
        code, text = client.data(make_message("long", "z" * 999 + "\r\n"))
        assert code == 500
        assert text.startswith(b"5.5.2 Line too long")


def test_bad_addresses_get_5xx(tmp_path):
    with running(config_for(tmp_path)) as relay:
        sock = raw_session(relay)
        sock.sendall(b"EHLO localhost\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@>\r\n")
        replies = read_replies(sock, 3)
        assert replies[2].startswith(b"553")
        sock.close()


def test_connection_limit_answers_421(tmp_path):
    config = config_for(tmp_path, smtp={"max_connections": 1})
    with running(config) as relay:
        first = raw_session(relay)
        second = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
        assert second.recv(1024).startswith(b"421 4.7.0 Too many connections")
        second.close()
        first.close()


def test_command_and_data_timeouts_answer_421(tmp_path):
    config = config_for(tmp_path, smtp={"command_timeout": 1, "data_timeout": 1})
    with running(config) as relay:
        idle = raw_session(relay)
        assert idle.recv(1024).startswith(b"421 4.4.2 relay.test Error: timeout exceeded")
        idle.close()
        slow = raw_session(relay)
        slow.sendall(b"EHLO localhost\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n")
        read_replies(slow, 3)
        slow.sendall(b"DATA\r\n")
        read_replies(slow, 1)
        slow.sendall(b"Subject: half\r\n\r\nand then nothing")
        data = b""
        while b"421" not in data:
            chunk = slow.recv(1024)
            assert chunk, data
            data += chunk
        assert b"421 4.4.2" in data
        slow.close()
        assert not (tmp_path / "outbox" / "new").exists()


# -- failures after DATA end in 4xx, never a dropped connection ------------------------------


class Exploding:
    @hookimpl
    def sealrelay_resolve_policy(self, recipient: str):
        if recipient == "boom@example.net":
            raise RuntimeError("the policy database is on fire")
        if recipient == "never@example.net":
            raise RejectMessage("this recipient never gets mail")


def test_policy_failures_at_rcpt_defer_or_reject_with_the_reason(tmp_path):
    plugins: dict[str, object] = {"exploding": Exploding()}
    with running(config_for(tmp_path), plugins) as relay, relay.client() as client:
        client.ehlo()
        # At RCPT the policy is asked already: the failing plugin is named, 4xx.
        client.mail("alice@example.org")
        code, text = client.rcpt("boom@example.net")
        assert code == 450
        assert b"exploding" in text
        code, text = client.rcpt("never@example.net")
        assert (code, text) == (550, b"5.7.1 <never@example.net>: this recipient never gets mail")


def test_an_unexpected_error_while_processing_answers_451(tmp_path, monkeypatch):
    with running(config_for(tmp_path)) as relay:

        def broken(*args, **kwargs):
            raise ValueError("a bug")

        monkeypatch.setattr(relay.frontend("smtp").bus, "process_outbound", broken)
        with relay.client() as client:
            client.ehlo()
            client.mail("alice@example.org")
            client.rcpt("bob@example.net")
            code, text = client.data(make_message("bug"))
            assert code == 451
            assert text.startswith(b"4.3.0")
            assert client.noop()[0] == 250  # the connection is still there
    assert Spool.for_config(relay.config).entry_ids() == []


def test_signing_impossible_defers_the_whole_smtp_transaction(tmp_path):
    config = config_for(tmp_path, policy={"default": {"sign": "clear"}})
    with running(config) as relay, relay.client() as client:
        client.ehlo()
        client.mail("alice@example.org")
        client.rcpt("bob@example.net")
        client.rcpt("carol@example.org")
        code, text = client.data(make_message("unsigned"))
    assert code == 451
    assert b"no signing key is known for alice@example.org" in text
    assert Spool.for_config(config).entry_ids() == []  # nothing half-accepted


# -- the spool: 250 means written and fsynced ---------------------------------------------


class SyncSpy:
    """Records what os.fsync and os.fdatasync were called on: (path, size at the call)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, int]] = []
        for name in ("fsync", "fdatasync"):
            monkeypatch.setattr(os, name, self._spy(getattr(os, name)))

    def _spy(self, real: Callable[[int], None]) -> Callable[[int], None]:
        def spy(descriptor: int) -> None:
            real(descriptor)
            self.calls.append(
                (os.readlink(f"/proc/self/fd/{descriptor}"), os.fstat(descriptor).st_size)
            )

        return spy


def _send(relay: Relay, message: bytes) -> str:
    with relay.client() as client:
        client.ehlo()
        client.mail("alice@example.org")
        client.rcpt("bob@example.net")
        code, text = client.data(message)
    assert code == 250
    return text.decode().rsplit(" ", 1)[1]


def test_250_only_after_the_journal_record_and_its_file_are_synced(tmp_path, monkeypatch):
    # A next hop that is down: the first attempt fails, and the entry moves into queue/.
    config = config_for(tmp_path, smtp={"next_hop": "smtp://127.0.0.1:9"})
    spy = SyncSpy(monkeypatch)
    message = make_message("durable")
    with running(config) as relay:
        spool = Spool.for_config(config)
        transaction = _send(relay, message)
        synced_before_the_250 = list(spy.calls)
        [journal] = spool.journal_dir.iterdir()
        data = journal.read_bytes()
        record_end = data.index(message) + len(message)
        # The journal file was synced up to the end of the record, and the directory that
        # holds it since its creation, before the 250 came.
        assert any(p == str(journal) and n >= record_end for p, n in synced_before_the_250)
        assert str(spool.journal_dir) in [p for p, _ in synced_before_the_250]
        wait_until(
            lambda: [e.state.attempts for e in spool.entries()] == [1], what="the first attempt"
        )
        [entry] = spool.entries()
        assert entry.meta.transaction == transaction
        assert spool.content(entry.meta.id) == message
        assert not entry.active  # in queue/ now, waiting for its next attempt
    # The journal file goes once nothing in it is live: at the latest when the worker stops.
    assert Spool.for_config(config).recover() == []
    assert list(spool.journal_dir.iterdir()) == []


def test_250_for_a_large_message_only_after_its_queue_file_and_directory_are_fsynced(
    tmp_path, monkeypatch
):
    config = config_for(tmp_path, smtp={"next_hop": "smtp://127.0.0.1:9"})
    spy = SyncSpy(monkeypatch)
    message = make_message("large", body=("y" * 998 + "\r\n") * 300)  # over 256 KiB
    with running(config) as relay:
        queue = Spool.for_config(config).queue_dir
        _send(relay, message)
        synced = [path for path, _ in spy.calls]
        # At the moment of the 250: the file is in queue/, its data and the directory entry
        # were fsynced (the data under its temporary name, before the rename).
        [entry] = Spool.for_config(config).entry_ids()
        assert any(path.endswith(f"/tmp/{entry}.{os.getpid()}.msg") for path in synced)
        assert str(queue) in synced
        assert (queue / f"{entry}.msg").read_bytes().endswith(message)
        assert list(Spool.for_config(config).journal_dir.iterdir()) == []


@pytest.mark.parametrize("failing", ["writev", "fdatasync"])
def test_spool_write_failure_answers_452_and_delivers_nothing(tmp_path, monkeypatch, failing):
    """The disk is full when the journal is written, or when it is synced (a filesystem
    that reserves blocks late): 452, and the message is neither kept nor delivered."""
    config = config_for(tmp_path)
    with running(config) as relay:
        real = getattr(os, failing)

        def full(*arguments: Any) -> Any:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, failing, full)
        with relay.client() as client:
            client.ehlo()
            client.mail("alice@example.org")
            client.rcpt("bob@example.net")
            assert client.data(make_message("full")) == (
                452,
                b"4.3.1 Insufficient system storage, try again later",
            )
            monkeypatch.setattr(os, failing, real)
            client.sendmail("alice@example.org", ["bob@example.net"], make_message("space"))
        relay.drain()
        [delivered] = maildir_messages(tmp_path / "outbox")
        assert delivered["Subject"] == "space"
    assert Spool.for_config(config).entry_ids() == []


@pytest.fixture
def small_disk(tmp_path):
    """A config whose data directory is a 1 MB tmpfs, and whose next hop is down."""
    if os.geteuid() != 0:
        pytest.skip("SKIPPED LOUDLY: mounting a 1 MB tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"SKIPPED LOUDLY: cannot mount a tmpfs here: {result.stderr.decode()}")
    try:
        yield config_for(
            tmp_path,
            storage={"data_dir": str(mount)},
            smtp={"next_hop": "smtp://127.0.0.1:9"},
        )
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(client: smtplib.SMTP, body: str) -> list[tuple[int, bytes]]:
    """Send messages with *body* until one is refused with 452 (20 at the most)."""
    replies: list[tuple[int, bytes]] = []
    client.ehlo()
    while 452 not in [code for code, _ in replies] and len(replies) < 20:
        client.mail("alice@example.org")
        client.rcpt("bob@example.net")
        replies.append(client.data(make_message(f"fill {len(replies)}", body)))
    return replies


def test_disk_full_on_a_real_filesystem_answers_452(small_disk):
    with running(small_disk) as relay, relay.client() as client:
        # 390 KB, written as queue/ files: two fit, the third does not.
        codes = _fill(client, ("x" * 76 + "\r\n") * 5000)
        assert [c for c, _ in codes] == [250, 250, 452]
        assert codes[2][1] == b"4.3.1 Insufficient system storage, try again later"
        spool = Spool.for_config(small_disk)
        assert len(spool.entry_ids()) == 2
        assert os.listdir(spool.tmp_dir) == []  # the half-written file was removed


def test_disk_full_under_the_journal_answers_452_and_keeps_what_got_250(small_disk):
    """Small messages go into the worker's journal; the first attempt fails (the next hop is
    down) and copies each into queue/. The disk fills: first a copy fails (the message got its
    250 and stays in the journal), then the journal itself (452). When space comes back, the
    next scan moves what waited into queue/."""
    with running(small_disk) as relay, relay.client() as client:
        # 180 KB: journal entries.
        codes = [code for code, _ in _fill(client, ("x" * 76 + "\r\n") * 2300)]
        accepted = codes.count(250)
        assert codes == [250] * accepted + [452]
        assert accepted >= 2
        spool = Spool.for_config(small_disk)
        wait_until(
            lambda: sorted(e.state.attempts for e in spool.entries()) == [0] + [1] * (accepted - 1),
            what="the first attempts",
        )
        assert len(spool.entry_ids()) == accepted  # every 250 kept, in queue/ or journal
        # The last one's copy into queue/ did not fit: it waits in the journal.
        assert [e.in_journal for e in spool.entries()].count(True) == 1
        subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk.data_dir)], check=True)
        wait_until(
            lambda: [e.in_journal for e in spool.entries()] == [False] * accepted,
            timeout=30,
            what="everything in queue/",
        )


def test_spool_store_is_all_or_nothing(tmp_path, monkeypatch):
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    entries = [
        (EntryMeta(id=f"t-{n}", sender="", recipients=("a@b.c",), kind="dsn", received_at=0), b"x")
        for n in range(3)
    ]
    real_rename = os.rename
    calls = []

    def rename(source, target):
        calls.append(target)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_rename(source, target)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(SpoolError, match="No space") as error:
        spool.store(entries)
    assert error.value.no_space  # 452, as for any other write of the spool
    assert spool.entry_ids() == []
    assert os.listdir(spool.tmp_dir) == []


# -- AUTH and STARTTLS ----------------------------------------------------------------------


def test_auth_on_loopback_relays_for_the_subscriber(tmp_path):
    config = config_for(tmp_path, smtp={"auth": True, "relay_networks": []})
    with running(config, {"credentials": Credentials()}) as relay:
        with relay.client() as client:
            client.ehlo()
            assert set(client.esmtp_features["auth"].split()) == {"LOGIN", "PLAIN"}
            with pytest.raises(smtplib.SMTPAuthenticationError) as error:
                client.login("alice@example.org", "wrong")
            assert error.value.smtp_code == 535
            client.mail("alice@example.org")
            assert client.rcpt("bob@example.net")[0] == 554  # not authenticated: no relaying
            client.rset()
            client.login("alice@example.org", "alicepw")
            client.sendmail("alice@example.org", ["bob@example.net"], make_message("authed"))
        assert len(delivered(relay, tmp_path, 1)) == 1
        with relay.client() as client:
            client.ehlo()
            client.user, client.password = "alice@example.org", "alicepw"
            assert client.auth("LOGIN", client.auth_login)[0] == 235


def test_logged_in_subscriber_sends_only_as_itself(tmp_path):
    """The relay signs with the sender's key: alice, logged in, may not send as the CEO."""
    config = config_for(tmp_path, smtp={"auth": True, "relay_networks": []})
    with running(config, {"credentials": Credentials()}) as relay, relay.client() as client:
        client.ehlo()
        client.login("alice@example.org", "alicepw")
        code, reply = client.mail("ceo@example.org")
        assert code == 553
        assert b"logged in as alice@example.org" in reply
        client.rset()
        assert client.mail("Alice@EXAMPLE.org")[0] == 250  # the same mailbox, any case


def test_auth_without_a_credentials_plugin_is_a_config_error(tmp_path):
    relay = Relay(config_for(tmp_path, smtp={"auth": True}))
    with pytest.raises(ConfigError, match="no enabled plugin checks credentials"):
        relay.plugins.pm.hook.sealrelay_create_frontends(config=relay.config, bus=relay.bus)
    relay.loop.close()


def test_starttls_then_auth_for_a_remote_looking_client(tmp_path, monkeypatch):
    cert, key = make_certificate(tmp_path)
    config = config_for(
        tmp_path,
        smtp={"tls_certificate": cert, "tls_key": key, "auth": True, "relay_networks": []},
    )
    # The client is on loopback; pretend it is not, so AUTH must wait for TLS.
    monkeypatch.setattr("sealrelay.plugins.frontend_smtp.server._is_loopback", lambda peer: False)
    with running(config, {"credentials": Credentials()}) as relay, relay.client() as client:
        client.ehlo()
        assert client.has_extn("starttls")
        assert not client.has_extn("auth")
        client.putcmd("AUTH", "PLAIN " + base64.b64encode(b"\0a\0b").decode())
        assert client.getreply()[0] == 538  # encryption required first
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        client.starttls(context=context)
        client.ehlo()
        assert client.has_extn("auth")
        client.login("alice@example.org", "alicepw")
        client.sendmail("alice@example.org", ["bob@example.net"], make_message("tls"))
        assert len(delivered(relay, tmp_path, 1)) == 1


# -- LMTP -----------------------------------------------------------------------------------


def test_lmtp_answers_per_recipient(tmp_path):
    config = config_for(tmp_path, smtp={"protocol": "lmtp"}, policy={"default": {"sign": "clear"}})
    with running(config) as relay:
        sock = raw_session(relay)
        sock.sendall(b"EHLO localhost\r\n")
        assert read_replies(sock, 1)[0].startswith(b"500")
        sock.sendall(
            b"LHLO localhost\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\n"
            b"RCPT TO:<carol@example.org>\r\nDATA\r\n"
        )
        read_replies(sock, 5)
        sock.sendall(make_message("lmtp") + b".\r\n")
        replies = read_replies(sock, 2)
        sock.close()
        # bob (outbound) cannot be signed: deferred; carol (inbound) is taken.
        assert replies[0].startswith(b"451 4.7.1 ")
        assert replies[1].startswith(b"250 2.0.0 <carol@example.org> OK queued as ")
        [message] = delivered(relay, tmp_path, 1)
        assert message["Delivered-To"] == "carol@example.org"


class RejectsInCompany:
    """Refuses dave@example.net only in a message with other outside recipients, so the
    refusal comes from the pipeline at DATA, after every RCPT was taken."""

    @hookimpl
    def sealrelay_resolve_policy(self, recipient: str, envelope):
        if recipient == "dave@example.net" and len(envelope.recipients) > 1:
            raise RejectMessage("dave takes no group mail")


def test_recipients_rejected_at_data_are_bounced_after_250(tmp_path):
    with running(config_for(tmp_path), {"company": RejectsInCompany()}) as relay:
        refused = relay.send(
            "alice@example.org",
            ["bob@example.net", "dave@example.net", "carol@example.org"],
            make_message("group"),
        )
        assert refused == {}
        messages = delivered(relay, tmp_path, 3)
    by_recipient = {m["Delivered-To"]: m for m in messages}
    assert set(by_recipient) == {"bob@example.net", "carol@example.org", "alice@example.org"}
    dsn = by_recipient["alice@example.org"]
    assert dsn["Return-Path"] == "<>"
    assert dsn.get_content_type() == "multipart/report"
    status = next(p for p in dsn.walk() if p.get_content_type() == "message/delivery-status")
    text = status.as_string()
    assert "Final-Recipient: rfc822; dave@example.net" in text
    assert "Status: 5.7.1" in text
    assert "dave takes no group mail" in dsn.as_string()


class SlowToFinish:
    """Holds each message in the pipeline for a moment after processing it."""

    def __init__(self) -> None:
        self.processing = threading.Event()

    @hookimpl
    def sealrelay_message_processed(self) -> None:
        self.processing.set()
        time.sleep(0.5)


def test_a_message_spooled_after_its_client_left_is_still_delivered(tmp_path):
    slow = SlowToFinish()
    config = config_for(tmp_path)
    with running(config, {"slow": slow}) as relay:
        with socket.create_connection(("127.0.0.1", relay.port)) as raw:
            raw.sendall(
                b"EHLO client.test\r\nMAIL FROM:<alice@example.org>\r\n"
                b"RCPT TO:<bob@example.net>\r\nDATA\r\n"
            )
            while not raw.recv(4096).rstrip().endswith(b"354 End data with <CR><LF>.<CR><LF>"):
                pass
            raw.sendall(make_message("orphan") + b"\r\n.\r\n")
            assert slow.processing.wait(10)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # Gone before its reply (no 250 seen: the client sends again, a duplicate at worst);
        # what was spooled is delivered all the same, not left locked until the next start.
        wait_until(lambda: len(maildir_messages(tmp_path / "outbox")) == 1, what="delivery")
        relay.drain()
        assert Spool.for_config(config).entry_ids() == []


def test_a_certificate_that_cannot_be_loaded_is_a_config_error(tmp_path):
    config = config_for(
        tmp_path,
        smtp={"tls_certificate": str(tmp_path / "no.pem"), "tls_key": str(tmp_path / "no.key")},
    )
    relay = Relay(config)
    with pytest.raises(ConfigError, match=r"\[smtp\] tls_certificate/tls_key: cannot load"):
        relay.plugins.pm.hook.sealrelay_create_frontends(config=relay.config, bus=relay.bus)
    relay.loop.close()
