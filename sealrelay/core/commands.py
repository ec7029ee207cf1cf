"""Administrative commands: one registry that the CLI, the console and the API all run.

A command is a class with a name, a summary and declared parameters. Running one goes the
same way wherever it comes from: the parameters arrive as a mapping, are checked against the
declaration, the class is instantiated with them, ``validate`` runs, then ``run``; the run is
reported to ``sealrelay_command_executed`` with who ran it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, cast

import attrs

from sealrelay.core.bus import MessageBus
from sealrelay.core.config import Config
from sealrelay.core.plugins import LoadedPlugins, call_each, notify
from sealrelay.exceptions import CommandError, SealrelayError


_KINDS: dict[str, type] = {"str": str, "int": int, "bool": bool, "path": Path}


@attrs.frozen(kw_only=True)
class Parameter:
    """One parameter of a command, declared once for every interface."""

    #: The key in the parameter mapping; the CLI option is ``--`` + name with ``_`` as ``-``.
    name: str
    help: str
    #: ``str``, ``int``, ``bool`` (a flag) or ``path``.
    kind: str = attrs.field(default="str", validator=attrs.validators.in_(tuple(_KINDS)))
    required: bool = False
    #: A list of values (``--to A --to B``).
    multiple: bool = False
    #: Given by position on the command line rather than as an option.
    positional: bool = False
    choices: tuple[str, ...] = ()
    default: Any = None
    #: The CLI spelling when the name is a Python keyword (``--from`` for ``sender``).
    flag: str | None = None
    #: A one-letter CLI alias (``-o``).
    short: str | None = None
    #: Replaced by ``***`` in audit records.
    secret: bool = False

    @property
    def option(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> Any:
        """The value converted to the declared kind; CommandError naming the parameter if not."""
        if self.multiple:
            values = list(value) if isinstance(value, list | tuple) else [value]
            return [self._check_one(item) for item in values]
        return self._check_one(value)

    def _check_one(self, value: Any) -> Any:
        kind = _KINDS[self.kind]
        if kind is Path and isinstance(value, str):
            value = Path(value)
        if kind is int and isinstance(value, str) and value.lstrip("-").isdigit():
            value = int(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise CommandError(f"{self.option}: {value!r} is not {self.kind}")
        if self.choices and value not in self.choices:
            raise CommandError(
                f"{self.option}: {value!r} is not allowed; choose one of: {', '.join(self.choices)}"
            )
        return value


@attrs.frozen(kw_only=True)
class CommandResult:
    """What a command returns: data for ``--json`` and the API, text for a person."""

    data: Any
    text: str
    #: 0 on success, 1 when the command ran but what it processed failed.
    exit_status: int = 0


@attrs.frozen(kw_only=True)
class CommandRecord:
    """One run of a command, for the audit log."""

    command: str
    parameters: Mapping[str, Any]
    #: Who ran it: ``cli:<unix user>``, ``console:<login>``, ``api:<client>``.
    actor: str
    started_at: dt.datetime
    #: ``ok``, ``failed`` (processing failure) or ``error`` (bad parameters or an exception).
    outcome: str
    error: str | None = None


@attrs.define
class CommandContext:
    """What a running command may use. The bus is opened on first use and closed after."""

    config: Config
    plugins: LoadedPlugins
    actor: str

    @contextmanager
    def bus(self) -> Iterator[MessageBus]:
        """The message bus, opened (``sealrelay_startup``) for the duration of the block."""
        with MessageBus(self.plugins, self.config) as bus:
            yield bus


class AdminCommand:
    """Base class of every administrative command.

    Subclasses set ``name``, ``summary`` and ``parameters``, and implement ``run``. The
    constructor receives the checked parameters as keyword arguments in ``self.params``.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    parameters: ClassVar[tuple[Parameter, ...]] = ()
    #: Commands that change state are audited with before/after by the stores; read-only
    #: commands are still reported to ``sealrelay_command_executed``.
    read_only: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        self.params = params

    def validate(self, context: CommandContext) -> None:
        """Check the parameters together (beyond each one's kind); raise CommandError."""

    def run(self, context: CommandContext) -> CommandResult:
        raise NotImplementedError


