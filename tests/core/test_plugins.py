from __future__ import annotations

import pytest

from sealrelay import hookimpl
from sealrelay.core.plugins import load_plugins
from sealrelay.exceptions import ConfigError, PluginError
from sealrelay.plugins import BUILTIN_PLUGINS


GOOD = """
from sealrelay import Policy, hookimpl

@hookimpl
def sealrelay_resolve_policy(sender, recipient):
    return Policy(sign="opaque", origin="good") if recipient.endswith("@partner.example") else None
"""


def test_builtins_load_and_are_described(make_config):
    plugins = load_plugins(make_config(), builtins=BUILTIN_PLUGINS)
    info = {i.name: i for i in plugins.info}
    assert set(info) >= {"commands_core", "audit_log"}
    assert info["audit_log"].enabled
    assert info["audit_log"].source == "builtin"
    assert "sealrelay_message_processed" in info["audit_log"].hooks
    assert plugins.pm.get_plugin("audit_log") is not None


def test_disabled_builtin_is_not_loaded_but_listed(make_config):
    plugins = load_plugins(
        make_config({"plugins": {"disabled": ["audit_log"]}}), builtins=BUILTIN_PLUGINS
    )
    info = {i.name: i for i in plugins.info}
    assert not info["audit_log"].enabled
    assert info["audit_log"].hooks == ()
    assert plugins.pm.get_plugin("audit_log") is None


def test_unknown_disabled_name_is_a_config_error(make_config):
    with pytest.raises(ConfigError, match=r"disabled names unknown plugin 'audit_lgo'.*audit_log"):
        load_plugins(
            make_config({"plugins": {"disabled": ["audit_lgo"]}}), builtins=BUILTIN_PLUGINS
        )


def test_section_for_a_plugin_that_is_not_installed(make_config):
    with pytest.raises(
        ConfigError, match=r"\[plugins.nothere\] configures a plugin that is not installed"
    ):
        load_plugins(make_config({"plugins": {"nothere": {"x": 1}}}), builtins=BUILTIN_PLUGINS)


def test_entry_point_plugin_is_discovered(make_config, install_plugin):
    install_plugin("good", GOOD)
    plugins = load_plugins(make_config(), builtins=BUILTIN_PLUGINS)
    info = {i.name: i for i in plugins.info}["good"]
    assert (info.source, info.distribution, info.version) == (
        "entry point",
        "sealrelay-good",
        "1.2.3",
    )
    assert info.hooks == ("sealrelay_resolve_policy",)


def test_disabled_entry_point_is_never_imported(make_config, install_plugin):
    install_plugin("bomb", "raise RuntimeError('imported although disabled')\n")
    plugins = load_plugins(
        make_config({"plugins": {"disabled": ["bomb"]}}), builtins=BUILTIN_PLUGINS
    )
    assert not {i.name: i for i in plugins.info}["bomb"].enabled


def test_plugin_that_raises_at_import_is_named(make_config, install_plugin):
    install_plugin("bomb", "raise RuntimeError('no licence file')\n")
    with pytest.raises(
        PluginError, match=r"plugin 'bomb' .* failed to load: RuntimeError: no licence file"
    ):
        load_plugins(make_config(), builtins=BUILTIN_PLUGINS)


def test_misspelled_hook_fails_start_up(make_config, install_plugin):
    install_plugin(
        "typo",
        """
        from sealrelay import hookimpl

        @hookimpl
        def sealrelay_resolve_polcy(sender, recipient):
            return None
        """,
    )
    with pytest.raises(PluginError, match=r"plugin 'typo' implements a hook that does not exist"):
        load_plugins(make_config(), builtins=BUILTIN_PLUGINS)


def test_unknown_argument_name_is_refused(make_config, install_plugin):
    install_plugin(
        "badarg",
        """
        from sealrelay import hookimpl

        @hookimpl
        def sealrelay_resolve_policy(sender, rcpt):
            return None
        """,
    )
    with pytest.raises(PluginError, match=r"plugin 'badarg' .* is invalid: .*rcpt"):
        load_plugins(make_config(), builtins=BUILTIN_PLUGINS)


