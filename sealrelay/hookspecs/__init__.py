"""The plugin API: every hook sealrelay calls, one module per family.

Rules that hold for every hook (docs/hooks.md explains them with examples):

- Hooks are named ``sealrelay_<verb>_<object>`` and called with keyword arguments only; an
  implementation may accept any subset of the arguments.
- Hooks are synchronous and run in a worker thread, never on the event loop. A coroutine
  function as an implementation is refused when the plugin is loaded.
- *firstresult* hooks stop at the first answer that is not ``None``; ``None`` means "not mine".
  Built-in implementations are ``trylast`` so that installed plugins win.
- *collect-all* hooks gather every implementation's answer.
- Exceptions in a stage hook defer (or, for :class:`~sealrelay.RejectMessage`, reject) the message
  or recipient, naming the plugin; a required step that nobody performed never passes plaintext.
  Exceptions in notification hooks are logged and otherwise ignored.
"""

from __future__ import annotations

from typing import Final

import pluggy


PROJECT_NAME: Final = "sealrelay"
HOOK_PREFIX: Final = "sealrelay_"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

#: Modules whose hook specifications make up the plugin API.
SPEC_MODULES: Final = (
    "sealrelay.hookspecs.lifecycle",
    "sealrelay.hookspecs.policy",
    "sealrelay.hookspecs.identities",
    "sealrelay.hookspecs.crypto",
    "sealrelay.hookspecs.messages",
    "sealrelay.hookspecs.frontends",
    "sealrelay.hookspecs.commands",
)
