"""The plugin manager: built-ins, entry points, the operator's switches, validation."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import logging
from collections.abc import Iterable, Mapping, Sequence
from types import CodeType, TracebackType
from typing import Any

import attrs
import pluggy

from sealrelay.core.config import Config
from sealrelay.exceptions import ConfigError, PluginError, SealrelayError
from sealrelay.hookspecs import HOOK_PREFIX, PROJECT_NAME, SPEC_MODULES


log = logging.getLogger(__name__)

#: Entry-point group through which installed distributions offer plugins.
ENTRY_POINT_GROUP = PROJECT_NAME


@attrs.frozen(kw_only=True)
class PluginInfo:
    """One plugin as ``sealrelay plugins`` shows it."""

    name: str
    #: ``builtin``, ``entry point`` or ``registered`` (passed to load_plugins as *extra*).
    source: str
    #: Python module (built-ins) or the entry point's value.
    module: str
    #: The distribution that installed it, and its version.
    distribution: str | None = None
    version: str | None = None
    enabled: bool = True
    hooks: tuple[str, ...] = ()


@attrs.frozen
class LoadedPlugins:
    """A configured plugin manager and what was found while building it."""

    pm: pluggy.PluginManager
    info: tuple[PluginInfo, ...]

    def names(self) -> tuple[str, ...]:
        return tuple(info.name for info in self.info)


class _SealrelayPluginManager(pluggy.PluginManager):
    """Ignores attributes without the hook prefix, so helpers in a plugin are never hooks, and
    refuses coroutine implementations, whenever a plugin is registered."""

    def parse_hookimpl_opts(self, plugin: object, name: str) -> pluggy.HookimplOpts | None:
        if not name.startswith(HOOK_PREFIX):
            return None
        return super().parse_hookimpl_opts(plugin, name)

    def register(self, plugin: object, name: str | None = None) -> str | None:
        for attribute in dir(plugin):
            if self.parse_hookimpl_opts(plugin, attribute) is None:
                continue
            if inspect.iscoroutinefunction(getattr(plugin, attribute)):
                raise PluginError(
                    f"plugin {name or self.get_canonical_name(plugin)!r} implements {attribute} "
                    "as a coroutine; hooks are synchronous and run in a worker thread: use a "
                    "plain def"
                )
        return super().register(plugin, name)


def blame(pm: pluggy.PluginManager, hook_name: str, error: BaseException) -> str | None:
    """The name of the plugin whose implementation of *hook_name* raised *error*, if any.

    Found by matching the traceback's frames against the implementations' code, so that
    wrappers keep working and no implementation is called outside pluggy.
    """
    caller = getattr(pm.hook, hook_name, None)
    if caller is None:
        return None
    codes: dict[CodeType, str] = {}
    for impl in caller.get_hookimpls():
        function = getattr(impl.function, "__func__", impl.function)
        code = getattr(function, "__code__", None)
        if code is not None:
            codes[code] = impl.plugin_name
    traceback: TracebackType | None = error.__traceback__
    while traceback is not None:
        name = codes.get(traceback.tb_frame.f_code)
        if name is not None:
            return name
        traceback = traceback.tb_next
    return None


def operator_error(error: Exception, plugin: str | None, doing: str) -> SealrelayError:
    """*error* as the operator sees it: our own errors already say what to do and pass
    unchanged; anything else becomes a PluginError naming the plugin."""
    if isinstance(error, SealrelayError):
        return error
    return PluginError(f"plugin {plugin or '?'!r} failed {doing}: {_describe(error)}")


def call_each(
    pm: pluggy.PluginManager, hook_name: str, *, isolate: bool = False, **kwargs: Any
) -> list[tuple[str, Any]]:
    """Call every implementation of a hook on its own, in pluggy's order, and return each
    plugin's answer (``None`` included), so that callers can say who answered what.

    Wrappers are not called. With *isolate*, a failing implementation is logged with its
    plugin's name and skipped (notifications); otherwise its exception is raised as an
    operator error naming the plugin.
    """
    answers = []
    for impl in reversed(getattr(pm.hook, hook_name).get_hookimpls()):
        if impl.wrapper or impl.hookwrapper:
            continue
        try:
            answers.append(
                (impl.plugin_name, impl.function(**{n: kwargs[n] for n in impl.argnames}))
            )
        except Exception as error:
            if isolate or not isinstance(error, SealrelayError):
                ignored = " (ignored)" if isolate else ""
                log.exception("plugin %s failed in %s%s", impl.plugin_name, hook_name, ignored)
            if not isolate:
                raise operator_error(error, impl.plugin_name, f"in {hook_name}") from error
    return answers


def notify(pm: pluggy.PluginManager, hook_name: str, **kwargs: Any) -> None:
    """Call a notification hook: every implementation runs; a failure is logged with the
    plugin's name and never reaches the caller, so notifications cannot change an outcome."""
    call_each(pm, hook_name, isolate=True, **kwargs)


def _available_entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(entry_point.name, entry_point)
    return found


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {_one_line(error)}"


def _one_line(error: BaseException) -> str:
    """pluggy's messages span lines; the operator gets one line."""
    return "; ".join(line.strip() for line in str(error).splitlines() if line.strip())


