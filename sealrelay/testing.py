"""Helpers for testing plugins: a config and a loaded relay in a few lines, with your plugin in
it as if it were installed. Part of the public API, for plugin authors (docs/writing-plugins.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sealrelay.core.bus import MessageBus
from sealrelay.core.config import Config, parse_config
from sealrelay.core.plugins import LoadedPlugins, load_plugins
from sealrelay.plugins import BUILTIN_PLUGINS


def make_config(directory: Path, document: Mapping[str, Any] | None = None) -> Config:
    """A configuration from a mapping shaped like config.toml, its data directory and
    database inside *directory* unless the mapping says otherwise."""
    document = dict(document or {})
    storage = {
        "data_dir": str(directory / "var"),
        "url": f"sqlite:///{directory / 'var' / 'sealrelay.db'}",
        **document.get("storage", {}),
    }
    security = {"master_key_file": str(directory / "var" / "master.key")}
    document["storage"] = storage
    document["security"] = {**security, **document.get("security", {})}
    return parse_config(document, directory / "config.toml")


def load_test_plugins(
    config: Config,
    plugins: Mapping[str, object] | None = None,
    *,
    builtins: Sequence[str] = BUILTIN_PLUGINS,
) -> LoadedPlugins:
    """The built-ins and *plugins* (by name), loaded and configured as installed plugins are:
    validated, given their ``[plugins.<name>]`` section, switched off by ``disabled``.
    Installed entry points are not loaded, so an installed copy of your plugin cannot load
    twice."""
    return load_plugins(config, builtins=builtins, entry_points=False, extra=plugins)


@contextmanager
def open_bus(
    config: Config,
    plugins: Mapping[str, object] | None = None,
    *,
    builtins: Sequence[str] = BUILTIN_PLUGINS,
) -> Iterator[MessageBus]:
    """A started message bus over the built-ins and *plugins*; shut down when the block ends."""
    with MessageBus(load_test_plugins(config, plugins, builtins=builtins), config) as bus:
        yield bus
