"""The ``sealrelay`` command. Its subcommands are built from the command registry, so every
administrative command a plugin contributes appears here with the same parameters it has in
the console and the API.

Exit status: 0 success, 1 a processing failure, 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from sealrelay.app import load_application
from sealrelay.core.address import AddressError
from sealrelay.core.commands import AdminCommand, CommandContext, CommandRegistry, Parameter
from sealrelay.exceptions import CommandError, ConfigError, SealrelayError


EXIT_FAILURE = 1
EXIT_USAGE = 2
_COMMAND = "_command"


def _config_path(argv: Sequence[str]) -> str:
    """``-c``/``--config`` read before the full parser exists (it depends on the plugins)."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("-c", "--config", default="config.toml")
    known, _ = early.parse_known_args(argv)
    return str(known.config)


def _add_parameter(parser: argparse.ArgumentParser, parameter: Parameter) -> None:
    options: dict[str, Any] = {"help": parameter.help}
    if parameter.choices:
        options["choices"] = parameter.choices
    if parameter.kind == "bool":
        options["action"] = "store_true"
    elif parameter.multiple:
        options["action"] = "append"
    if parameter.kind == "int":
        options["type"] = int
    if parameter.positional:
        options["nargs"] = "+" if parameter.multiple else None
        options.pop("action", None)
        parser.add_argument(parameter.name, metavar=parameter.name.upper(), **options)
        return
    flags = [parameter.short] if parameter.short else []
    flags.append(parameter.option)
    parser.add_argument(*flags, dest=parameter.name, required=parameter.required, **options)


def build_parser(registry: CommandRegistry) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sealrelay", description="A secure email relay that applies S/MIME by policy."
    )
    parser.add_argument(
        "-c", "--config", default="config.toml", help="configuration file (default ./config.toml)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    groups: dict[tuple[str, ...], argparse._SubParsersAction[argparse.ArgumentParser]] = {
        (): parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    }
    parsers: dict[tuple[str, ...], argparse.ArgumentParser] = {}
    for name, command in registry.commands.items():
        words = tuple(name.split())
        for depth in range(1, len(words)):
            prefix = words[:depth]
            if prefix not in groups:
                parent = groups[prefix[:-1]]
                parsers[prefix] = parent.add_parser(prefix[-1], help=f"{' '.join(prefix)} ...")
                groups[prefix] = parsers[prefix].add_subparsers(metavar="COMMAND", required=True)
        sub = groups[words[:-1]].add_parser(words[-1], help=command.summary)
        sub.set_defaults(**{_COMMAND: command})
        for parameter in command.parameters:
            _add_parameter(sub, parameter)
        sub.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parser


def _fail(message: str, status: int) -> int:
    print(f"sealrelay: error: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        config, plugins, registry = load_application(_config_path(arguments))
    except ConfigError as error:
        return _fail(str(error), EXIT_USAGE)
    except SealrelayError as error:
        return _fail(str(error), EXIT_FAILURE)

    options = build_parser(registry).parse_args(arguments)
    logging.basicConfig(
        level=logging.INFO if options.verbose else logging.WARNING,
        format="sealrelay: %(levelname)s %(name)s: %(message)s",
    )
    command: type[AdminCommand] = getattr(options, _COMMAND)
    params = {
        p.name: getattr(options, p.name)
        for p in command.parameters
        if getattr(options, p.name) is not None
    }
    context = CommandContext(config=config, plugins=plugins, actor=f"cli:{getpass.getuser()}")
    try:
        result = registry.execute(command.name, params, context)
    except (CommandError, ConfigError, AddressError) as error:
        return _fail(str(error), EXIT_USAGE)
    except SealrelayError as error:
        return _fail(str(error), EXIT_FAILURE)
    except Exception as error:
        if os.environ.get("SEALRELAY_DEBUG"):
            raise
        return _fail(
            f"{command.name} failed unexpectedly: {type(error).__name__}: {error} "
            "(set SEALRELAY_DEBUG=1 for a traceback)",
            EXIT_FAILURE,
        )
    if options.json:
        print(json.dumps(result.data, indent=2, sort_keys=True, default=str))
    elif result.text:
        print(result.text)
    return result.exit_status