def _hook_names(pm: pluggy.PluginManager, plugin: object) -> tuple[str, ...]:
    callers = pm.get_hookcallers(plugin) or []
    return tuple(sorted(caller.name for caller in callers))


def _check_disabled(config: Config, known: Iterable[str]) -> None:
    known = sorted(known)
    for name in config.plugins.disabled:
        if name not in known:
            raise ConfigError(
                f"[plugins] disabled names unknown plugin {name!r}; installed plugins: "
                f"{', '.join(known)}"
            )
    for name in config.plugins.sections:
        if name not in known:
            raise ConfigError(
                f"[plugins.{name}] configures a plugin that is not installed; installed "
                f"plugins: {', '.join(known)}"
            )


def _register(pm: pluggy.PluginManager, plugin: object, name: str, origin: str) -> None:
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as error:
        raise PluginError(f"plugin {name!r} ({origin}) is invalid: {_one_line(error)}") from None
    except ValueError as error:
        raise PluginError(
            f"plugin {name!r} ({origin}) cannot be registered: {_one_line(error)}"
        ) from None
    except SealrelayError:
        raise
    except Exception as error:
        # Registering runs the plugin's historic hooks (sealrelay_addhooks) at once.
        raise operator_error(error, name, f"while registering ({origin})") from error


def load_plugins(
    config: Config,
    *,
    builtins: Sequence[str],
    entry_points: bool = True,
    extra: Mapping[str, object] | None = None,
) -> LoadedPlugins:
    """Build the plugin manager for *config*.

    *builtins* are module paths (``sealrelay.plugins.audit_log``); a plugin's name is the last
    component of its module path, or its entry point's name. *extra* are plugin objects by
    name, registered last, as tests and embedding applications do: they are checked,
    configured and switched off by ``[plugins] disabled`` like installed ones. Plugins named
    in ``[plugins] disabled`` are not imported at all.
    """
    extra = extra or {}
    pm = _SealrelayPluginManager(PROJECT_NAME)
    for spec_module in SPEC_MODULES:
        pm.add_hookspecs(importlib.import_module(spec_module))
    pm.hook.sealrelay_addhooks.call_historic(kwargs={"pluginmanager": pm})

    builtin_names = {module.rpartition(".")[2]: module for module in builtins}
    found = _available_entry_points() if entry_points else {}
    for name, entry_point in found.items():
        if name in builtin_names:
            raise PluginError(
                f"plugin {name!r} from {entry_point.dist.name if entry_point.dist else '?'} "
                "has the name of a built-in plugin; rename its entry point"
            )
    _check_disabled(config, [*builtin_names, *found, *extra])
    disabled = set(config.plugins.disabled)

    registered: list[tuple[PluginInfo, object | None]] = []
    for name, module_path in builtin_names.items():
        info = PluginInfo(
            name=name, source="builtin", module=module_path, enabled=name not in disabled
        )
        builtin = None
        if info.enabled:
            builtin = importlib.import_module(module_path)
            _register(pm, builtin, name, module_path)
        registered.append((info, builtin))

    for name, entry_point in sorted(found.items()):
        dist = entry_point.dist
        info = PluginInfo(
            name=name,
            source="entry point",
            module=entry_point.value,
            distribution=dist.name if dist else None,
            version=dist.version if dist else None,
            enabled=name not in disabled,
        )
        plugin = None
        if info.enabled:
            origin = f"entry point {entry_point.value} of {info.distribution}"
            try:
                plugin = entry_point.load()
            except Exception as error:  # noqa: BLE001 - any import failure is reported as one line
                raise PluginError(
                    f"plugin {name!r} ({origin}) failed to load: {_describe(error)}; "
                    f"fix or uninstall it, or add it to [plugins] disabled"
                ) from None
            _register(pm, plugin, name, origin)
        registered.append((info, plugin))

    for name, plugin in extra.items():
        info = PluginInfo(
            name=name,
            source="registered",
            module=getattr(plugin, "__name__", type(plugin).__module__),
            enabled=name not in disabled,
        )
        if info.enabled:
            _register(pm, plugin, name, "registered by the caller")
        registered.append((info, plugin if info.enabled else None))

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as error:
        name = pm.get_name(error.plugin) or "?"
        raise PluginError(
            f"plugin {name!r} implements a hook that does not exist: {_one_line(error)}; "
            "check the spelling against docs/hooks.md"
        ) from None

    try:
        pm.hook.sealrelay_configure.call_historic(kwargs={"config": config})
    except Exception as error:
        culprit = blame(pm, "sealrelay_configure", error)
        raise operator_error(error, culprit, "to configure") from error

    version = importlib.metadata.version(PROJECT_NAME)
    infos = tuple(
        attrs.evolve(
            info,
            hooks=_hook_names(pm, plugin) if plugin is not None else (),
            distribution=info.distribution or ("sealrelay" if info.source == "builtin" else None),
            version=info.version or (version if info.source == "builtin" else None),
        )
        for info, plugin in registered
    )
    return LoadedPlugins(pm=pm, info=infos)