@attrs.frozen
class CommandRegistry:
    """Every command contributed through ``sealrelay_register_commands``, by name."""

    commands: Mapping[str, type[AdminCommand]]

    @classmethod
    def from_plugins(cls, plugins: LoadedPlugins) -> CommandRegistry:
        commands: dict[str, type[AdminCommand]] = {}
        owners: dict[str, str] = {}
        for plugin, contributed in call_each(plugins.pm, "sealrelay_register_commands"):
            for command in cast(list[type[AdminCommand]] | None, contributed) or []:
                if command.name in commands:
                    raise SealrelayError(
                        f"command {command.name!r} is registered by plugin "
                        f"{owners[command.name]!r} and again by plugin {plugin!r}; "
                        "disable one of them"
                    )
                commands[command.name] = command
                owners[command.name] = plugin
        return cls(dict(sorted(commands.items())))

    def execute(
        self, name: str, params: Mapping[str, Any], context: CommandContext
    ) -> CommandResult:
        """Check, instantiate, validate and run a command; report the run."""
        command_class = self.commands.get(name)
        if command_class is None:
            raise CommandError(f"unknown command {name!r}; known: {', '.join(self.commands)}")
        started = dt.datetime.now(dt.UTC)
        shown = {
            p.name: "***" if p.secret else params.get(p.name)
            for p in command_class.parameters
            if p.name in params
        }
        outcome, failure = "error", None
        try:
            command = command_class(**_checked(command_class, params))
            command.validate(context)
            result = command.run(context)
            outcome = "ok" if result.exit_status == 0 else "failed"
        except SealrelayError as error:
            failure = str(error)
            raise
        except Exception as error:
            failure = f"{type(error).__name__}: {error}"
            raise
        finally:
            self._report(
                context=context,
                name=name,
                params=shown,
                started=started,
                outcome=outcome,
                error=failure,
            )
        return result

    @staticmethod
    def _report(
        *,
        context: CommandContext,
        name: str,
        params: Mapping[str, Any],
        started: dt.datetime,
        outcome: str,
        error: str | None,
    ) -> None:
        record = CommandRecord(
            command=name,
            parameters={key: _jsonable(value) for key, value in params.items()},
            actor=context.actor,
            started_at=started,
            outcome=outcome,
            error=error,
        )
        notify(context.plugins.pm, "sealrelay_command_executed", record=record)


def read_file(path: Path) -> bytes:
    """The bytes of a file a command was given; CommandError naming it when unreadable."""
    try:
        return path.read_bytes()
    except OSError as error:
        raise CommandError(f"cannot read {path}: {error.strerror}") from None


def write_file(path: Path, content: bytes) -> None:
    """Write a file a command was asked for (its directory made); CommandError on failure."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    except OSError as error:
        raise CommandError(f"cannot write {path}: {error.strerror}") from None


def read_password(path: Path | None) -> str | None:
    """The first line of a password file (without its line break); None without a file."""
    if path is None:
        return None
    try:
        text = read_file(path).decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError(f"{path}: a password file must be UTF-8 text") from None
    return text.splitlines()[0] if text else ""


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value


def _checked(command: type[AdminCommand], params: Mapping[str, Any]) -> dict[str, Any]:
    declared = {p.name: p for p in command.parameters}
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise CommandError(f"{command.name}: unknown parameter {unknown[0]!r}")
    checked: dict[str, Any] = {}
    for name, parameter in declared.items():
        value = params.get(name)
        if value is None or (parameter.multiple and value == []):
            if parameter.required:
                raise CommandError(f"{command.name}: {parameter.option} is required")
            checked[name] = [] if parameter.multiple else parameter.default
            continue
        checked[name] = parameter.check(value)
    return checked
