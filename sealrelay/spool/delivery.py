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
import datetime as dt
import logging
import os
import queue
import re
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, Protocol
from urllib.parse import urlsplit

import attrs

from sealrelay.core.config import Config
from sealrelay.exceptions import ConfigError
from sealrelay.spool.dsn import build_delay_notice, build_dsn
from sealrelay.spool.smtp_client import (
    ConnectionClosed,
    NextHopError,
    Reply,
    SessionRefused,
    SmtpConnection,
)
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
    """An SMTP next hop: STARTTLS when offered, connections pooled and reused."""

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
        self.tls = ssl.create_default_context()
        if not tls_verify:
            self.tls.check_hostname = False
            self.tls.verify_mode = ssl.CERT_NONE
        self._idle: asyncio.Queue[SmtpConnection] = asyncio.Queue(maxsize=pool_size)

    def __repr__(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    async def _acquire(self) -> tuple[SmtpConnection, bool]:
        while not self._idle.empty():
            connection = self._idle.get_nowait()
            if connection.is_open:
                return connection, True
        connection = await SmtpConnection.open(
            self.host,
            self.port,
            local_hostname=self.local_hostname,
            timeout=self.timeout,
            tls=self.tls,
        )
        return connection, False

    def _release(self, connection: SmtpConnection) -> None:
        try:
            self._idle.put_nowait(connection)
        except asyncio.QueueFull:
            connection.close()

    async def send(
        self, meta: EntryMeta, content: bytes, recipients: Sequence[str]
    ) -> list[Outcome]:
        for _ in range(2):
            try:
                connection, reused = await self._acquire()
            except SessionRefused as error:
                # A next hop refusing to talk is its problem, not the message's (as Postfix's
                # smtp_skip_5xx_greeting): try again later rather than bounce.
                detail = f"{self!r} refused the session: {error.reply}"
                return _all(recipients, TEMPORARY, detail)
            except NextHopError as error:
                return _all(recipients, TEMPORARY, f"cannot connect to {self!r}: {error}")
            try:
                outcomes = await self._transaction(connection, meta, content, recipients)
            except ConnectionClosed as error:
                connection.close()
                if reused:
                    continue  # the next hop closed an idle pooled connection: a new one
                return _all(recipients, TEMPORARY, f"{self!r}: {error}")
            except NextHopError as error:
                connection.close()
                return _all(recipients, TEMPORARY, f"{self!r}: {error}")
            except BaseException:
                connection.close()  # cancelled at shutdown, or a bug: in no state to reuse
                raise
            self._release(connection)
            return outcomes
        return _all(recipients, TEMPORARY, f"{self!r} keeps closing the connection")

    async def _transaction(
        self,
        connection: SmtpConnection,
        meta: EntryMeta,
        content: bytes,
        recipients: Sequence[str],
    ) -> list[Outcome]:
        options = []
        if not (meta.sender.isascii() and all(r.isascii() for r in recipients)):
            if not connection.supports("smtputf8"):
                detail = f"{self!r} cannot take this message: it does not offer SMTPUTF8"
                return _all(recipients, PERMANENT, detail)
            options.append(b"SMTPUTF8")
        if not content.isascii() and connection.supports("8bitmime"):
            options.append(b"BODY=8BITMIME")
        answer = await connection.send(meta.sender, recipients, content, options)
        if not answer.mail.ok:
            return [_reply_outcome(r, answer.mail) for r in recipients]
        outcomes = []
        for recipient, reply in zip(recipients, answer.recipients, strict=True):
            final = answer.data if reply.ok else reply
            if final is not None and final.ok:
                outcomes.append(
                    Outcome(recipient=recipient, status=DELIVERED, detail=str(final), smtp=True)
                )
            else:
                outcomes.append(_reply_outcome(recipient, final or reply))
        return outcomes

    async def close(self) -> None:
        while not self._idle.empty():
            connection = self._idle.get_nowait()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(connection.quit(), timeout=2)
            connection.close()


def _reply_outcome(recipient: str, reply: Reply) -> Outcome:
    status = PERMANENT if 500 <= reply.code < 600 else TEMPORARY
    return Outcome(recipient=recipient, status=status, detail=str(reply), smtp=True)


def _all(recipients: Sequence[str], status: str, detail: str) -> list[Outcome]:
    return [Outcome(recipient=r, status=status, detail=detail) for r in recipients]


# -- bookkeeping --------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class RetrySchedule:
    initial: float
    maximum: float
    max_age: float
    #: Seconds after which the sender is told once that the message waits; 0: never.
    delay_warning: float = 0

    @classmethod
    def for_config(cls, config: Config) -> RetrySchedule:
        delivery = config.delivery
        return cls(
            initial=delivery.retry_initial,
            maximum=delivery.retry_max_interval,
            max_age=delivery.max_age,
            delay_warning=delivery.delay_warning,
        )

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the *attempts*-th failed attempt: doubling, capped."""
        return float(min(self.initial * 2 ** max(attempts - 1, 0), self.maximum))

    def warns(self, age: float) -> bool:
        """Whether a message *age* seconds in the spool has waited long enough for a notice."""
        return 0 < self.delay_warning <= age


def settle(
    claim: Claim,
    outcomes: Sequence[Outcome],
    *,
    schedule: RetrySchedule,
    reporting_mta: str,
    now: float | None = None,
) -> str:
    """Record one attempt: keep the entry for a retry, or remove it; bounce new failures at
    once (a DSN spooled before the entry goes), and tell the sender once when the message
    has waited ``delay_warning`` seconds. Returns a line for the log. Blocking I/O."""
    now = time.time() if now is None else now
    meta, state = claim.meta, claim.state
    delivered = [o.recipient for o in outcomes if o.status == DELIVERED]
    failed = [_reported(o, o.enhanced_status, o.detail) for o in outcomes if o.status == PERMANENT]
    temporary = [o for o in outcomes if o.status == TEMPORARY]
    age = now - meta.received_at
    if temporary and age >= schedule.max_age:
        failed += [
            # Delivery time expired; the next hop's last word when it said one, else why it
            # could not be reached.
            _reported(o, "4.4.7", o.detail if o.smtp else f"gave up after {age:.0f}s: {o.detail}")
            for o in temporary
        ]
        temporary = []
    state = EntryState(
        attempts=state.attempts + 1,
        delivered=[*state.delivered, *delivered],
        failed=[*state.failed, *failed],
        last_error=temporary[0].detail if temporary else state.last_error,
        delay_notified=state.delay_notified,
    )
    parts = []
    if failed:
        _bounce(claim, failed, reporting_mta)
    if temporary and not state.delay_notified and schedule.warns(age) and meta.sender:
        # Spooled before the state that says so: a crash in between warns twice, never not.
        delayed = [_reported(o, o.enhanced_status, o.detail) for o in temporary]
        retry_until = dt.datetime.fromtimestamp(meta.received_at + schedule.max_age, dt.UTC)
        notice = build_delay_notice(
            reporting_mta=reporting_mta,
            original=meta,
            original_content=claim.content,
            delayed=delayed,
            retry_until=retry_until,
        )
        _report_to_sender(claim, f"W{state.attempts}", notice)
        state = attrs.evolve(state, delay_notified=True)
        parts.append(f"told {meta.sender} it is delayed")
    if temporary:
        delay = schedule.delay(state.attempts)
        claim.save_state(state, next_attempt=now + delay)
        deferred = (
            f"{meta.id}: deferred {len(temporary)} recipient(s) for {delay:.0f}s "
            f"(attempt {state.attempts}): {temporary[0].detail}"
        )
        return "; ".join([deferred, *parts])
    claim.remove()
    parts.insert(0, f"{meta.id}: delivered to {len(delivered)} recipient(s)")
    if failed:
        parts.append(f"bounced {', '.join(f.recipient for f in failed)}: {failed[0].diagnostic}")
    return "; ".join(parts)


def _reported(outcome: Outcome, status: str, diagnostic: str) -> FailedRecipient:
    return FailedRecipient(
        recipient=outcome.recipient, status=status, diagnostic=diagnostic, smtp=outcome.smtp
    )


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
    _report_to_sender(claim, f"B{claim.state.attempts + 1}", dsn)


def _report_to_sender(claim: Claim, suffix: str, report: bytes) -> None:
    """Spool *report* (a DSN) to the sender of *claim*'s message, with the null sender."""
    meta = claim.meta
    entry = EntryMeta(
        id=f"{meta.id}.{suffix}",
        sender="",
        recipients=(meta.sender,),
        kind="dsn",
        received_at=time.time(),
        transaction=meta.transaction,
    )
    claim.spool.store([(entry, report)])


#: How long the sweeper lets delivered entries gather after it removed one.
_SWEEP_PAUSE = 0.02


class _Sweeper:
    """Removes delivered entries in a thread of its own, so that the event loop hands them
    over without waiting for a thread to answer. An entry stays claimed until its files are
    gone: no deliverer takes it up again in between."""

    def __init__(self) -> None:
        self._claims: queue.Queue[Claim | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="sealrelay-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def remove(self, claim: Claim) -> None:
        """Take over *claim*: its entry is removed and the claim released."""
        self._claims.put(claim)

    async def drain(self) -> None:
        """Wait until every entry handed over so far is gone."""
        await asyncio.to_thread(self._claims.join)

    async def stop(self) -> None:
        if self._thread.is_alive():
            self._claims.put(None)
            await asyncio.to_thread(self._thread.join)

    def _run(self) -> None:
        while True:
            batch = [self._claims.get()]  # an idle relay sleeps here
            with contextlib.suppress(queue.Empty):
                while True:
                    batch.append(self._claims.get_nowait())
            for claim in batch:
                if claim is None:  # stop() puts it last
                    return
                self._sweep(claim)
            # Under load, let entries gather before the next get: one that finds the queue
            # empty puts this thread to sleep, and waking it for each message cost more CPU
            # than the removal itself.
            time.sleep(_SWEEP_PAUSE)

    def _sweep(self, claim: Claim) -> None:
        try:
            # Unsynced: after a crash of the machine the entry may come back and go out
            # once more, which saves an fsync per message.
            claim.remove(sync=False)
        except SpoolError as error:
            log.error("%s", error)  # the entry stays; it is delivered again
        except Exception:
            # Whatever it is, this thread must go on removing the next ones.
            log.exception("cannot remove the delivered entry %s", claim.meta.id)
        finally:
            claim.release()
            self._claims.task_done()


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
        self._sweeper = _Sweeper()
        # Entries in this process's journal whose first attempt failed unexpectedly: no scan
        # finds them, so the next scan moves them into queue/ (see _keep).
        self._unsettled: list[Claim] = []

    async def start(self) -> None:
        self._sweeper.start()
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
            unsettled, self._unsettled = self._unsettled, []
            for claim in unsettled:
                await self._keep(claim)
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

    async def _keep(self, claim: Claim) -> None:
        """Record the first attempt of a journal entry that failed, or whose outcome could not
        be written, which moves it into queue/: due again after the usual delay, and in
        reach of the queue commands."""
        state = claim.state
        if not state.attempts:  # the attempt raised before its outcome was known
            state = attrs.evolve(state, attempts=1, last_error="the attempt failed (see the log)")
        try:
            await asyncio.to_thread(
                claim.save_state,
                state,
                next_attempt=self._clock() + self.schedule.delay(state.attempts),
            )
        except Exception as error:  # noqa: BLE001 - whatever failed, the scans go on
            log.error("cannot keep %s for a retry: %s", claim.meta.id, error)
            self._unsettled.append(claim)  # still in the journal; next scan
            return
        claim.release()

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
                pending = claim.state.pending(claim.meta)
                outcomes = await self.transport.send(claim.meta, claim.content, pending)
                if all(o.status == DELIVERED for o in outcomes):
                    # The common case has nothing to record: the entry just goes.
                    self._sweeper.remove(claim)
                    claim = None
                    log.info("%s: delivered to %d recipient(s)", entry_id, len(outcomes))
                    return
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
            if claim is not None and claim.only_in_journal and not self._stopping:
                self._unsettled.append(claim)
            elif claim is not None:
                claim.release()  # a journal entry left at a stop is moved to queue/ then
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
        await self._sweeper.stop()
        await self.transport.close()
        await asyncio.to_thread(self.spool.close)  # syncs what the journal still holds

    async def drain(self) -> None:
        """Wait until the deliveries started so far are done (for tests and the demo)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))
        await self._sweeper.drain()