def test_coroutine_implementation_is_refused(make_config, install_plugin):
    install_plugin(
        "asyncy",
        """
        from sealrelay import hookimpl

        @hookimpl
        async def sealrelay_resolve_policy(sender, recipient):
            return None
        """,
    )
    with pytest.raises(
        PluginError, match=r"'asyncy' implements sealrelay_resolve_policy as a coroutine"
    ):
        load_plugins(make_config(), builtins=BUILTIN_PLUGINS)


def test_entry_point_may_not_take_a_builtin_name(make_config, install_plugin):
    install_plugin("audit_log", GOOD)
    with pytest.raises(PluginError, match="has the name of a built-in plugin"):
        load_plugins(make_config(), builtins=BUILTIN_PLUGINS)


def test_configure_errors(make_config, install_plugin):
    install_plugin(
        "picky",
        """
        from sealrelay import ConfigError, hookimpl

        @hookimpl
        def sealrelay_configure(config):
            if config.plugin_config("picky").get("level") != 3:
                raise ConfigError("[plugins.picky] level must be 3")
        """,
    )
    with pytest.raises(ConfigError, match=r"\[plugins.picky\] level must be 3"):
        load_plugins(make_config({"plugins": {"picky": {"level": 2}}}), builtins=BUILTIN_PLUGINS)
    load_plugins(make_config({"plugins": {"picky": {"level": 3}}}), builtins=BUILTIN_PLUGINS)


def test_configure_crash_names_the_plugin(make_config, install_plugin):
    install_plugin(
        "crashy",
        """
        from sealrelay import hookimpl

        @hookimpl
        def sealrelay_configure(config):
            return 1 / 0
        """,
    )
    with pytest.raises(
        PluginError, match=r"plugin 'crashy' failed to configure: ZeroDivisionError"
    ):
        load_plugins(make_config(), builtins=BUILTIN_PLUGINS)


def test_helpers_without_the_prefix_are_not_hooks(make_config, install_plugin):
    install_plugin(
        "helpers",
        """
        from sealrelay import hookimpl

        def resolve_policy(sender, recipient):  # not a hook: no prefix, no marker
            raise AssertionError

        @hookimpl
        def sealrelay_message_processed(report):
            return None
        """,
    )
    plugins = load_plugins(make_config(), builtins=BUILTIN_PLUGINS)
    assert {i.name: i for i in plugins.info}["helpers"].hooks == ("sealrelay_message_processed",)


class Sized:
    """A plugin object handed to load_plugins by the caller."""

    def __init__(self) -> None:
        self.section: dict[str, object] | None = None

    @hookimpl
    def sealrelay_configure(self, config):
        self.section = dict(config.plugin_config("sized"))


def test_extra_plugins_are_loaded_like_installed_ones(make_config):
    plugin = Sized()
    config = make_config({"plugins": {"sized": {"limit": 5}}})
    plugins = load_plugins(config, builtins=BUILTIN_PLUGINS, extra={"sized": plugin})
    info = {i.name: i for i in plugins.info}["sized"]
    assert (info.source, info.enabled, info.hooks) == ("registered", True, ("sealrelay_configure",))
    assert plugin.section == {"limit": 5}


def test_extra_plugins_can_be_disabled(make_config):
    plugin = Sized()
    config = make_config({"plugins": {"disabled": ["sized"]}})
    plugins = load_plugins(config, builtins=BUILTIN_PLUGINS, extra={"sized": plugin})
    assert plugins.pm.get_plugin("sized") is None
    assert plugin.section is None


def test_extra_plugin_may_not_take_a_taken_name(make_config):
    with pytest.raises(PluginError, match="'audit_log'"):
        load_plugins(make_config(), builtins=BUILTIN_PLUGINS, extra={"audit_log": Sized()})
