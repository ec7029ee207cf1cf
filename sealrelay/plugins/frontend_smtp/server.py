"""The SMTP/LMTP listener: aiosmtpd with a chunked DATA reader, limits, AUTH and the spool.

Replies follow RFC 5321 and RFC 3463; every failure after DATA is answered 4xx or 5xx, and 250
only once the processed message is synced to disk in the spool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import ipaddress
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, cast

import attrs
from aiosmtpd.smtp import SMTP, AuthResult, syntax

from sealrelay.core.address import Address, AddressError
from sealrelay.core.bus import MessageBus
from sealrelay.core.config import Config, split_listen
from sealrelay.core.envelope import Envelope
from sealrelay.core.results import RecipientFailure
from sealrelay.exceptions import ConfigError
from sealrelay.spool.dsn import build_dsn
from sealrelay.spool.store import Claim, EntryMeta, FailedRecipient, Spool, SpoolError


log = logging.getLogger(__name__)

#: Message data is read in windows of this size, scanning each for CRLF.CRLF in C.
_DATA_WINDOW: Final = 1 << 16
_TERMINATOR: Final = b"\r\n.\r\n"
_ACCEPT_BACKLOG: Final = 512
#: A MAIL or RCPT path as nearly every client sends it: <dot-atom@domain>, then parameters.
_PLAIN_PATH: Final = re.compile(
    r"[ \t]*<([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(?:[ \t]+([^ \t(].*))?"
)

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: How long, and for how many (sender, recipient) pairs, an RCPT TO acceptance is remembered.
_ACCEPTED_PAIR_SECONDS: Final = 5.0
_ACCEPTED_PAIRS_KEPT: Final = 4096

#: Checks a login and password in a worker thread; the subscriber's address or None.
CredentialCheck = Callable[[str, str], "str | None"]


class SmtpFrontend:
    """``[smtp] listen`` in this worker process. Implements :class:`~sealrelay.Frontend`."""

    name = "smtp"

    def __init__(
        self,
        *,
        config: Config,
        bus: MessageBus,
        spool: Spool,
        hostname: str,
        on_spooled: Callable[[Sequence[Claim]], None],
        check_credentials: CredentialCheck | None = None,
    ) -> None:
        self.config = config
        self.bus = bus
        self.spool = spool
        self.hostname = hostname
        self.on_spooled = on_spooled
        self.check_credentials = check_credentials
        self.local_domains = frozenset(config.routing.local_domains)
        self.relay_networks = [
            ipaddress.ip_network(n, strict=False) for n in config.smtp.relay_networks
        ]
        self.tls_context = _tls_context(config)
        self.connections: set[RelaySMTP] = set()
        self.closing = False
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._server: asyncio.Server | None = None
        #: (sender, recipient) -> until when check_rcpt accepts the pair without asking.
        self._accepted_pairs: dict[tuple[str, str], float] = {}
        # Its own few threads: the pipeline is mostly Python holding the GIL, so more threads
        # add little but GIL hand-overs (strace counted about 18 futex calls per message with
        # one thread, 90 with two, 125 with asyncio's default of six).
        self._pipeline = concurrent.futures.ThreadPoolExecutor(
            config.smtp.pipeline_threads, thread_name_prefix="sealrelay-pipeline"
        )

    # -- Frontend -------------------------------------------------------------------------

    async def start(self) -> None:
        host, port = split_listen(self.config.smtp.listen)
        sock = listening_socket(host, port)
        protocol = RelayLMTP if self.config.smtp.protocol == "lmtp" else RelaySMTP
        self._server = await asyncio.get_running_loop().create_server(
            lambda: protocol(self), sock=sock
        )

    async def stop(self) -> None:
        """Stop accepting; let transactions in DATA finish; close the rest with 421."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=self.config.smtp.shutdown_timeout)
        for connection in list(self.connections):
            connection.say_goodbye("421 4.3.2 Service shutting down, try again later")
        if self._server is not None:
            await self._server.wait_closed()
        # A message whose client left is still being spooled: the interpreter waits for it
        # at exit, and its entries go to delivery (see process).
        self._pipeline.shutdown(wait=False)

    # -- bookkeeping for the protocol -----------------------------------------------------

    def enter_data(self) -> None:
        self._busy += 1
        self._idle.clear()

    def leave_data(self) -> None:
        self._busy -= 1
        if self._busy == 0:
            self._idle.set()

    def may_relay(self, peer: Any, authenticated: bool) -> bool:
        return authenticated or _in_networks(peer, self.relay_networks)

    def is_local(self, address: Address) -> bool:
        return address.domain in self.local_domains

    # -- the work of one message ----------------------------------------------------------

    async def check_rcpt(self, sender: str, recipient: str) -> str | None:
        """The RCPT TO refusal for an outbound recipient whose policy cannot be met, or None.

        A pair accepted in the last few seconds is accepted again without asking the bus,
        which saves a trip to a worker thread per recipient. That is safe because the DATA
        phase decides again with the message in hand: a stale acceptance only turns a refusal
        at RCPT into one after DATA (a 550 or a bounce), never into mail sent against policy.
        """
        pair = (sender, recipient)
        now = time.monotonic()
        if self._accepted_pairs.get(pair, 0.0) > now:
            return None
        failure = await asyncio.get_running_loop().run_in_executor(
            self._pipeline, self.bus.check_recipient, sender, recipient
        )
        if failure is None:
            if len(self._accepted_pairs) >= _ACCEPTED_PAIRS_KEPT:
                self._accepted_pairs.clear()
            self._accepted_pairs[pair] = now + _ACCEPTED_PAIR_SECONDS
            return None
        if failure.temporary:
            return f"450 4.7.1 <{recipient}>: {_one_line(failure.reason)}"
        return f"550 5.7.1 <{recipient}>: {_one_line(failure.reason)}"

    async def process(
        self,
        *,
        sender: str,
        recipients: Sequence[str],
        content: bytes,
        peer: Any,
        authenticated_as: str | None,
        per_recipient: bool,
    ) -> str:
        """Run the pipelines for one message and spool the results; the reply (for LMTP one
        line per recipient).

        Pipelines and spool share one worker thread: every hand-off between the loop and a
        thread costs tens of microseconds of CPU and wakes two threads.
        """
        # Made in the thread: normalising its addresses is work the loop need not do.
        envelope = functools.partial(
            Envelope,
            sender=sender,
            recipients=tuple(recipients),
            client_address=_peer_host(peer),
            authenticated_as=authenticated_as,
        )
        work = asyncio.get_running_loop().run_in_executor(
            self._pipeline, self._accept, envelope, content, per_recipient
        )
        # Spooled entries go to delivery even when the client is gone (aiosmtpd cancels the
        # handler when the connection drops): once stored, nothing may sit unsent.
        return await asyncio.shield(asyncio.ensure_future(self._reply_when_durable(work)))

    async def _reply_when_durable(self, work: asyncio.Future[_Accepted]) -> str:
        """The reply once the spooled entries are on disk; they go to delivery then. The
        pipeline thread did not wait for the disk: it took the next message meanwhile."""
        accepted = await work
        durable = accepted.durable
        if durable is not None:
            try:
                if not durable.done():
                    await asyncio.wrap_future(durable)
                durable.result()
            except SpoolError as error:
                for claim in accepted.claims:
                    claim.release()  # not delivered: the sender was not told 250
                return accepted.if_not_durable(_spool_failure(error))
        self.on_spooled(accepted.claims)
        return accepted.reply

    def _accept(
        self, envelope: Callable[[], Envelope], content: bytes, per_recipient: bool
    ) -> _Accepted:
        """The pipelines and the spool for one message, in a worker thread (blocking)."""
        base = envelope()
        local = [r for r in base.recipients if self.is_local(Address.parse(r))]
        remote = [r for r in base.recipients if r not in local]
        entries: list[tuple[EntryMeta, bytes]] = []
        refused: dict[str, RecipientFailure] = {}
        received = base.received_at.timestamp()

        def entry(kind: str, to: Sequence[str], data: bytes) -> None:
            meta = EntryMeta(
                id=f"{base.id}-{len(entries) + 1}",
                sender=base.sender,
                recipients=tuple(to),
                kind=kind,
                received_at=received,
                transaction=base.id,
                client_address=base.client_address,
            )
            entries.append((meta, data))

        if remote:
            outbound_envelope = base if not local else attrs.evolve(base, recipients=remote)
            outbound = self.bus.process_outbound(outbound_envelope, content)
            for message in outbound.messages:
                entry("outbound", message.recipients, message.content)
            for failure in (*outbound.rejected, *outbound.deferred):
                refused[failure.recipient] = failure
        if local:
            inbound_envelope = attrs.evolve(base, recipients=tuple(local), direction="inbound")
            for recipient in local:
                result = self.bus.process_inbound(inbound_envelope, content, recipient)
                entry("inbound", (recipient,), result.content)

        if per_recipient:
            return self._settle_lmtp(base, entries, refused)
        return self._settle_smtp(base, entries, refused, content)

    def _settle_smtp(
        self,
        base: Envelope,
        entries: list[tuple[EntryMeta, bytes]],
        refused: dict[str, RecipientFailure],
        content: bytes,
    ) -> _Accepted:
        deferred = [f for f in refused.values() if f.temporary]
        if deferred:
            # One reply for all recipients: nothing is spooled, the client tries them all again.
            return _Accepted(f"451 4.7.1 {_one_line(deferred[0].reason)}")
        if not entries:
            first = next(iter(refused.values()))
            return _Accepted(f"550 5.7.1 {_one_line(first.reason)}")
        if refused and base.sender:
            # Accepted for some: the others are bounced, as an MTA does after 250.
            entries.append(self._dsn_entry(base, content, refused.values(), len(entries) + 1))
        spooled = self._spool(entries)
        if isinstance(spooled, str):
            return _Accepted(spooled)
        claims, durable = spooled
        return _Accepted(f"250 2.0.0 OK queued as {base.id}", claims, durable)

    def _settle_lmtp(
        self,
        base: Envelope,
        entries: list[tuple[EntryMeta, bytes]],
        refused: dict[str, RecipientFailure],
    ) -> _Accepted:
        replies = functools.partial(_lmtp_replies, base, refused)
        if not entries:
            return _Accepted(replies(None))
        spooled = self._spool(entries)
        if isinstance(spooled, str):
            return _Accepted(replies(spooled))
        claims, durable = spooled
        return _Accepted(replies(None), claims, durable, if_not_durable=replies)

    def _dsn_entry(
        self,
        base: Envelope,
        content: bytes,
        failures: Iterable[RecipientFailure],
        number: int,
    ) -> tuple[EntryMeta, bytes]:
        meta = EntryMeta(
            id=f"{base.id}-{number}",
            sender="",
            recipients=(base.sender,),
            kind="dsn",
            received_at=base.received_at.timestamp(),
            transaction=base.id,
        )
        original = EntryMeta(
            id=base.id,
            sender=base.sender,
            recipients=base.recipients,
            kind="outbound",
            received_at=base.received_at.timestamp(),
        )
        failed = [
            FailedRecipient(recipient=f.recipient, status="5.7.1", diagnostic=f.reason)
            for f in failures
        ]
        dsn = build_dsn(
            reporting_mta=self.hostname,
            original=original,
            original_content=content,
            failures=failed,
        )
        return meta, dsn

    def _spool(
        self, entries: list[tuple[EntryMeta, bytes]]
    ) -> tuple[list[Claim], concurrent.futures.Future[None]] | str:
        """Write the entries: their claims and the future of their durability, or the 4xx
        reply when they could not be written."""
        try:
            return self.spool.store_for_delivery(entries)
        except SpoolError as error:
            return _spool_failure(error)


