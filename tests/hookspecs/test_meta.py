"""Tests that keep the plugin system honest (docs/notes style 4.10): every hook is documented
with its exact signature and has a test; the built-ins follow the rules a third party must;
the pinned hooks stay pinned.

Every list of hooks here comes from the specifications (tests/hookspecs/__init__.py), so a
hook added, renamed or given another argument shows up as a failure naming it.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pluggy
import pytest

import sealrelay.hookspecs
import sealrelay.plugins
from sealrelay import PluginError, hookimpl
from sealrelay.core.config import Config, parse_config
from sealrelay.core.plugins import LoadedPlugins, load_plugins
from sealrelay.hookspecs import HOOK_PREFIX, SPEC_MODULES
from sealrelay.plugins import BUILTIN_PLUGINS
from tests.hookspecs import (
    HOOK_TESTS,
    HOOKS_DOC,
    HookSpec,
    hook_names,
    hook_sections,
    hookspecs,
    spec_functions,
)


SPECS = hookspecs()
BY_NAME = {spec.name: spec for spec in SPECS}


def by_hook() -> pytest.MarkDecorator:
    """Parametrize a test over every hook, each case named after it."""
    return pytest.mark.parametrize("spec", SPECS, ids=[spec.name for spec in SPECS])


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return parse_config({"storage": {"data_dir": str(tmp_path / "var")}}, tmp_path / "config.toml")


@pytest.fixture
def builtins_loaded(config: Config) -> LoadedPlugins:
    # Entry points off: what an installed third-party plugin does is not the built-ins' fault.
    return load_plugins(config, builtins=BUILTIN_PLUGINS, entry_points=False)


def builtin_impls(loaded: LoadedPlugins) -> Iterator[tuple[str, pluggy.HookImpl]]:
    """(hook name, implementation) for every hook implementation of a built-in plugin."""
    builtin_names = {module.rpartition(".")[2] for module in BUILTIN_PLUGINS}
    for spec in SPECS:
        for impl in getattr(loaded.pm.hook, spec.name).get_hookimpls():
            if impl.plugin_name in builtin_names:
                yield spec.name, impl


# -- the specifications -------------------------------------------------------------------


def test_there_are_hooks_to_check():
    # Guards every parametrized test below against passing vacuously.
    assert len(SPECS) >= 20
    assert {"sealrelay_resolve_policy", "sealrelay_message_processed"} <= set(BY_NAME)


def test_hook_names_are_prefixed():
    unprefixed = [spec.name for spec in SPECS if not spec.name.startswith(HOOK_PREFIX)]
    assert unprefixed == []


def test_every_prefixed_function_in_a_spec_module_is_a_spec():
    # A forgotten @hookspec leaves a function that looks like a hook but is none: an
    # implementation of it would then fail validation with a puzzling "unknown hook".
    unmarked = [
        f"{module}.{function.__name__}"
        for module, function in spec_functions()
        if function.__name__.startswith(HOOK_PREFIX) and function.__name__ not in BY_NAME
    ]
    assert unmarked == []


def test_every_spec_module_is_listed():
    on_disk = {
        f"sealrelay.hookspecs.{module.name}"
        for module in pkgutil.iter_modules(sealrelay.hookspecs.__path__)
    }
    assert on_disk == set(SPEC_MODULES)


def test_hook_names_are_unique_across_modules():
    names = hook_names()
    assert len(names) == len(set(names))


@by_hook()
def test_spec_is_documented_in_its_docstring(spec: HookSpec):
    doc = inspect.getdoc(spec.function) or ""
    assert ":returns:" in doc, f"{spec.name}: say what an implementation returns"
    assert "Failure semantics" in doc, f"{spec.name}: say what an exception does"
    for argument in spec.arguments:
        assert f":param {argument}:" in doc, f"{spec.name}: document {argument}"


def test_argument_names_mean_one_thing():
    # Hooks are called with keyword arguments and implementations pick what they need by
    # name: the same name must carry the same type in every hook (docs/notes style 4.2).
    types_by_argument: dict[str, dict[str, str]] = {}
    for spec in SPECS:
        for name, parameter in inspect.signature(spec.function).parameters.items():
            assert parameter.annotation is not inspect.Parameter.empty, f"{spec.name}({name})"
            types_by_argument.setdefault(name, {})[str(parameter.annotation)] = spec.name
    inconsistent = {name: seen for name, seen in types_by_argument.items() if len(seen) > 1}
    assert inconsistent == {}


def test_pinned_hooks_keep_their_contract():
    # DESIGN.md section 3 pins these two (public): names, argument names and kinds.
    resolve = BY_NAME["sealrelay_resolve_policy"]
    assert resolve.arguments == ("sender", "recipient", "envelope")
    assert (resolve.firstresult, resolve.historic) == (True, False)
    processed = BY_NAME["sealrelay_message_processed"]
    assert processed.arguments == ("report",)
    assert (processed.firstresult, processed.historic) == (False, False)


# -- the reference documentation ----------------------------------------------------------


@by_hook()
def test_every_hook_is_documented(spec: HookSpec):
    headings = [section.signature for section in hook_sections() if section.name == spec.name]
    assert headings == [spec.signature], (
        f"docs/hooks.md needs exactly one heading `## `{spec.signature}`` "
        f"(found: {headings or 'none'})"
    )


def test_every_documented_hook_exists():
    # A renamed or removed hook must not live on in the reference.
    stale = [
        s.signature for s in hook_sections() if s.signature not in {x.signature for x in SPECS}
    ]
    assert stale == []


@by_hook()
def test_documented_kind_matches_the_spec(spec: HookSpec):
    [section] = [s for s in hook_sections() if s.name == spec.name]
    kind = section.field("Kind")
    assert kind is not None, f"{HOOKS_DOC.name}:{section.line}: a **Kind:** line is missing"
    assert kind.split()[0].rstrip(":.,") == spec.kind


@by_hook()
def test_implemented_by_names_the_builtins_that_implement_it(spec, builtins_loaded):
    [section] = [s for s in hook_sections() if s.name == spec.name]
    text = section.field("Implemented by")
    assert text is not None, f"{HOOKS_DOC.name}:{section.line}: **Implemented by:** is missing"
    documented = set() if "no built-in yet" in text else set(re.findall(r"`(\w+)`", text))
    actual = {
        impl.plugin_name for name, impl in builtin_impls(builtins_loaded) if name == spec.name
    }
    assert documented == actual, f"{spec.name}: docs say {documented or 'none'}, code says {actual}"


# -- the tests ------------------------------------------------------------------------------


def _hook_test_names() -> set[str]:
    tree = ast.parse(HOOK_TESTS.read_text(encoding="utf-8"))
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_hook_")
    }


@by_hook()
def test_every_hook_has_a_test(spec: HookSpec):
    assert f"test_hook_{spec.name}" in _hook_test_names()


def test_every_hook_test_tests_a_hook():
    stale = sorted(_hook_test_names() - {f"test_hook_{name}" for name in hook_names()})
    assert stale == []


# -- the built-in plugins -------------------------------------------------------------------


def test_builtins_validate(builtins_loaded):
    builtins_loaded.pm.check_pending()
    assert set(builtins_loaded.names()) == {m.rpartition(".")[2] for m in BUILTIN_PLUGINS}
    assert all(info.enabled and info.source == "builtin" for info in builtins_loaded.info)


def test_builtin_list_is_complete():
    on_disk = {
        f"sealrelay.plugins.{module.name}"
        for module in pkgutil.iter_modules(sealrelay.plugins.__path__)
    }
    assert on_disk <= set(BUILTIN_PLUGINS), "add it to BUILTIN_PLUGINS, or move it out"


def test_builtins_have_no_coroutine_implementations(builtins_loaded):
    asynchronous = [
        f"{impl.plugin_name}.{name}"
        for name, impl in builtin_impls(builtins_loaded)
        if inspect.iscoroutinefunction(impl.function) or inspect.isasyncgenfunction(impl.function)
    ]
    assert asynchronous == []


def test_builtins_use_no_old_style_wrappers(builtins_loaded):
    old_style = [
        f"{impl.plugin_name}.{name}"
        for name, impl in builtin_impls(builtins_loaded)
        if impl.hookwrapper
    ]
    assert old_style == []


def test_builtin_firstresult_implementations_are_trylast(builtins_loaded):
    # So that any installed plugin's answer wins without ordering games (DESIGN.md 1).
    eager = [
        f"{impl.plugin_name}.{name}"
        for name, impl in builtin_impls(builtins_loaded)
        if BY_NAME[name].firstresult and not impl.wrapper and not impl.trylast
    ]
    assert eager == []


def test_builtins_import_no_other_plugin():
    # Each built-in is an ordinary plugin; the core never imports one (DESIGN.md 1).
    for module_path in BUILTIN_PLUGINS:
        source = inspect.getsource(importlib.import_module(module_path))
        others = [m for m in BUILTIN_PLUGINS if m != module_path and m in source]
        assert others == [], module_path
    importing_plugins = re.compile(r"^\s*(from|import)\s+sealrelay\.plugins\b", re.MULTILINE)
    core = importlib.import_module("sealrelay.core")
    offenders = [
        module.name
        for module in pkgutil.iter_modules(core.__path__)
        if importing_plugins.search(
            inspect.getsource(importlib.import_module(f"sealrelay.core.{module.name}"))
        )
    ]
    assert offenders == []


# -- third-party plugins: what the manager refuses ------------------------------------------


@pytest.fixture
def install_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """Install a one-module distribution offering a ``sealrelay`` entry point, the way pip
    lays it out (module plus dist-info on sys.path), so that discovery is the real thing."""
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    installed: list[str] = []

    def install(name: str, source: str) -> None:
        module = f"sealrelay_{name}"
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        info = site / f"sealrelay_{name}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: sealrelay-{name}\nVersion: 0.1\n"
        )
        (info / "entry_points.txt").write_text(f"[sealrelay]\n{name} = {module}\n")
        installed.append(module)

    yield install
    for module in installed:
        sys.modules.pop(module, None)


def test_load_refuses_a_coroutine_implementation(config, install_distribution):
    install_distribution(
        "async_policy",
        """
        from __future__ import annotations

        from sealrelay import hookimpl


        @hookimpl
        async def sealrelay_resolve_policy(recipient):
            return None
        """,
    )
    # An async def would return a coroutine: a "non-None answer" to a firstresult hook that
    # nobody awaits. It is refused when the plugin loads, naming it and the hook.
    with pytest.raises(PluginError, match=r"'async_policy' implements sealrelay_resolve_policy"):
        load_plugins(config, builtins=BUILTIN_PLUGINS)


def test_load_refuses_an_implementation_of_no_hook(config, install_distribution):
    install_distribution(
        "typo",
        """
        from __future__ import annotations

        from sealrelay import hookimpl


        @hookimpl
        def sealrelay_resolve_polcy(recipient):
            return None
        """,
    )
    with pytest.raises(PluginError, match=r"'typo' implements a hook that does not exist"):
        load_plugins(config, builtins=BUILTIN_PLUGINS)


def test_late_registered_coroutine_implementation_is_refused(builtins_loaded):
    class AsyncPolicy:
        @hookimpl
        async def sealrelay_resolve_policy(self, recipient: str) -> None:
            return None

    with pytest.raises(PluginError, match="coroutine"):
        builtins_loaded.pm.register(AsyncPolicy(), name="async_policy")
