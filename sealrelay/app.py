"""Assembles the application: configuration, the built-in plugins and installed ones."""

from __future__ import annotations

from pathlib import Path

from sealrelay.core.commands import CommandRegistry
from sealrelay.core.config import Config, load_config
from sealrelay.core.plugins import LoadedPlugins, load_plugins
from sealrelay.plugins import BUILTIN_PLUGINS


def load_application(config_path: Path | str) -> tuple[Config, LoadedPlugins, CommandRegistry]:
    """The configuration, the plugins it enables and their commands.

    Raises ConfigError for a bad config file or switch, PluginError for a plugin that fails.
    """
    config = load_config(config_path)
    plugins = load_plugins(config, builtins=BUILTIN_PLUGINS)
    return config, plugins, CommandRegistry.from_plugins(plugins)