def _spool_failure(error: SpoolError) -> str:
    log.error("cannot spool a message: %s", error)
    if error.no_space:
        return "452 4.3.1 Insufficient system storage, try again later"
    return "451 4.3.0 Cannot queue the message, try again later"


def _lmtp_replies(
    base: Envelope, refused: dict[str, RecipientFailure], spool_failure: str | None
) -> str:
    """One reply line per recipient: its refusal, the spool's failure, or 250."""
    replies = []
    for recipient in base.recipients:
        failure = refused.get(recipient)
        if failure is not None:
            code = "451 4.7.1" if failure.temporary else "550 5.7.1"
            replies.append(f"{code} <{recipient}>: {_one_line(failure.reason)}")
        elif spool_failure is not None:
            replies.append(spool_failure)
        else:
            replies.append(f"250 2.0.0 <{recipient}> OK queued as {base.id}")
    return "\r\n".join(replies)


def _same(reply: str) -> str:
    return reply


@attrs.frozen
class _Accepted:
    """What became of one message: the reply, and its spooled entries, claimed for delivery
    once *durable* completes (the reply stands only then)."""

    reply: str
    claims: list[Claim] = attrs.Factory(list)
    durable: concurrent.futures.Future[None] | None = None
    #: The reply to send instead, given the spool's failure reply, if *durable* fails.
    if_not_durable: Callable[[str], str] = _same


