"""Notification hooks about messages."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sealrelay.hookspecs import hookspec


if TYPE_CHECKING:
    from sealrelay.core.results import ProcessingReport


@hookspec
def sealrelay_message_processed(report: ProcessingReport) -> None:
    """Be told what happened to a message, after every message, in and out.

    Called once per message after the pipeline finished, whatever the outcome (delivered,
    partly rejected, deferred). Collect-all. For audit logs, metrics and alerts.

    :param report: a :class:`~sealrelay.ProcessingReport`: the envelope, the direction, the
        outbound or inbound result, the error that stopped the message if any, and the time
        taken. It holds no key material.
    :returns: nothing.

    Failure semantics: exceptions are logged with the plugin's name and never change what
    happens to the message.
    """
