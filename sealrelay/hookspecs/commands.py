"""Administrative command hooks: one registry that the CLI, the console and the API share."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sealrelay.hookspecs import hookspec


if TYPE_CHECKING:
    from sealrelay.core.commands import AdminCommand, CommandRecord


@hookspec
def sealrelay_register_commands() -> list[type[AdminCommand]]:
    """Contribute administrative commands (``policy add``, ``cert import`` ...).

    Called once when the command registry is built (by the CLI at start, by the console and
    the API when they start). Collect-all. Two commands of the same name are a start-up
    error naming both plugins.

    :returns: a list of :class:`~sealrelay.AdminCommand` subclasses; each declares its
        ``name`` (words separated by spaces, the CLI's subcommand path), ``summary`` and
        ``parameters``, and implements ``run``.

    Failure semantics: an exception stops start-up with an error naming the plugin.
    """


@hookspec
def sealrelay_command_executed(record: CommandRecord) -> None:
    """Be told that an administrative command ran, who ran it and how it ended.

    Called after every command run through the registry (CLI, console or API), whether it
    succeeded or failed. Collect-all. For the audit log.

    :param record: a :class:`~sealrelay.CommandRecord`: command name, parameters (secrets
        replaced by ``"***"``), actor, start time, outcome and error.
    :returns: nothing.

    Failure semantics: exceptions are logged with the plugin's name and never change the
    command's outcome.
    """