class RelaySMTP(SMTP):
    """aiosmtpd's protocol with this relay's limits, DATA reader, AUTH and replies."""

    def __init__(self, frontend: SmtpFrontend) -> None:
        smtp = frontend.config.smtp
        super().__init__(
            _Handler(frontend),
            data_size_limit=smtp.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=frontend.hostname,
            ident="sealrelay",
            tls_context=frontend.tls_context,
            timeout=smtp.command_timeout,
            auth_require_tls=True,
            authenticator=_refuse_all,
        )
        self.frontend = frontend
        self._offered_auth = False
        self._credentials: tuple[str, bytes, bytes] | None = None

    # -- connection limits and shutdown ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.session is not None and self._original_transport is None:
            # AUTH without TLS only for loopback clients (a local webmail, a test client).
            self._auth_require_tls = not _is_loopback(self.session.peer)

    async def _handle_client(self) -> None:
        frontend = self.frontend
        if frontend.closing or len(frontend.connections) >= frontend.config.smtp.max_connections:
            reply = (
                "421 4.3.2 Service shutting down, try again later"
                if frontend.closing
                else "421 4.7.0 Too many connections, try again later"
            )
            self.say_goodbye(reply)
            return
        frontend.connections.add(self)
        try:
            await super()._handle_client()
        finally:
            frontend.connections.discard(self)

    def say_goodbye(self, reply: str) -> None:
        """Send a final reply and close, outside the command loop (limits, shutdown)."""
        transport = cast(asyncio.WriteTransport | None, self.transport)
        if transport is not None and not transport.is_closing():
            transport.write(reply.encode("ascii") + b"\r\n")
            transport.close()

    def _timeout_cb(self) -> None:
        log.info("%r timeout", self.session.peer if self.session else None)
        self.say_goodbye(f"421 4.4.2 {self.frontend.hostname} Error: timeout exceeded")

    # -- AUTH -----------------------------------------------------------------------------

    def _authenticate(self, mechanism: str, auth_data: Any) -> AuthResult:
        # aiosmtpd decodes PLAIN and LOGIN and calls this synchronously; the check itself
        # may reach a database, so it runs later in a thread (see _check_auth).
        self._credentials = (mechanism, auth_data.login, auth_data.password)
        return AuthResult(success=False, handled=False)

    async def auth_PLAIN(self, server: Any, args: list[str]) -> AuthResult:  # noqa: N802
        return await self._check_auth(await super().auth_PLAIN(server, args))

    async def auth_LOGIN(self, server: Any, args: list[str]) -> AuthResult:  # noqa: N802
        return await self._check_auth(await super().auth_LOGIN(server, args))

    async def _check_auth(self, parsed: AuthResult) -> AuthResult:
        credentials, self._credentials = self._credentials, None
        check = self.frontend.check_credentials
        if credentials is None or check is None:
            return parsed
        _, login, password = credentials
        try:
            address = await asyncio.to_thread(
                check,
                login.decode("utf-8", "replace"),
                password.decode("utf-8", "replace"),
            )
        except Exception:
            log.exception("checking credentials failed")
            return AuthResult(
                success=False, handled=False, message="454 4.7.0 Temporary authentication failure"
            )
        if address is None:
            return AuthResult(success=False, handled=False)  # not handled: aiosmtpd sends 535
        return AuthResult(success=True, auth_data=address)

    # -- MAIL and RCPT --------------------------------------------------------------------

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # aiosmtpd reads every path with the email package's header parser (about 50 us);
        # the plain form is read here with the same result, anything else goes there.
        plain = _PLAIN_PATH.fullmatch(arg)
        if plain is None or self.local_part_limit:
            return super()._getaddr(arg)
        return plain.group(1), plain.group(2) or ""

    # -- DATA -----------------------------------------------------------------------------

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        envelope = self.envelope
        assert envelope is not None  # set on connection  # noqa: S101
        if not envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        if self.frontend.closing:
            self.say_goodbye("421 4.3.2 Service shutting down, try again later")
            return
        self.frontend.enter_data()
        try:
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            content, problem = await self._read_data()
            if problem is not None:
                self._set_post_data_state()  # type: ignore[no-untyped-call]
                await self.push(problem)
                return
            envelope.content = envelope.original_content = content
            status = await self._call_handler_hook("DATA")
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            await self.push(status)
        except Exception:
            # aiosmtpd answers it (handle_exception: 451); the transaction is over either way.
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            raise
        finally:
            self.frontend.leave_data()

    async def _read_data(self) -> tuple[bytes, str | None]:
        """The message (dot-unstuffed) and None, or b"" and the reply refusing it.

        aiosmtpd reads DATA line by line (about 20 ms of CPU per MB); this scans windows of
        the stream for CRLF.CRLF with the StreamReader's own search instead. A CRLF is put in
        front of the stream so the terminator and dot-stuffing look the same on line one.
        """
        smtp = self.frontend.config.smtp
        reader: Any = self._reader  # its buffer and limit are private: see above
        reader._buffer[0:0] = b"\r\n"
        saved_limit = reader._limit
        reader._limit = _DATA_WINDOW
        parts: list[bytes] = []
        size = 0
        too_big = False
        try:
            while True:
                self._reset_timeout(smtp.data_timeout)
                try:
                    chunk = await reader.readuntil(_TERMINATOR)
                    done = True
                except asyncio.LimitOverrunError as error:
                    # Not found within the window: take all but a possible partial terminator.
                    chunk = await reader.readexactly(error.consumed)
                    done = False
                size += len(chunk)
                if size - len(_TERMINATOR) > smtp.max_message_size:
                    too_big = True
                    parts.clear()
                elif not too_big:
                    parts.append(chunk)
                if done:
                    break
        finally:
            reader._limit = saved_limit
            if self.transport is not None:  # not after the connection was lost
                self._reset_timeout()
        if too_big:
            return b"", (f"552 5.3.4 Message too big: the limit is {smtp.max_message_size} bytes")
        data = b"".join(parts)
        if _line_too_long(data, smtp.max_line_length):
            return b"", (
                f"500 5.5.2 Line too long: the limit is {smtp.max_line_length} octets "
                "(RFC 5322 2.1.1)"
            )
        return data[: -len(b".\r\n")].replace(b"\r\n.", b"\r\n")[2:], None


