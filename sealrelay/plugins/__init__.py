"""The built-in plugins. Each is an ordinary plugin a third party could have written; their
implementations of firstresult hooks are ``trylast`` so that installed plugins win."""

from __future__ import annotations

from typing import Final


#: Every built-in plugin module, in registration order. Its name is the last component.
BUILTIN_PLUGINS: Final = (
    "sealrelay.plugins.commands_core",
    "sealrelay.plugins.audit_log",
    "sealrelay.plugins.policy_sql",
    "sealrelay.plugins.ca_builtin",
    "sealrelay.plugins.keypool",
    "sealrelay.plugins.crypto_smime",
    "sealrelay.plugins.frontend_smtp",
)
