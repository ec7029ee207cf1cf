"""Front-end hooks: the network edges ``sealrelay serve`` runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sealrelay.hookspecs import hookspec


if TYPE_CHECKING:
    from sealrelay.core.bus import MessageBus
    from sealrelay.core.config import Config
    from sealrelay.core.frontend import Frontend


@hookspec
def sealrelay_create_frontends(config: Config, bus: MessageBus) -> list[Frontend]:
    """Create the front ends this plugin serves (SMTP listener, HTTP API, IMAP retriever).

    Called once by ``sealrelay serve`` in each serving process after start-up; the core then
    awaits ``start()`` on every front end and, on SIGTERM, ``stop()`` in reverse order.
    Collect-all. This hook itself is synchronous: it only builds objects; the async work is
    in the returned front ends' ``start``/``stop``.

    :param config: the configuration (read ``config.plugin_config(name)`` for your section).
    :param bus: the :class:`~sealrelay.MessageBus` to hand messages to, always through
        ``await bus.run_outbound(...)`` / ``await bus.run_inbound(...)``, which run in a worker.
    :returns: a list of objects following the :class:`~sealrelay.Frontend` protocol (empty
        when this plugin serves nothing in this configuration).

    Failure semantics: an exception stops ``serve`` with an error naming the plugin.
    """
