"""Built-in audit log: one JSON line per processed message and per administrative command,
appended to ``audit.jsonl`` in the data directory. It records outcomes, never content or keys."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from sealrelay.core.commands import CommandRecord
from sealrelay.core.config import Config
from sealrelay.core.results import ProcessingReport
from sealrelay.hookspecs import hookimpl


class _AuditFile:
    """Appends JSON lines; one ``write`` per record keeps lines whole across processes.

    The file stays open between records: opening it for each message cost more than writing
    the line. Once a second it is checked against the path, so that a file rotated away (or
    deleted) is let go and the next record starts a new one at the path.
    """

    def __init__(self) -> None:
        self.path: Path | None = None
        self._lock = threading.Lock()
        self._descriptor: int | None = None
        self._checked_at = 0.0

    def append(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        line = json.dumps(record, sort_keys=True, default=str).encode() + b"\n"
        with self._lock:
            descriptor = self._open(self.path)
            if descriptor is not None:
                os.write(descriptor, line)

    def _open(self, path: Path) -> int | None:
        """The descriptor to append to, or None before `sealrelay init` made the data
        directory (there is nothing to audit into yet)."""
        now = time.monotonic()
        if self._descriptor is not None and now - self._checked_at < 1.0:
            return self._descriptor
        self._checked_at = now
        if self._descriptor is not None:
            try:
                if os.path.samestat(os.stat(path), os.fstat(self._descriptor)):
                    return self._descriptor
            except FileNotFoundError:
                pass
            self._let_go()
        if not path.parent.is_dir():
            return None
        self._descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return self._descriptor

    def use(self, path: Path) -> None:
        """Append to *path* from now on."""
        with self._lock:
            self._let_go()
            self.path = path

    def close(self) -> None:
        """Close the file; the next record opens it again."""
        with self._lock:
            self._let_go()

    def _let_go(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None


_audit = _AuditFile()


@hookimpl
def sealrelay_configure(config: Config) -> None:
    _audit.use(config.data_dir / "audit.jsonl")


@hookimpl
def sealrelay_shutdown(config: Config) -> None:
    _audit.close()


@hookimpl
def sealrelay_message_processed(report: ProcessingReport) -> None:
    record: dict[str, Any] = {
        "event": "message",
        "id": report.envelope.id,
        "direction": report.direction,
        "sender": report.envelope.sender,
        "recipients": list(report.envelope.recipients),
        "seconds": round(report.duration_seconds, 6),
    }
    if report.outbound is not None:
        record["messages"] = [
            {
                "recipients": list(m.recipients),
                "sign_mode": m.sign_mode,
                "encrypted": m.encrypted,
                "cipher": m.cipher,
            }
            for m in report.outbound.messages
        ]
        record["rejected"] = [f.to_dict() for f in report.outbound.rejected]
        record["deferred"] = [f.to_dict() for f in report.outbound.deferred]
    if report.inbound is not None:
        record["decrypted"] = report.inbound.decrypted
        record["decryption_error"] = report.inbound.decryption_error
        record["signature"] = report.inbound.signature.to_dict()
        record["harvested"] = list(report.inbound.harvested)
    _audit.append(record)


@hookimpl
def sealrelay_command_executed(record: CommandRecord) -> None:
    _audit.append(
        {
            "event": "command",
            "command": record.command,
            "parameters": dict(record.parameters),
            "actor": record.actor,
            "started_at": record.started_at.isoformat(),
            "outcome": record.outcome,
            "error": record.error,
        }
    )
