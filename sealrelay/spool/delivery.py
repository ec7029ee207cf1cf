"""Delivery from the spool to the next hop, with retries, bounces and at-least-once bookkeeping.

Every worker process runs a :class:`DeliveryRunner`. Entries its own front end just spooled
are handed over at once; a periodic look at the spool finds retries that became due and
entries a dead worker left behind. A ``flock`` per entry keeps two workers off one message.

After each attempt the outcome per recipient is recorded (fsynced) before anything else
happens, so a crash between the next hop's 250 and that record sends the message once more
to that recipient at worst. Maildir delivery names its files after the entry and recipient
and skips a file that is already there, so it does not even duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, Protocol
from urllib.parse import urlsplit

import aiosmtplib
import attrs

from sealrelay.core.config import Config
from sealrelay.exceptions import ConfigError
from sealrelay.spool.dsn import build_dsn
from sealrelay.spool.store import (
    Claim,
    EntryMeta,
    EntryState,
    FailedRecipient,
    Spool,
    SpoolError,
)


log = logging.getLogger(__name__)

DELIVERED: Final = "delivered"
TEMPORARY: Final = "temporary"
PERMANENT: Final = "permanent"

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


@attrs.frozen(kw_only=True)
class Outcome:
    """What happened to one recipient in one attempt."""

    recipient: str
    status: str = attrs.field(validator=attrs.validators.in_((DELIVERED, TEMPORARY, PERMANENT)))
    #: The next hop's reply (``550 5.1.1 no such user``) or a description of the failure.
    detail: str = ""
    #: ``detail`` is an SMTP reply.
    smtp: bool = False

    @property
    def enhanced_status(self) -> str:
        """The RFC 3463 code for a DSN: the one in the reply, else one that fits."""
        code = self.detail.split(" ", 1)[1] if self.smtp and " " in self.detail else ""
        match = _ENHANCED.match(code)
        if match:
            return match.group(0)
        return "5.0.0" if self.status == PERMANENT else "4.0.0"


class Transport(Protocol):
    """How entries leave: to a Maildir or to an SMTP next hop."""

    async def send(
        self, meta: EntryMeta, content: bytes, recipients: Sequence[str]
    ) -> list[Outcome]: ...

    async def close(self) -> None: ...


def transport_for(config: Config, hostname: str) -> Transport:
    """The transport ``[smtp] next_hop`` names."""
    next_hop = config.smtp.next_hop
    if next_hop.startswith("maildir:"):
        return MaildirTransport(config.resolve(next_hop[len("maildir:") :]))
    parts = urlsplit(next_hop)
    if parts.scheme != "smtp" or not parts.hostname or parts.path not in ("", "/"):
        raise ConfigError(f"[smtp] next_hop = {next_hop!r}: expected smtp://HOST:PORT")
    try:
        port = parts.port or 25
    except ValueError:
        raise ConfigError(f"[smtp] next_hop = {next_hop!r}: the port is not a number") from None
    return SmtpTransport(
        host=parts.hostname,
        port=port,
        local_hostname=hostname,
        timeout=config.delivery.timeout,
        pool_size=config.delivery.concurrency,
        tls_verify=config.delivery.tls_verify,
    )


# -- Maildir ------------------------------------------------------------------------------


class MaildirTransport:
    """One Maildir (``tmp``/``new``/``cur``) that every recipient's copy is written to, with
    ``Return-Path`` and ``Delivered-To`` in front, as a local delivery agent does."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def send(
        self, meta: EntryMeta, content: bytes, recipients: Sequence[str]
    ) -> list[Outcome]:
        return await asyncio.to_thread(self._write_all, meta, content, recipients)

    async def close(self) -> None:
        return None

    def _write_all(
        self, meta: EntryMeta, content: bytes, recipients: Sequence[str]
    ) -> list[Outcome]:
        outcomes = []
        for recipient in recipients:
            try:
                self._write(meta, content, recipient)
                outcomes.append(Outcome(recipient=recipient, status=DELIVERED, detail="maildir"))
            except OSError as error:
                outcomes.append(
                    Outcome(
                        recipient=recipient,
                        status=TEMPORARY,
                        detail=f"cannot write to Maildir {self.path}: {error.strerror or error}",
                    )
                )
        return outcomes

    def _write(self, meta: EntryMeta, content: bytes, recipient: str) -> None:
        for sub in ("tmp", "new", "cur"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        # A stable name per entry and recipient: after a crash the copy already there is kept.
        index = meta.recipients.index(recipient)
        name = f"{meta.id}.R{index}.sealrelay"
        final = self.path / "new" / name
        if final.exists() or (self.path / "cur" / f"{name}:2,").exists():
            return
        temporary = self.path / "tmp" / f"{name}.{os.getpid()}"
        eol = b"\r\n" if b"\r\n" in content[:4096] else b"\n"
        trace = f"Return-Path: <{meta.sender}>".encode() + eol
        trace += f"Delivered-To: {recipient}".encode() + eol
        with temporary.open("wb") as handle:
            handle.write(trace)
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(temporary, final)
        descriptor = os.open(self.path / "new", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


# -- SMTP ---------------------------------------------------------------------------------


class SmtpTransport:
    """An SMTP next hop through aiosmtplib: STARTTLS when offered, connections pooled."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        local_hostname: str,
        timeout: float,
        pool_size: int,
        tls_verify: bool,
    ) -> None:
        self.host = host
        self.port = port
        self.local_hostname = local_hostname
        self.timeout = timeout
        self.tls_verify = tls_verify
        self._idle: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue(maxsize=pool_size)

    def __repr__(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    async def _connect(self) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            local_hostname=self.local_hostname,
            timeout=self.timeout,
            start_tls=None,  # STARTTLS when the server offers it
            validate_certs=self.tls_verify,
        )
        await client.connect()
        return client

    async def _acquire(self) -> tuple[aiosmtplib.SMTP, bool]:
        while not self._idle.empty():
            client = self._idle.get_nowait()
            if client.is_connected:
                return client, True
        return await self._connect(), False

    def _release(self, client: aiosmtplib.SMTP) -> None:
        try:
            self._idle.put_nowait(client)
        except asyncio.QueueFull:
            client.close()

    async def send(
        self, meta: EntryMeta, content: bytes, recipients: Sequence[str]
    ) -> list[Outcome]:
        for _ in range(2):
            try:
                client, reused = await self._acquire()
            except (OSError, aiosmtplib.SMTPException, ssl.SSLError) as error:
                return _all(recipients, TEMPORARY, f"cannot connect to {self!r}: {error}")
            try:
                outcomes = await self._transaction(client, meta, content, recipients)
            except aiosmtplib.SMTPServerDisconnected as error:
                client.close()
                if reused:
                    continue  # the next hop closed an idle pooled connection: a new one
                return _all(recipients, TEMPORARY, f"{self!r} disconnected: {error}")
            except (OSError, aiosmtplib.SMTPException, ssl.SSLError) as error:
                client.close()
                return _all(recipients, TEMPORARY, f"{self!r}: {type(error).__name__}: {error}")
            self._release(client)
            return outcomes
        return _all(recipients, TEMPORARY, f"{self!r} keeps closing the connection")

    async def _transaction(
        self,
        client: aiosmtplib.SMTP,
        meta: EntryMeta,
        content: bytes,
        recipients: Sequence[str],
    ) -> list[Outcome]:
        options = []
        if not (meta.sender.isascii() and all(r.isascii() for r in recipients)):
            options.append("SMTPUTF8")
        if not content.isascii():
            await client._ehlo_or_helo_if_needed()
            if client.supports_extension("8bitmime"):
                options.append("BODY=8BITMIME")
        try:
            errors, reply = await client.sendmail(
                meta.sender, list(recipients), content, mail_options=options
            )
        except aiosmtplib.SMTPRecipientsRefused as error:
            return [
                _reply_outcome(refused.recipient, refused.code, refused.message)
                for refused in error.recipients
            ]
        except aiosmtplib.SMTPNotSupported as error:
            return _all(recipients, PERMANENT, f"{self!r} cannot take this message: {error}")
        except (aiosmtplib.SMTPHeloError, aiosmtplib.SMTPConnectResponseError) as error:
            # A next hop refusing to talk is its problem, not the message's (as Postfix's
            # smtp_skip_5xx_greeting): try again later rather than bounce.
            detail = f"{self!r} refused the session: {error.code} {error.message}"
            return _all(recipients, TEMPORARY, detail)
        except aiosmtplib.SMTPResponseException as error:
            return [_reply_outcome(r, error.code, error.message) for r in recipients]
        outcomes = [
            _reply_outcome(r, errors[r].code, errors[r].message)
            if r in errors
            else Outcome(recipient=r, status=DELIVERED, detail=f"250 {reply}", smtp=True)
            for r in recipients
        ]
        return outcomes

    async def close(self) -> None:
        while not self._idle.empty():
            client = self._idle.get_nowait()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.quit(), timeout=2)
            client.close()


def _reply_outcome(recipient: str, code: int, message: str) -> Outcome:
    status = PERMANENT if 500 <= code < 600 else TEMPORARY
    return Outcome(recipient=recipient, status=status, detail=f"{code} {message}", smtp=True)


def _all(recipients: Sequence[str], status: str, detail: str) -> list[Outcome]:
    return [Outcome(recipient=r, status=status, detail=detail) for r in recipients]


# -- bookkeeping --------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class RetrySchedule:
    initial: float
    maximum: float
    max_age: float

    @classmethod
    def for_config(cls, config: Config) -> RetrySchedule:
        delivery = config.delivery
        return cls(
            initial=delivery.retry_initial,
            maximum=delivery.retry_max_interval,
            max_age=delivery.max_age,
        )

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the *attempts*-th failed attempt: doubling, capped."""
        return float(min(self.initial * 2 ** max(attempts - 1, 0), self.maximum))


def settle(
    claim: Claim,
    outcomes: Sequence[Outcome],
    *,
    schedule: RetrySchedule,
    reporting_mta: str,
    now: float | None = None,
) -> str:
    """Record one attempt: keep the entry for a retry, or remove it; bounce new failures at
    once (a DSN spooled before the entry goes). Returns a line for the log. Blocking I/O."""
    now = time.time() if now is None else now
    meta, state = claim.meta, claim.state
    delivered = [o.recipient for o in outcomes if o.status == DELIVERED]
    failed = [
        FailedRecipient(
            recipient=o.recipient, status=o.enhanced_status, diagnostic=o.detail, smtp=o.smtp
        )
        for o in outcomes
        if o.status == PERMANENT
    ]
    temporary = [o for o in outcomes if o.status == TEMPORARY]
    age = now - meta.received_at
    if temporary and age >= schedule.max_age:
        failed += [
            FailedRecipient(
                recipient=o.recipient,
                status="4.4.7",  # delivery time expired
                # The next hop's last word when it said one, else why it could not be reached.
                diagnostic=o.detail if o.smtp else f"gave up after {age:.0f}s: {o.detail}",
                smtp=o.smtp,
            )
            for o in temporary
        ]
        temporary = []
    state = EntryState(
        attempts=state.attempts + 1,
        delivered=[*state.delivered, *delivered],
        failed=[*state.failed, *failed],
        last_error=temporary[0].detail if temporary else state.last_error,
    )
    if failed:
        _bounce(claim, failed, reporting_mta)
    if temporary:
        delay = schedule.delay(state.attempts)
        claim.save_state(state, next_attempt=now + delay)
        return (
            f"{meta.id}: deferred {len(temporary)} recipient(s) for {delay:.0f}s "
            f"(attempt {state.attempts}): {temporary[0].detail}"
        )
    claim.remove()
    parts = [f"{meta.id}: delivered to {len(delivered)} recipient(s)"]
    if failed:
        parts.append(f"bounced {', '.join(f.recipient for f in failed)}: {failed[0].diagnostic}")
    return "; ".join(parts)


def _bounce(claim: Claim, failed: Sequence[FailedRecipient], reporting_mta: str) -> None:
    meta = claim.meta
    if not meta.sender:
        # Never a bounce of a bounce (RFC 5321 6.1): a null sender gets no DSN.
        log.warning(
            "%s: not bouncing to the null sender: %s",
            meta.id,
            ", ".join(f.recipient for f in failed),
        )
        return
    dsn = build_dsn(
        reporting_mta=reporting_mta,
        original=meta,
        original_content=claim.content,
        failures=failed,
    )
    bounce = EntryMeta(
        id=f"{meta.id}.B{claim.state.attempts + 1}",
        sender="",
        recipients=(meta.sender,),
        kind="dsn",
        received_at=time.time(),
        transaction=meta.transaction,
    )
    claim.spool.store([(bounce, dsn)])


# -- the runner ---------------------------------------------------------------------------


class DeliveryRunner:
    """Delivers this node's spool from one worker process (a Frontend without a listener)."""

    name = "delivery"

    def __init__(
        self,
        *,
        spool: Spool,
        transport: Transport,
        schedule: RetrySchedule,
        reporting_mta: str,
        concurrency: int,
        scan_interval: float,
        shutdown_timeout: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spool = spool
        self.transport = transport
        self.schedule = schedule
        self.reporting_mta = reporting_mta
        self.scan_interval = scan_interval
        self.shutdown_timeout = shutdown_timeout
        self._clock = clock
        self._slots = asyncio.Semaphore(concurrency)
        self._active: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        self._loop_task = asyncio.create_task(self._scan_loop(), name="sealrelay-delivery")

    def notify(self, claims: Sequence[Claim]) -> None:
        """Entries this process just spooled, claimed: deliver them now, without a scan."""
        for claim in claims:
            if self._stopping or claim.meta.id in self._active:
                claim.release()  # left in the spool for the next start or another worker
            else:
                self._schedule(claim.meta.id, claim)

    async def _scan_loop(self) -> None:
        while not self._stopping:
            try:
                due = await asyncio.to_thread(self.spool.due, self._clock())
            except OSError as error:
                log.error("cannot read the spool %s: %s", self.spool.queue_dir, error)
                due = []
            for entry_id in due:
                if self._stopping:
                    break
                if entry_id not in self._active:
                    await self._slots.acquire()  # a large backlog is worked off in order
                    self._slots.release()
                    self._schedule(entry_id)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.scan_interval)

    def _schedule(self, entry_id: str, claim: Claim | None = None) -> None:
        if entry_id in self._active:
            return
        self._active.add(entry_id)
        task = asyncio.create_task(self._deliver(entry_id, claim))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, entry_id: str, claim: Claim | None) -> None:
        try:
            async with self._slots:
                if self._stopping:
                    return
                if claim is None:
                    claim = await asyncio.to_thread(self.spool.claim, entry_id)
                if claim is None:
                    return  # delivered meanwhile, or another worker has it
                with claim:
                    pending = claim.state.pending(claim.meta)
                    outcomes = await self.transport.send(claim.meta, claim.content, pending)
                    line = await asyncio.to_thread(
                        settle,
                        claim,
                        outcomes,
                        schedule=self.schedule,
                        reporting_mta=self.reporting_mta,
                        now=self._clock(),
                    )
                log.info("%s", line)
        except SpoolError as error:
            log.error("delivery of %s stopped: %s", entry_id, error)
        except Exception:
            # The entry stays in the spool and is tried again at the next scan.
            log.exception("delivery of %s failed unexpectedly", entry_id)
        finally:
            if claim is not None:
                claim.release()
            self._active.discard(entry_id)

    async def stop(self) -> None:
        """Stop taking entries; let the deliveries in flight finish (up to the timeout)."""
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._tasks:
            _, unfinished = await asyncio.wait(set(self._tasks), timeout=self.shutdown_timeout)
            for task in unfinished:
                task.cancel()  # the entry stays in the spool for the next start
            if unfinished:
                await asyncio.wait(unfinished)
        await self.transport.close()

    async def drain(self) -> None:
        """Wait until the deliveries started so far are done (for tests and the demo)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))
