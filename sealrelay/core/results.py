"""What processing produced: per-recipient decisions, outgoing messages and reports."""

from __future__ import annotations

from typing import Any

import attrs

from sealrelay.core.certificate import Certificate
from sealrelay.core.envelope import Envelope
from sealrelay.core.policy import Policy


@attrs.frozen(kw_only=True)
class RecipientDecision:
    """The resolved policy for one recipient and what follows from it."""

    recipient: str
    #: The effective policy: signing is ``none`` where the message is signed already or the
    #: stage is off. Recipients with equal policy and ``encrypt`` share one outgoing copy.
    policy: Policy
    #: ``deliver``, ``reject`` (never passes) or ``defer`` (may pass later).
    action: str
    encrypt: bool = False
    #: The certificate the message will be encrypted to.
    certificate: Certificate | None = None
    reason: str | None = None
    #: The plugin whose failure caused a reject or defer, when one did.
    plugin: str | None = None
    #: Whether the recipient was not named in To or Cc (a Bcc recipient).
    hidden: bool = False


@attrs.frozen(kw_only=True)
class RecipientFailure:
    """A recipient the message could not be processed for, and why."""

    recipient: str
    reason: str
    #: True: retry later (SMTP 4xx). False: never (SMTP 5xx).
    temporary: bool
    #: The plugin whose failure caused it, when one did.
    plugin: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipient": self.recipient,
            "reason": self.reason,
            "temporary": self.temporary,
            "plugin": self.plugin,
        }


@attrs.frozen(kw_only=True)
class OutgoingMessage:
    """One message to send, for a group of recipients with equal treatment."""

    recipients: tuple[str, ...]
    content: bytes = attrs.field(repr=False)
    signed: bool
    sign_mode: str
    encrypted: bool
    cipher: str | None


@attrs.frozen(kw_only=True)
class OutboundResult:
    messages: tuple[OutgoingMessage, ...] = ()
    rejected: tuple[RecipientFailure, ...] = ()
    deferred: tuple[RecipientFailure, ...] = ()


@attrs.frozen(kw_only=True)
class SignatureVerdict:
    """The result of verifying one message's signature (DESIGN.md section 4).

    ``status`` is ``valid``, ``invalid`` or ``none``; ``crypto``, ``chain`` and ``address`` are
    ``ok`` or a reason code each, and ``reason`` is the first one that is not ``ok``.
    """

    status: str = attrs.field(validator=attrs.validators.in_(("valid", "invalid", "none")))
    signer: str | None = None
    reason: str | None = None
    crypto: str | None = None
    chain: str | None = None
    address: str | None = None

    @classmethod
    def unsigned(cls) -> SignatureVerdict:
        return cls(status="none")

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen(kw_only=True)
class SignatureCheck:
    """What a verifier returns: the verdict, the content inside the signature and the signer's
    certificates, so the core can unwrap an opaque signature and harvest certificates."""

    verdict: SignatureVerdict
    #: The signed entity (for clear signatures the first part, for opaque the encapsulated one).
    content: bytes = attrs.field(repr=False)
    signer_certificate: Certificate | None = None
    #: Every certificate carried in the signature (signer and intermediates).
    certificates: tuple[Certificate, ...] = ()


@attrs.frozen(kw_only=True)
class Encryption:
    """What an encryptor returns: the encrypted message and the content cipher it chose."""

    content: bytes = attrs.field(repr=False)
    cipher: str


@attrs.frozen(kw_only=True)
class Decryption:
    """What a decryptor returns: the decrypted entity and the content cipher it was under."""

    content: bytes = attrs.field(repr=False)
    cipher: str


@attrs.frozen(kw_only=True)
class InboundResult:
    decrypted: bool = False
    #: Why decryption did not happen when the message was encrypted, else None.
    decryption_error: str | None = None
    signature: SignatureVerdict = attrs.field(factory=SignatureVerdict.unsigned)
    #: Fingerprints of certificates stored for later encryption.
    harvested: tuple[str, ...] = ()
    #: The message to deliver: decrypted and annotated.
    content: bytes = attrs.field(default=b"", repr=False)


@attrs.frozen(kw_only=True)
class ProcessingReport:
    """Handed to ``sealrelay_message_processed`` after every message, in and out."""

    envelope: Envelope
    direction: str
    outbound: OutboundResult | None = None
    inbound: InboundResult | None = None
    duration_seconds: float = 0.0


@attrs.frozen(kw_only=True)
class PolicyAnswer:
    """One plugin's answer to ``sealrelay_resolve_policy``."""

    plugin: str
    policy: Policy | None


@attrs.frozen(kw_only=True)
class PolicyExplanation:
    """The effective policy for a pair, and every plugin's answer in the order they were asked."""

    sender: str
    recipient: str
    policy: Policy
    #: The plugin whose answer won, or ``None`` when the configured default applied.
    winner: str | None
    answers: tuple[PolicyAnswer, ...] = ()
    #: Every rule that matched, per plugin, winning rule first (``sealrelay_explain_policy``).
    rules: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "sender": self.sender,
            "recipient": self.recipient,
            "policy": self.policy.to_dict(),
            "winner": self.winner or "[policy.default]",
            "answers": [
                {"plugin": a.plugin, "policy": a.policy.to_dict() if a.policy else None}
                for a in self.answers
            ],
            "rules": [{"plugin": plugin, "rule": rule} for plugin, rule in self.rules],
        }
