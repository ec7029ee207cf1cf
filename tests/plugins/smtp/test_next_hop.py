"""Delivery to an SMTP next hop: PIPELINING, STARTTLS, connections the next hop closed, and
the message arriving exactly as sent (dot-stuffing, line ends)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time

import pytest

from sealrelay.spool.smtp_client import (
    ConnectionClosed,
    NextHopError,
    SmtpConnection,
    Transaction,
    wire_form,
)
from sealrelay.spool.store import Spool
from tests.plugins.smtp.harness import (
    Sink,
    config_for,
    free_port,
    make_certificate,
    make_message,
    running,
)


def smtp_config(tmp_path, port: int, **sections):
    return config_for(tmp_path, smtp={"next_hop": f"smtp://127.0.0.1:{port}"}, **sections)


@pytest.fixture
def pipelining_sink():
    server = Sink(pipelining=True).start()
    yield server
    server.stop()


def test_a_pipelining_next_hop_takes_some_recipients_and_the_others_bounce(
    tmp_path, pipelining_sink
):
    sink = pipelining_sink
    sink.refuse_rcpt = lambda a: "550 5.1.1 no such user" if a.startswith("nobody") else None
    with running(smtp_config(tmp_path, sink.port)) as relay:
        relay.send(
            "alice@example.org",
            ["bob@example.net", "nobody@example.net", "carol@example.net"],
            make_message("some of them"),
        )
        received = sink.wait_for(2)
        relay.drain()
    by_sender = {sender: (rcpts, content) for sender, rcpts, content in received}
    assert by_sender["alice@example.org"][0] == ["bob@example.net", "carol@example.net"]
    recipients, dsn = by_sender["<>"]
    assert recipients == ["alice@example.org"]
    assert b"Final-Recipient: rfc822; nobody@example.net" in dsn
    assert b"Diagnostic-Code: smtp; 550 5.1.1 no such user" in dsn


def test_a_pipelining_next_hop_refusing_everyone_leaves_the_connection_usable(
    tmp_path, pipelining_sink
):
    sink = pipelining_sink
    sink.refuse_rcpt = lambda a: "550 5.1.1 no such user" if a.startswith("nobody") else None
    with running(smtp_config(tmp_path, sink.port)) as relay:
        relay.send("alice@example.org", ["nobody@example.net"], make_message("nobody"))
        [(sender, recipients, _)] = sink.wait_for(1)  # the bounce, over the same connection
        relay.drain()
        relay.send("alice@example.org", ["bob@example.net"], make_message("somebody"))
        received = sink.wait_for(2)
        relay.drain()
    assert (sender, recipients) == ("<>", ["alice@example.org"])
    assert received[1][:2] == ("alice@example.org", ["bob@example.net"])
    assert b"Subject: somebody" in received[1][2]


def test_the_message_arrives_as_sent_with_dots_and_line_ends_as_smtp_needs(tmp_path):
    # A line starting with a dot goes out stuffed and arrives unstuffed; a bare LF (which
    # SMTP does not allow) goes out as CRLF.
    body = ".hidden line\r\n..two dots\r\nbare\nline feed\r\n.\r\nend\r\n"
    message = make_message("dots", body)
    for pipelining in (False, True):
        sink = Sink(pipelining=pipelining).start()
        try:
            with running(smtp_config(tmp_path / str(pipelining), sink.port)) as relay:
                relay.send("alice@example.org", ["bob@example.net"], message)
                [(_, _, content)] = sink.wait_for(1)
                relay.drain()
        finally:
            sink.stop()
        assert content == message.replace(b"bare\nline", b"bare\r\nline")


def test_starttls_when_the_next_hop_offers_it(tmp_path):
    certificate, key = make_certificate(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(certificate, key)
    sink = Sink(tls=tls).start()
    try:
        # Opportunistic TLS (tls_verify = false) takes the self-signed certificate.
        with running(smtp_config(tmp_path, sink.port)) as relay:
            relay.send("alice@example.org", ["bob@example.net"], make_message("private"))
            sink.wait_for(1)
            relay.drain()
    finally:
        sink.stop()
    assert sink.over_tls == [True]


@pytest.mark.parametrize("pipelining", [False, True])
def test_a_pooled_connection_the_next_hop_closed_is_replaced_at_once(tmp_path, pipelining):
    sink = Sink(pipelining=pipelining).start()
    sink.hang_ups = 1  # the connection of the first message, once it is idle in the pool
    # A deferral would wait a minute: the second message must not need a retry.
    config = smtp_config(tmp_path, sink.port, delivery={"retry_initial": 60})
    try:
        with running(config) as relay:
            relay.send("alice@example.org", ["bob@example.net"], make_message("first"))
            sink.wait_for(1)
            relay.drain()
            time.sleep(0.3)  # the sink has closed it
            relay.send("alice@example.org", ["bob@example.net"], make_message("second"))
            received = sink.wait_for(2, timeout=10)
            relay.drain()
            assert b"Subject: second" in received[1][2]
            assert Spool.for_config(config).entry_ids() == []
    finally:
        sink.stop()


# -- the client against a next hop that does what aiosmtpd does not ------------------------


class ScriptedNextHop:
    """A next hop that answers from a script and records what the client wrote, read by
    read: it shows which commands came in one write."""

    def __init__(
        self,
        replies: dict[bytes, bytes],
        *,
        tls: ssl.SSLContext | None = None,
        hang_up: bytes | None = None,
    ) -> None:
        #: The reply to each command (its first word, or b"." for the end of the data).
        self.replies = replies
        #: Offered with STARTTLS.
        self.tls = tls
        #: Said after the first message, before closing the connection (as a timeout does).
        self.hang_up = hang_up
        self.reads: list[bytes] = []
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> ScriptedNextHop:
        self._thread.start()
        server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._session, "127.0.0.1", self.port), self._loop
        )
        self._server = server.result(10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        async def close() -> None:
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 scripted ESMTP\r\n")
        in_data = False
        with contextlib.closing(writer), contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                self.reads.append(chunk)
                for line in chunk.split(b"\r\n")[:-1]:
                    if in_data:
                        if line == b".":
                            in_data = False
                            writer.write(self.replies[b"."])
                            if self.hang_up is not None:
                                writer.write(self.hang_up)
                                return
                        continue
                    word = line.split(b" ", 1)[0].split(b":", 1)[0].upper()
                    if word == b"STARTTLS" and self.tls is not None:
                        writer.write(b"220 go ahead\r\n")
                        await writer.drain()
                        try:
                            await writer.start_tls(self.tls)
                        except (OSError, ssl.SSLError):
                            writer.close()
                            return
                        continue
                    reply = self.replies.get(word, b"250 ok\r\n")
                    in_data = word == b"DATA" and reply.startswith(b"354")
                    writer.write(reply)
                await writer.drain()


def test_the_envelope_goes_in_one_write_and_a_wrong_go_ahead_sends_nothing():
    replies = {
        b"EHLO": b"250-scripted\r\n250-PIPELINING\r\n250 SIZE 1000000\r\n",
        b"RCPT": b"550 5.1.1 no such user\r\n",
        # Wrong after refusing every recipient (RFC 2920 3.1), but some servers do it.
        b"DATA": b"354 go ahead\r\n",
        b".": b"554 5.5.1 no valid recipients\r\n",
    }

    async def send() -> tuple[Transaction, bool]:
        connection = await SmtpConnection.open(
            "127.0.0.1", hop.port, local_hostname="relay.test", timeout=5, tls=None
        )
        try:
            answer = await connection.send("a@b.example", ["c@d.example"], b"Subject: x\r\n", [])
            return answer, connection.is_open
        finally:
            await connection.quit()

    with ScriptedNextHop(replies) as hop:
        answer, still_open = asyncio.run(send())
    envelope = b"MAIL FROM:<a@b.example> SIZE=15\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"
    assert envelope in hop.reads
    # Only the end of the data went after the go-ahead, so that nothing was delivered.
    assert b".\r\n" in hop.reads
    assert not any(b"Subject: x" in read for read in hop.reads)
    assert [str(r) for r in answer.recipients] == ["550 5.1.1 no such user"]
    assert still_open


def test_wire_form_changes_only_what_smtp_needs():
    ready = b"Subject: x\r\n\r\nbody\r\n"
    assert wire_form(ready) == ready + b".\r\n"
    assert wire_form(b"no line end") == b"no line end\r\n.\r\n"
    assert wire_form(b".a\r\nb\n.c\rd") == b"..a\r\nb\r\n..c\r\nd\r\n.\r\n"
    assert wire_form(b"") == b"\r\n.\r\n"


def test_tls_verify_refuses_a_next_hop_whose_certificate_does_not_verify(tmp_path):
    certificate, key = make_certificate(tmp_path)
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(certificate, key)
    replies = {b"EHLO": b"250-scripted\r\n250 STARTTLS\r\n"}

    async def connect() -> None:
        await SmtpConnection.open(
            "127.0.0.1",
            hop.port,
            local_hostname="relay.test",
            timeout=5,
            tls=ssl.create_default_context(),  # what tls_verify = true uses
        )

    with (
        ScriptedNextHop(replies, tls=server_side) as hop,
        pytest.raises(NextHopError, match=r"STARTTLS failed.*CERTIFICATE_VERIFY_FAILED"),
    ):
        asyncio.run(connect())


def test_a_connection_the_next_hop_ended_with_421_is_reported_closed_not_refusing():
    # An idle connection's end: the 421 comes unasked, then the close. Read as the answer to
    # the next MAIL FROM it would defer the message; it means "take another connection".
    replies = {b"DATA": b"354 go ahead\r\n", b".": b"250 2.0.0 queued\r\n"}

    async def send_twice() -> str:
        connection = await SmtpConnection.open(
            "127.0.0.1", hop.port, local_hostname="relay.test", timeout=5, tls=None
        )
        try:
            first = await connection.send("a@b.example", ["c@d.example"], b"one\r\n", [])
            assert first.data is not None
            assert first.data.code == 250
            await asyncio.sleep(0.2)  # the 421 and the close arrive
            with pytest.raises(ConnectionClosed, match=r"421 4\.4\.2 idle for too long"):
                await connection.send("a@b.example", ["c@d.example"], b"two\r\n", [])
            return "closed" if not connection.is_open else "open"
        finally:
            connection.close()

    with ScriptedNextHop(replies, hang_up=b"421 4.4.2 idle for too long\r\n") as hop:
        assert asyncio.run(send_twice()) == "closed"
