"""What a front end (SMTP, HTTP, IMAP retriever) looks like to ``sealrelay serve``."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Frontend(Protocol):
    """A network edge that feeds messages to the bus. Runs on the event loop; hands every
    message to the bus in a worker, never processing it on the loop."""

    #: Shown in logs and ``sealrelay plugins``.
    name: str

    async def start(self) -> None:
        """Start listening; return once ready to accept."""

    async def stop(self) -> None:
        """Stop accepting, finish what is in flight, release the listener."""
