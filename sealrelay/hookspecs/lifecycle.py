"""Lifecycle hooks: loading, configuration, state preparation, start and stop."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sealrelay.hookspecs import hookspec


if TYPE_CHECKING:
    import pluggy

    from sealrelay.core.config import Config
    from sealrelay.core.service import BackgroundService


@hookspec(historic=True)
def sealrelay_addhooks(pluginmanager: pluggy.PluginManager) -> None:
    """Add hook specifications of a plugin's own, so that plugins can extend each other.

    Called once for every plugin as it is registered (historic: late plugins get the call too),
    before ``check_pending()`` validates the implementations.

    :param pluginmanager: the pluggy plugin manager; call ``add_hookspecs(module)`` on it.
    :returns: nothing.

    Failure semantics: an exception stops start-up with an error naming the plugin.
    """


@hookspec(historic=True)
def sealrelay_configure(config: Config) -> None:
    """Receive the validated configuration once, before any message is processed.

    Called after every plugin is loaded (historic: plugins registered later get it too). Read
    your own section with ``config.plugin_config("<name>")`` and raise
    :class:`~sealrelay.ConfigError` with a message naming the key when it is wrong.

    :param config: the frozen :class:`~sealrelay.Config`.
    :returns: nothing.

    Failure semantics: a ConfigError is shown to the operator as one line (exit status 2);
    any other exception stops start-up with an error naming the plugin (exit status 1).
    """


@hookspec
def sealrelay_prepare_state(config: Config) -> list[str] | str | None:
    """Create or upgrade what the plugin keeps on disk or in the database.

    Called by ``sealrelay init`` (and at start-up of ``serve``) after the data directory and
    the master key exist; must be idempotent: an existing state is upgraded, never recreated.
    Collect-all.

    :param config: the configuration.
    :returns: a line (or lines) saying what was created or upgraded, shown by ``init``;
        ``None`` when there was nothing to do.

    Failure semantics: an exception makes ``init`` fail with exit status 1 naming the plugin.
    """


@hookspec
def sealrelay_startup(config: Config) -> None:
    """Open resources for processing (database connections, caches, background workers).

    Called once per process when a bus is opened, before its first message, in every process
    that processes mail (each SMTP worker process calls it). Collect-all.

    :param config: the configuration.
    :returns: nothing.

    Failure semantics: an exception stops start-up with an error naming the plugin.
    """


@hookspec
def sealrelay_shutdown(config: Config) -> None:
    """Release what ``sealrelay_startup`` opened.

    Called once when the bus closes, after its last message, also after a failed start.
    Collect-all.

    :param config: the configuration.
    :returns: nothing.

    Failure semantics: exceptions are logged with the plugin's name; every plugin still gets
    the call.
    """


@hookspec
def sealrelay_background_services(config: Config) -> list[BackgroundService]:
    """Return the long-running jobs ``sealrelay serve`` runs beside the message workers.

    Called once by ``serve``'s supervisor before it starts the workers. Collect-all. Each
    :class:`~sealrelay.BackgroundService` runs in a process of its own (never on an event
    loop, never in a message worker), is replaced when it dies, and is asked to stop on
    SIGTERM.

    :param config: the configuration.
    :returns: a list of services (empty when the plugin has none).

    Failure semantics: an exception stops ``serve`` from starting, naming the plugin.
    """
