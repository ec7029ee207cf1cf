"""sealrelay: a secure email relay that applies S/MIME by policy.

This module is the public API for plugins; ``sealrelay.core`` is internal.
"""

from __future__ import annotations

from sealrelay.core.address import Address, AddressError
from sealrelay.core.bus import MessageBus
from sealrelay.core.certificate import Certificate, Identity, IssuedCertificate
from sealrelay.core.commands import (
    AdminCommand,
    CommandContext,
    CommandRecord,
    CommandResult,
    Parameter,
)
from sealrelay.core.config import Config
from sealrelay.core.envelope import Envelope
from sealrelay.core.frontend import Frontend
from sealrelay.core.policy import Policy
from sealrelay.core.results import (
    Decryption,
    Encryption,
    InboundResult,
    OutboundResult,
    OutgoingMessage,
    ProcessingReport,
    RecipientFailure,
    SignatureCheck,
    SignatureVerdict,
)
from sealrelay.core.service import BackgroundService
from sealrelay.core.subscriber import Subscriber
from sealrelay.exceptions import (
    CommandError,
    ConfigError,
    DeferMessage,
    MessageError,
    PluginError,
    ProvisioningError,
    RejectMessage,
    SealrelayError,
)
from sealrelay.hookspecs import hookimpl, hookspec


__all__ = [
    "Address",
    "AddressError",
    "AdminCommand",
    "BackgroundService",
    "Certificate",
    "CommandContext",
    "CommandError",
    "CommandRecord",
    "CommandResult",
    "Config",
    "ConfigError",
    "Decryption",
    "DeferMessage",
    "Encryption",
    "Envelope",
    "Frontend",
    "Identity",
    "InboundResult",
    "IssuedCertificate",
    "MessageBus",
    "MessageError",
    "OutboundResult",
    "OutgoingMessage",
    "Parameter",
    "PluginError",
    "Policy",
    "ProcessingReport",
    "ProvisioningError",
    "RecipientFailure",
    "RejectMessage",
    "SealrelayError",
    "SignatureCheck",
    "SignatureVerdict",
    "Subscriber",
    "hookimpl",
    "hookspec",
]
