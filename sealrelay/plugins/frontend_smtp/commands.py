"""``sealrelay serve`` and the spool commands ``queue list|show|retry|flush|delete``."""

from __future__ import annotations

import datetime as dt
import os
import time
from typing import Any

import attrs

from sealrelay.core.commands import AdminCommand, CommandContext, CommandResult, Parameter
from sealrelay.exceptions import CommandError
from sealrelay.plugins.frontend_smtp.serve import Supervisor
from sealrelay.spool.store import QueuedEntry, Spool, SpoolError


#: Seconds an administrative change waits for a delivery in progress to let go of an entry.
_CLAIM_WAIT = 10.0


class Serve(AdminCommand):
    name = "serve"
    summary = "run the configured front ends until SIGTERM (graceful: finishes in-flight mail)"
    parameters = (
        Parameter(name="workers", kind="int", help="worker processes (default: [smtp] workers)"),
    )

    def validate(self, context: CommandContext) -> None:
        workers = self.params["workers"]
        if workers is not None and workers < 1:
            raise CommandError("--workers must be at least 1")

    def run(self, context: CommandContext) -> CommandResult:
        workers = self.params["workers"] or context.config.smtp.workers
        supervisor = Supervisor(context.config, context.plugins, workers)
        try:
            text = supervisor.run()
        except SpoolError as error:
            raise CommandError(str(error)) from None
        return CommandResult(data={"status": text}, text=f"sealrelay: {text}")


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds")


def _row(entry: QueuedEntry) -> dict[str, Any]:
    meta, state = entry.meta, entry.state
    return {
        "id": meta.id,
        "kind": meta.kind,
        "sender": meta.sender,
        "recipients": list(meta.recipients),
        "pending": state.pending(meta),
        "delivered": list(state.delivered),
        "bounced": [attrs.asdict(f) for f in state.failed],
        "size": entry.size,
        "received_at": _iso(meta.received_at),
        "next_attempt": _iso(entry.next_attempt),
        "attempts": state.attempts,
        "last_error": state.last_error,
        "delay_notified": state.delay_notified,
        "active": entry.active,
        "first_attempt": entry.in_journal,
    }


def _spool(context: CommandContext) -> Spool:
    return Spool.for_config(context.config)


def _entry(spool: Spool, entry_id: str) -> QueuedEntry:
    try:
        entry = spool.entry(entry_id)
    except SpoolError as error:
        raise CommandError(str(error)) from None
    if entry is None:
        raise CommandError(f"no spool entry {entry_id} (see `sealrelay queue list`)")
    return entry


class QueueList(AdminCommand):
    name = "queue list"
    summary = "list the messages waiting in this node's spool"
    read_only = True

    def run(self, context: CommandContext) -> CommandResult:
        rows = [_row(entry) for entry in _spool(context).entries()]
        lines = [
            f"{r['id']}  {r['kind']:<8} {r['size']:>9}  {r['received_at']}  "
            f"<{r['sender']}> -> {', '.join(r['pending'])}  attempts {r['attempts']}"
            + (f", next {r['next_attempt']}" if r["attempts"] else "")
            + (" (being delivered: first attempt)" if r["first_attempt"] else "")
            + (" (being delivered)" if r["active"] and not r["first_attempt"] else "")
            + (f"\n    last error: {r['last_error']}" if r["last_error"] else "")
            for r in rows
        ]
        lines.append(f"{len(rows)} message(s) in {_spool(context).queue_dir}")
        return CommandResult(data=rows, text="\n".join(lines))


class QueueShow(AdminCommand):
    name = "queue show"
    summary = "show one spooled message: its envelope, delivery state and headers"
    read_only = True
    parameters = (Parameter(name="id", positional=True, required=True, help="spool entry id"),)

    def run(self, context: CommandContext) -> CommandResult:
        spool = _spool(context)
        row = _row(_entry(spool, self.params["id"]))
        content = spool.content(self.params["id"])
        head = content.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
        row["headers"] = head.decode("utf-8", "replace")
        lines = [f"{key}: {value}" for key, value in row.items() if key != "headers"]
        return CommandResult(data=row, text="\n".join([*lines, "", row["headers"]]))


def _make_due(context: CommandContext, ids: list[str]) -> CommandResult:
    spool = _spool(context)
    now = time.time()
    done = []
    for entry_id in ids:
        if _entry(spool, entry_id).in_journal:
            done.append(entry_id)  # in its first attempt: tried right now
            continue
        try:
            with spool.wait_claim(entry_id, _CLAIM_WAIT):
                os.utime(spool.msg_path(entry_id), (now, now))
        except (SpoolError, FileNotFoundError) as error:
            raise CommandError(str(error)) from None
        done.append(entry_id)
    return CommandResult(
        data={"retried": done}, text=f"{len(done)} message(s) due now: {' '.join(done)}"
    )


class QueueRetry(AdminCommand):
    name = "queue retry"
    summary = "make spooled messages due now (a running serve sends them at its next look)"
    parameters = (
        Parameter(name="id", positional=True, multiple=True, required=True, help="spool entry ids"),
    )

    def run(self, context: CommandContext) -> CommandResult:
        return _make_due(context, self.params["id"])


class QueueFlush(AdminCommand):
    name = "queue flush"
    summary = "make every spooled message due now (like postqueue -f)"

    def run(self, context: CommandContext) -> CommandResult:
        return _make_due(context, _spool(context).entry_ids())


class QueueDelete(AdminCommand):
    name = "queue delete"
    summary = "delete spooled messages without delivering or bouncing them"
    parameters = (
        Parameter(name="id", positional=True, multiple=True, required=True, help="spool entry ids"),
    )

    def run(self, context: CommandContext) -> CommandResult:
        spool = _spool(context)
        done = []
        for entry_id in self.params["id"]:
            _entry(spool, entry_id)
            try:
                with spool.wait_claim(entry_id, _CLAIM_WAIT) as claim:
                    claim.remove()
            except SpoolError as error:
                raise CommandError(str(error)) from None
            done.append(entry_id)
        return CommandResult(data={"deleted": done}, text=f"deleted {' '.join(done)}")


COMMANDS: tuple[type[AdminCommand], ...] = (
    Serve,
    QueueList,
    QueueShow,
    QueueRetry,
    QueueFlush,
    QueueDelete,
)
