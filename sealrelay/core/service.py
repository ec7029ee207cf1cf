"""What a background service (the key-pool replenisher, a CRL refresher) looks like to
``sealrelay serve``: a blocking job that runs in a process of its own."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs


if TYPE_CHECKING:
    from sealrelay.core.bus import MessageBus


@attrs.frozen(kw_only=True)
class BackgroundService:
    """A long-running job, outside the event loop and outside the message workers.

    ``serve`` runs ``run(bus, stop)`` in a process of its own, with an opened message bus
    through which the service reaches other plugins' hooks, and starts a new process when
    it dies. ``run`` returns soon after *stop* is set (SIGTERM), and never returns before
    that unless it failed.
    """

    #: Shown in logs and when the process is replaced.
    name: str
    run: Callable[[MessageBus, threading.Event], None]
    #: The process's niceness: CPU-heavy work (generating keys) at 19 takes only what the
    #: message workers leave idle.
    nice: int = attrs.field(
        default=0, validator=attrs.validators.and_(attrs.validators.ge(0), attrs.validators.le(19))
    )