class RelayLMTP(RelaySMTP):
    """LMTP (RFC 2033): LHLO instead of HELO/EHLO, and one reply per recipient after DATA."""

    @syntax("LHLO hostname")
    async def smtp_LHLO(self, arg: str) -> None:  # noqa: N802
        await super().smtp_EHLO(arg)

    async def smtp_HELO(self, arg: str) -> None:  # noqa: N802
        await self.push('500 5.5.1 Error: command "HELO" not recognized')

    async def smtp_EHLO(self, arg: str) -> None:  # noqa: N802
        await self.push('500 5.5.1 Error: command "EHLO" not recognized')


class _Handler:
    """aiosmtpd handler hooks: EHLO extensions, MAIL, RCPT checks, DATA processing."""

    def __init__(self, frontend: SmtpFrontend) -> None:
        self.frontend = frontend

    async def handle_EHLO(  # noqa: N802
        self, server: RelaySMTP, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        offered = [
            line
            for line in responses
            if not line.startswith("250-AUTH") or self.frontend.check_credentials is not None
        ]
        offered.insert(-1, "250-PIPELINING")
        offered.insert(-1, "250-ENHANCEDSTATUSCODES")
        return offered

    async def handle_MAIL(  # noqa: N802
        self, server: RelaySMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        try:
            sender = "<>" if address in ("", "<>") else str(Address.parse(address))
        except AddressError as error:
            return f"553 5.1.7 Bad sender address: {error}"
        if session.authenticated and not _same_mailbox(sender, session.auth_data):
            # The relay signs with the sender's key: a logged-in subscriber sends as itself only.
            return f"553 5.7.1 <{sender}>: you are logged in as {session.auth_data}; send as that"
        envelope.mail_from = sender
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(  # noqa: N802
        self, server: RelaySMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        frontend = self.frontend
        if len(envelope.rcpt_tos) >= frontend.config.smtp.max_recipients:
            return "452 4.5.3 Too many recipients"
        try:
            parsed = Address.parse(address)
        except AddressError as error:
            return f"553 5.1.3 Bad recipient address: {error}"
        recipient = str(parsed)
        if recipient in envelope.rcpt_tos:
            return "250 2.1.5 OK (duplicate ignored)"
        if not frontend.is_local(parsed):
            if not frontend.may_relay(session.peer, bool(session.authenticated)):
                return f"554 5.7.1 <{recipient}>: Relay access denied"
            sender = "" if envelope.mail_from == "<>" else envelope.mail_from
            refusal = await frontend.check_rcpt(sender, recipient)
            if refusal is not None:
                return refusal
        envelope.rcpt_tos.append(recipient)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_DATA(  # noqa: N802
        self, server: RelaySMTP, session: Any, envelope: Any
    ) -> str:
        frontend = self.frontend
        try:
            return await frontend.process(
                sender="" if envelope.mail_from == "<>" else envelope.mail_from,
                recipients=list(envelope.rcpt_tos),
                content=envelope.original_content,
                peer=session.peer,
                authenticated_as=session.auth_data if session.authenticated else None,
                per_recipient=isinstance(server, RelayLMTP),
            )
        except Exception:
            log.exception("processing a message from %r failed", session.peer)
            reply = "451 4.3.0 Internal error while processing the message, try again later"
            if isinstance(server, RelayLMTP):
                return "\r\n".join(reply for _ in envelope.rcpt_tos)
            return reply

    async def handle_exception(self, error: Exception) -> str:
        log.error("SMTP session error: %s: %s", type(error).__name__, error, exc_info=error)
        return "451 4.3.0 Internal error, try again later"


def _line_too_long(data: bytes, limit: int) -> bool:
    """Whether a line of dot-stuffed *data* is longer than *limit* octets once unstuffed.

    Goes from the last line end in one window of the limit's size to the next, so that 1 MB
    of ordinary lines takes about a thousand searches in C; only data with a line that may be
    over the limit is split into lines.
    """
    window = limit + 2  # the longest line taken as it is, and its CRLF
    start = 0
    while len(data) - start > window:
        line_end = data.rfind(b"\r\n", start, start + window)
        if line_end == -1:
            return _long_unstuffed_line(data, limit)
        start = line_end + 2
    return False


def _long_unstuffed_line(data: bytes, limit: int) -> bool:
    lines = data.split(b"\r\n")
    # Only a line at one over the limit can come under it, by its stuffing dot.
    return any(len(line) - line.startswith(b".") > limit for line in lines if len(line) > limit)


def _refuse_all(*_args: Any) -> AuthResult:
    return AuthResult(success=False, handled=False)


def listening_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket that other worker processes can bind too (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not the default 0: asyncio switches Nagle's algorithm off (TCP_NODELAY) only
    # on connections whose socket says TCP. With it on, the replies to pipelined commands
    # waited for the client's delayed ACK, 40 ms per transaction.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(_ACCEPT_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _tls_context(config: Config) -> ssl.SSLContext | None:
    smtp = config.smtp
    if not smtp.tls_certificate:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate, key = config.resolve(smtp.tls_certificate), config.resolve(smtp.tls_key)
    try:
        context.load_cert_chain(certificate, key)
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(
            f"[smtp] tls_certificate/tls_key: cannot load {certificate} and {key}: {error}"
        ) from None
    return context


def _peer_host(peer: Any) -> str | None:
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return None


def _is_loopback(peer: Any) -> bool:
    host = _peer_host(peer)
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _in_networks(
    peer: Any, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> bool:
    host = _peer_host(peer)
    if host is None:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in networks)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _same_mailbox(sender: str, login_address: object) -> bool:
    try:
        return Address.parse(sender).lookup_key == Address.parse(str(login_address)).lookup_key
    except AddressError:
        return False
