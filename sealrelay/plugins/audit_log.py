"""Built-in audit log: one JSON line per processed message and per administrative command,
appended to ``audit.jsonl`` in the data directory. It records outcomes, never content or keys."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from sealrelay.core.commands import CommandRecord
from sealrelay.core.config import Config
from sealrelay.core.results import ProcessingReport
from sealrelay.hookspecs import hookimpl


class _AuditFile:
    """Appends JSON lines; one ``write`` per record keeps lines whole across processes."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self._lock = threading.Lock()

    def append(self, record: dict[str, Any]) -> None:
        # Before `sealrelay init` there is no data directory; nothing to audit into yet.
        if self.path is None or not self.path.parent.is_dir():
            return
        line = json.dumps(record, sort_keys=True, default=str).encode() + b"\n"
        with self._lock:
            descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(descriptor, line)
            finally:
                os.close(descriptor)


_audit = _AuditFile()


@hookimpl
def sealrelay_configure(config: Config) -> None:
    _audit.path = config.data_dir / "audit.jsonl"


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
