"""Built-in SMTP/LMTP front end, durable spool and delivery, and ``sealrelay serve``.

docs/smtp.md describes what the relay answers when, where mail goes, and the spool.
"""

from __future__ import annotations

import socket

from sealrelay.core.bus import MessageBus
from sealrelay.core.commands import AdminCommand
from sealrelay.core.config import Config
from sealrelay.core.frontend import Frontend
from sealrelay.exceptions import ConfigError
from sealrelay.hookspecs import hookimpl
from sealrelay.plugins.frontend_smtp.commands import COMMANDS
from sealrelay.plugins.frontend_smtp.server import SmtpFrontend
from sealrelay.spool.delivery import DeliveryRunner, RetrySchedule, transport_for
from sealrelay.spool.store import Spool


def hostname(config: Config) -> str:
    """The relay's name in greetings and bounces (never a DNS lookup)."""
    return config.smtp.hostname or socket.gethostname()


@hookimpl
def sealrelay_prepare_state(config: Config) -> str | None:
    spool = Spool.for_config(config)
    return f"spool: {spool.root}" if spool.prepare() else None


@hookimpl
def sealrelay_register_commands() -> list[type[AdminCommand]]:
    return list(COMMANDS)


@hookimpl
def sealrelay_create_frontends(config: Config, bus: MessageBus) -> list[Frontend]:
    name = hostname(config)
    spool = Spool.for_config(config)
    spool.prepare()
    runner = DeliveryRunner(
        spool=spool,
        transport=transport_for(config, name),
        schedule=RetrySchedule.for_config(config),
        reporting_mta=name,
        concurrency=config.delivery.concurrency,
        scan_interval=config.delivery.scan_interval,
        shutdown_timeout=config.smtp.shutdown_timeout,
    )
    check = None
    if config.smtp.auth:
        if not bus.plugins.pm.hook.sealrelay_check_credentials.get_hookimpls():
            raise ConfigError(
                "[smtp] auth = true, but no enabled plugin checks credentials "
                "(sealrelay_check_credentials); enable policy_sql or set auth = false"
            )
        check = bus.check_credentials
    smtp = SmtpFrontend(
        config=config,
        bus=bus,
        spool=spool,
        hostname=name,
        on_spooled=runner.notify,
        check_credentials=check,
    )
    # Started in this order and stopped in reverse: the listener drains before delivery stops.
    return [runner, smtp]
