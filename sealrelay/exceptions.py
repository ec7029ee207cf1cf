"""The errors sealrelay raises: every message says what went wrong and what to do about it."""

from __future__ import annotations


class SealrelayError(Exception):
    """Base of every error sealrelay raises on purpose."""


class ConfigError(SealrelayError):
    """config.toml (or the environment) is malformed or names something that does not exist."""


class PluginError(SealrelayError):
    """A plugin could not be loaded, validated or registered."""


class CommandError(SealrelayError):
    """An administrative command was called with bad parameters or failed."""


class ProvisioningError(SealrelayError):
    """A subscriber could not be given a key and certificate (no key pair, no CA, no store)."""

    def __init__(self, reason: str, *, plugin: str | None = None) -> None:
        super().__init__(reason)
        #: The plugin that failed, when one did (rather than nobody answering).
        self.plugin = plugin


class MessageError(SealrelayError):
    """Processing one message failed; the message is deferred or rejected, never passed on."""

    #: True when retrying later may succeed (SMTP 4xx), False when it never will (5xx).
    temporary: bool = True

    def __init__(self, reason: str, *, plugin: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.plugin = plugin


class DeferMessage(MessageError):
    """Raised by a plugin: process this message again later (SMTP 451)."""

    temporary = True


class RejectMessage(MessageError):
    """Raised by a plugin: this message (or recipient) can never pass (SMTP 554/550)."""

    temporary = False
