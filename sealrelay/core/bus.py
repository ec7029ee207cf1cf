"""The message bus: where a message goes next, stage by stage, in a fixed order.

Outbound: strip forged markers -> resolve a policy per recipient -> find certificates ->
group recipients by treatment -> sign (sender's key) -> encrypt (recipients' certificates).
Inbound: strip forged markers -> decrypt -> verify -> harvest -> annotate; repeated for
nested layers. Sign-before-encrypt is a security property and is not configurable; the
operator only switches stages off in ``[stages]``.

Every hook is called from here, synchronously: front ends call ``run_outbound`` /
``run_inbound``, which move the work to a worker thread. A step the policy requires that no
plugin performed defers or rejects; plaintext is never passed on in its place.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from types import TracebackType
from typing import Any, Final, cast

import attrs

from sealrelay.core import headers
from sealrelay.core.certificate import Certificate, Identity, best_encryption_certificate
from sealrelay.core.config import Config
from sealrelay.core.envelope import Envelope
from sealrelay.core.plugins import LoadedPlugins, blame, call_each, notify, operator_error
from sealrelay.core.policy import Policy
from sealrelay.core.results import (
    InboundResult,
    OutboundResult,
    OutgoingMessage,
    PolicyAnswer,
    PolicyExplanation,
    ProcessingReport,
    RecipientDecision,
    RecipientFailure,
    SignatureCheck,
    SignatureVerdict,
)
from sealrelay.exceptions import (
    DeferMessage,
    MessageError,
    PluginError,
    ProvisioningError,
    SealrelayError,
)


log = logging.getLogger(__name__)

#: Nested S/MIME layers unwrapped at most (signed inside encrypted inside signed ...).
MAX_LAYERS: Final = 6


class MessageBus:
    """Runs the pipelines over the loaded plugins. One instance per process; thread-safe as long
    as the plugins are (each message is processed in one thread from start to end)."""

    def __init__(self, plugins: LoadedPlugins, config: Config) -> None:
        self.plugins = plugins
        self.config = config
        self._hook = plugins.pm.hook
        self._opened = False

    # -- lifecycle ------------------------------------------------------------------------

    def open(self) -> MessageBus:
        """Call ``sealrelay_startup`` once. Callers open the bus before processing with it:
        plugins may open their databases and caches only then."""
        if not self._opened:
            try:
                self._hook.sealrelay_startup(config=self.config)
            except Exception as error:
                self._notify("sealrelay_shutdown", config=self.config)
                culprit = blame(self.plugins.pm, "sealrelay_startup", error)
                raise operator_error(error, culprit, "to start") from error
            self._opened = True
        return self

    def close(self) -> None:
        if self._opened:
            self._opened = False
            self._notify("sealrelay_shutdown", config=self.config)

    def __enter__(self) -> MessageBus:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- async edges ----------------------------------------------------------------------

    async def run_outbound(self, envelope: Envelope, message: bytes) -> OutboundResult:
        """``process_outbound`` in a worker thread, for front ends on the event loop."""
        return await asyncio.to_thread(self.process_outbound, envelope, message)

    async def run_inbound(
        self, envelope: Envelope, message: bytes, recipient: str
    ) -> InboundResult:
        """``process_inbound`` in a worker thread, for front ends on the event loop."""
        return await asyncio.to_thread(self.process_inbound, envelope, message, recipient)

    # -- hook calls -----------------------------------------------------------------------

    def _call(self, hook_name: str, **kwargs: Any) -> Any:
        """Call a stage hook; any failure becomes a MessageError naming the plugin."""
        try:
            return getattr(self._hook, hook_name)(**kwargs)
        except MessageError as error:
            error.plugin = error.plugin or blame(self.plugins.pm, hook_name, error)
            raise
        except Exception as error:
            plugin = blame(self.plugins.pm, hook_name, error)
            log.exception("plugin %s failed in %s", plugin or "?", hook_name)
            raise DeferMessage(
                f"plugin {plugin or '?'} failed in {hook_name}: {type(error).__name__}: {error}",
                plugin=plugin,
            ) from error

    def _notify(self, hook_name: str, **kwargs: Any) -> None:
        notify(self.plugins.pm, hook_name, **kwargs)

    def _implementers(self, hook_name: str) -> str:
        names = [impl.plugin_name for impl in getattr(self._hook, hook_name).get_hookimpls()]
        return ", ".join(names) or "none is enabled"

    # -- policy ---------------------------------------------------------------------------

    def resolve_policy(self, sender: str, recipient: str, envelope: Envelope) -> Policy:
        """The first plugin's answer, else ``[policy.default]``."""
        policy = self._call(
            "sealrelay_resolve_policy", sender=sender, recipient=recipient, envelope=envelope
        )
        return policy if policy is not None else self.config.default_policy

    def explain_policy(self, sender: str, recipient: str) -> PolicyExplanation:
        """The policy the bus applies to the pair, every plugin's own answer in call order,
        which one won, and the rules each policy source matched."""
        envelope = Envelope(sender=sender, recipients=(recipient,))
        pair: dict[str, Any] = {"sender": envelope.sender, "recipient": envelope.recipients[0]}
        try:
            applied = self.resolve_policy(envelope=envelope, **pair)
        except MessageError as error:
            raise PluginError(f"policy resolution failed: {error.reason}") from error
        pm = self.plugins.pm
        answers = [
            PolicyAnswer(plugin=plugin, policy=cast(Policy | None, answer))
            for plugin, answer in call_each(
                pm, "sealrelay_resolve_policy", envelope=envelope, **pair
            )
        ]
        winner = next(
            (
                a.plugin
                for a in answers
                if a.policy == applied and a.policy.origin == applied.origin
            ),
            None,
        )
        if winner is None and applied is not self.config.default_policy:
            # A wrapper replaced the answers: name it, since its policy is the one applied.
            hook = self._hook.sealrelay_resolve_policy
            winner = ", ".join(i.plugin_name for i in hook.get_hookimpls() if i.wrapper) or None
        rules = [
            (plugin, line)
            for plugin, lines in call_each(
                pm, "sealrelay_explain_policy", envelope=envelope, **pair
            )
            for line in cast(list[str] | None, lines) or []
        ]
        return PolicyExplanation(
            sender=envelope.sender,
            recipient=envelope.recipients[0],
            policy=applied,
            winner=winner,
            answers=tuple(answers),
            rules=tuple(rules),
        )

    def check_credentials(self, login: str, password: str) -> str | None:
        """The subscriber address a login and password belong to, or None when refused.

        Raises MessageError (temporary) when a plugin failed, so a front end can answer
        "try again later" rather than "wrong password".
        """
        address: str | None = self._call(
            "sealrelay_check_credentials", login=login, password=password
        )
        return address

    # -- outbound -------------------------------------------------------------------------

    def process_outbound(self, envelope: Envelope, message: bytes) -> OutboundResult:
        """Protect a message a subscriber sends; one outgoing copy per group of recipients."""
        started = time.perf_counter()
        # Our markers are never taken from outside; Bcc stays off every copy, since a client may
        # leave it in (sendmail -t does) and every copy would show who else got the message.
        message = headers.remove_headers(
            message, headers.SECURITY_HEADER_PREFIX, "Bcc", "Resent-Bcc"
        )
        parsed = headers.parse_headers(message)
        layer = headers.layer_of(parsed)
        if layer != headers.PLAIN and not headers.carries_cms(message, layer):
            # A label is not a signature or an envelope: the policy applies as to plain mail.
            layer = headers.PLAIN
        visible = headers.recipients_named(parsed)
        decisions = [self._decide(envelope, rcpt, layer, visible) for rcpt in envelope.recipients]

        rejected = [_failure(d, temporary=False) for d in decisions if d.action == "reject"]
        deferred = [_failure(d, temporary=True) for d in decisions if d.action == "defer"]
        groups: dict[tuple[Policy, bool, str], list[RecipientDecision]] = {}
        for decision in decisions:
            if decision.action == "deliver":
                # Bcc recipients of an encrypted message get their own copy: their certificate
                # (RecipientInfo) must not show in the other recipients' copy.
                private = decision.recipient if decision.encrypt and decision.hidden else ""
                key = (decision.policy, decision.encrypt, private)
                groups.setdefault(key, []).append(decision)

        messages = []
        for (policy, encrypt, _), members in groups.items():
            try:
                messages.append(
                    self._protect(
                        envelope=envelope,
                        message=message,
                        layer=layer,
                        policy=policy,
                        encrypt=encrypt,
                        members=members,
                    )
                )
            except MessageError as error:
                failures = [
                    RecipientFailure(
                        recipient=d.recipient,
                        reason=error.reason,
                        temporary=error.temporary,
                        plugin=error.plugin,
                    )
                    for d in members
                ]
                (deferred if error.temporary else rejected).extend(failures)

        result = OutboundResult(
            messages=tuple(messages), rejected=tuple(rejected), deferred=tuple(deferred)
        )
        self._notify(
            "sealrelay_message_processed",
            report=ProcessingReport(
                envelope=envelope,
                direction="outbound",
                outbound=result,
                duration_seconds=time.perf_counter() - started,
            ),
        )
        return result

    def _decide(
        self, envelope: Envelope, recipient: str, layer: str, visible: set[str]
    ) -> RecipientDecision:
        hidden = recipient not in visible
        try:
            policy = self.resolve_policy(envelope.sender, recipient, envelope)
            action, certificate, reason = self._encryption_for(policy, recipient, layer)
        except MessageError as error:
            return RecipientDecision(
                recipient=recipient,
                policy=self.config.default_policy,
                action="defer" if error.temporary else "reject",
                reason=error.reason,
                plugin=error.plugin,
                hidden=hidden,
            )
        signs = (
            policy.sign != "none"
            and self.config.stages.sign
            and layer == headers.PLAIN
            and envelope.sender != ""
        )
        return RecipientDecision(
            recipient=recipient,
            policy=policy if signs else attrs.evolve(policy, sign="none"),
            action=action,
            encrypt=certificate is not None,
            certificate=certificate,
            reason=reason,
            hidden=hidden,
        )

    def _encryption_for(
        self, policy: Policy, recipient: str, layer: str
    ) -> tuple[str, Certificate | None, str | None]:
        """``("deliver", certificate or None, None)``, or ``(reject|defer, None, reason)``
        when the policy requires encryption that cannot happen."""
        if policy.encrypt == "never" or layer == headers.ENVELOPED:
            return "deliver", None, None
        certificate = self._best_certificate(recipient) if self.config.stages.encrypt else None
        if certificate is not None or policy.encrypt != "always":
            return "deliver", certificate, None
        if self.config.stages.encrypt:
            reason = (
                f"policy requires encryption and no valid certificate is known for {recipient}; "
                "import one with `sealrelay cert import`"
            )
        else:
            reason = "policy requires encryption but the encrypt stage is off in [stages]"
        return ("defer" if policy.missing_certificate == "hold" else "reject"), None, reason

    def _best_certificate(self, address: str) -> Certificate | None:
        answers = self._call("sealrelay_recipient_certificates", address=address)
        candidates = [cert for answer in answers for cert in answer]
        return best_encryption_certificate(candidates, address, dt.datetime.now(dt.UTC))

    def _signing_identity(self, sender: str) -> Identity:
        identity: Identity | None = self._call("sealrelay_signing_identity", address=sender)
        provisions = self.config.keypool.provision_on_send and self.config.stages.provision
        if identity is None and provisions:
            subscriber = self._call("sealrelay_lookup_subscriber", address=sender)
            if subscriber is not None and subscriber.enabled:
                try:
                    identity = self.provision(sender)
                except ProvisioningError as error:
                    raise DeferMessage(
                        f"no signing key is known for {sender} and provisioning one failed: "
                        f"{error}",
                        plugin=error.plugin,
                    ) from error
        if identity is None:
            if self.config.keypool.provision_on_send and not self.config.stages.provision:
                raise DeferMessage(
                    f"policy requires signing and no signing key is known for {sender}; "
                    "[keypool] provision_on_send is on but the provision stage is off in "
                    "[stages]: switch it on, or import a key with `sealrelay identity import`"
                )
            raise DeferMessage(
                f"policy requires signing and no signing key is known for {sender}; import one "
                "with `sealrelay identity import`, or give the sender a new one with "
                f"`sealrelay identity provision {sender}` (or `subscriber add --provision`; "
                "[keypool] provision_on_send does it when the subscriber sends)"
            )
        return identity

    # -- provisioning ---------------------------------------------------------------------

    def provision(self, address: str) -> Identity:
        """Give *address* a new key pair and certificate, and have the stores keep them:
        ``sealrelay_new_key_pair`` -> ``sealrelay_issue_certificate`` ->
        ``sealrelay_store_identity``. ProvisioningError says which step nobody performed."""
        if not self.config.stages.provision:
            raise ProvisioningError(
                f"cannot give {address} a key: the provision stage is off in [stages]"
            )
        key_type = self.config.keypool.key_type
        key = self._provisioning_call("sealrelay_new_key_pair", key_type=key_type)
        if key is None:
            raise ProvisioningError(
                f"no plugin hands out {key_type} key pairs (sealrelay_new_key_pair); enable "
                "the keypool plugin"
            )
        issued = self._provisioning_call(
            "sealrelay_issue_certificate", address=address, public_key=key.public_key()
        )
        if issued is None:
            raise ProvisioningError(
                f"no certificate authority issued a certificate for {address} "
                "(sealrelay_issue_certificate); run `sealrelay init` to create the built-in CA "
                "or enable the ca_builtin plugin"
            )
        identity = Identity(
            address=address, certificate=issued.certificate, chain=issued.chain, private_key=key
        )
        stored, failed = self._store_everywhere(
            "sealrelay_store_identity", identity=identity, authority=issued.authority
        )
        if not stored:
            raise ProvisioningError(
                f"no store kept the new identity of {address} (sealrelay_store_identity"
                f"{'; failed: ' + ', '.join(failed) if failed else ''}): enable policy_sql; the "
                f"certificate {issued.certificate.fingerprint} was issued but is unused",
                plugin=failed[0] if failed else None,
            )
        log.info(
            "provisioned %s with a %s key, certificate %s",
            address,
            key_type,
            issued.certificate.fingerprint,
        )
        return identity

    def publish_revocation_list(self, crl: bytes) -> tuple[list[str], list[str]]:
        """Hand a CRL the relay's CA issued to every store, each on its own: the plugins that
        kept it, and those that failed (logged)."""
        return self._store_everywhere("sealrelay_store_revocation_list", crl=crl)

    def _store_everywhere(self, hook_name: str, **kwargs: Any) -> tuple[list[str], list[str]]:
        """A store that fails must not keep the next one from storing: each is called on its
        own, its failure logged with its name."""
        answers = call_each(self.plugins.pm, hook_name, isolate=True, **kwargs)
        answered = {plugin for plugin, _ in answers}
        failed = [
            impl.plugin_name
            for impl in getattr(self._hook, hook_name).get_hookimpls()
            if impl.plugin_name not in answered
        ]
        return [plugin for plugin, answer in answers if answer], failed

    def _provisioning_call(self, hook_name: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._hook, hook_name)(**kwargs)
        except SealrelayError as error:
            plugin = blame(self.plugins.pm, hook_name, error)
            raise ProvisioningError(f"plugin {plugin or '?'}: {error}", plugin=plugin) from error
        except Exception as error:
            plugin = blame(self.plugins.pm, hook_name, error)
            log.exception("plugin %s failed in %s", plugin or "?", hook_name)
            raise ProvisioningError(
                f"plugin {plugin or '?'} failed in {hook_name}: {type(error).__name__}: {error}",
                plugin=plugin,
            ) from error

    def _protect(
        self,
        *,
        envelope: Envelope,
        message: bytes,
        layer: str,
        policy: Policy,
        encrypt: bool,
        members: list[RecipientDecision],
    ) -> OutgoingMessage:
        content = message
        identity = None
        if policy.sign != "none":
            identity = self._signing_identity(envelope.sender)
            signed = self._call(
                "sealrelay_sign_message", message=content, identity=identity, policy=policy
            )
            if signed is None:
                raise DeferMessage(
                    "policy requires signing and no plugin signed the message (plugins "
                    "implementing sealrelay_sign_message: "
                    f"{self._implementers('sealrelay_sign_message')})"
                )
            content = signed
        cipher = None
        if encrypt:
            certificates = [d.certificate for d in members if d.certificate is not None]
            if policy.encrypt_to_sender:
                certificates.append(self._sender_certificate(envelope.sender, identity))
            encrypted = self._call(
                "sealrelay_encrypt_message",
                message=content,
                certificates=certificates,
                policy=policy,
            )
            if encrypted is None:
                raise DeferMessage(
                    "policy requires encryption and no plugin encrypted the message (plugins "
                    "implementing sealrelay_encrypt_message: "
                    f"{self._implementers('sealrelay_encrypt_message')})"
                )
            content, cipher = encrypted.content, encrypted.cipher
        return OutgoingMessage(
            recipients=tuple(d.recipient for d in members),
            content=content,
            signed=policy.sign != "none" or layer == headers.SIGNED,
            sign_mode=policy.sign,
            encrypted=encrypt or layer == headers.ENVELOPED,
            cipher=cipher,
        )

    def _sender_certificate(self, sender: str, identity: Identity | None) -> Certificate:
        if identity is not None:
            return identity.certificate
        certificate = self._best_certificate(sender)
        if certificate is None:
            raise DeferMessage(
                f"policy encrypts to the sender too and no valid certificate is known for {sender}"
            )
        return certificate

    # -- inbound --------------------------------------------------------------------------

    def process_inbound(self, envelope: Envelope, message: bytes, recipient: str) -> InboundResult:
        """Decrypt and verify a message for one subscriber; always returns something to deliver."""
        started = time.perf_counter()
        message = headers.remove_headers(message, headers.SECURITY_HEADER_PREFIX)
        state = _InboundState()
        for _ in range(MAX_LAYERS):
            # The From the reader will see: an unwrapped layer's own From replaces the outer one.
            # Never the envelope sender, which the reader does not see.
            sender = headers.from_address(message) or ""
            layer = headers.classify(message)
            if layer == headers.ENVELOPED:
                inner = self._decrypt(message, recipient, state)
            elif layer == headers.SIGNED:
                inner = self._verify(message, sender, state)
            else:
                break
            if inner is None:
                break
            # A layer's headers come out with its content: markers forged inside it go too.
            message = headers.remove_headers(inner, headers.SECURITY_HEADER_PREFIX)
            state.bind_sender(headers.from_address(message) or "")
        else:
            if headers.classify(message) != headers.PLAIN:
                state.record(SignatureVerdict(status="invalid", reason="too-many-layers"), "")

        result = InboundResult(
            decrypted=state.cipher is not None,
            decryption_error=state.decryption_error,
            signature=state.verdict(),
            harvested=tuple(state.harvested),
            content=headers.add_headers(message, state.annotations()),
        )
        self._notify(
            "sealrelay_message_processed",
            report=ProcessingReport(
                envelope=envelope,
                direction="inbound",
                inbound=result,
                duration_seconds=time.perf_counter() - started,
            ),
        )
        return result

    def _decrypt(self, message: bytes, recipient: str, state: _InboundState) -> bytes | None:
        if not self.config.stages.decrypt:
            state.decryption_error = "decrypt-stage-off"
            return None
        try:
            answers = self._call("sealrelay_decryption_identities", address=recipient)
            identities = [identity for answer in answers for identity in answer]
            decryption = self._call(
                "sealrelay_decrypt_message", message=message, identities=identities
            )
        except MessageError as error:
            state.decryption_error = error.reason
            return None
        if decryption is None:
            state.decryption_error = "unsupported"
            return None
        state.cipher = decryption.cipher
        return headers.merge_entity(message, decryption.content)

    def _verify(self, message: bytes, sender: str, state: _InboundState) -> bytes | None:
        if not self.config.stages.verify:
            return None
        if len(headers.parse_headers(message).get_all("Content-Type", [])) != 1:
            # Readers differ on which Content-Type counts: one may show parts the signature
            # does not cover under our verdict.
            state.record(SignatureVerdict(status="invalid", reason="malformed"), sender)
            return None
        try:
            anchors = [c for answer in self._call("sealrelay_trust_anchors") for c in answer]
            crls = [c for answer in self._call("sealrelay_revocation_lists") for c in answer]
            check: SignatureCheck | None = self._call(
                "sealrelay_verify_signature",
                message=message,
                sender=sender,
                trust_anchors=anchors,
                revocation_lists=crls,
            )
        except MessageError as error:
            state.record(SignatureVerdict(status="invalid", reason=error.reason), sender)
            return None
        if check is None:
            state.record(SignatureVerdict(status="invalid", reason="unsupported"), sender)
            return None
        state.record(check.verdict, sender)
        if (
            check.verdict.status == "valid"
            and check.signer_certificate
            and self.config.stages.harvest
        ):
            state.harvested.extend(self._harvest(sender, check))
        inner = headers.merge_entity(message, check.content)
        # A clear-signed message is delivered as signed, so the mail client can check it too;
        # opaque signatures and nested layers are unwrapped so that every client can read them.
        opaque = headers.parse_headers(message).get_content_type() != "multipart/signed"
        if opaque or headers.classify(inner) != headers.PLAIN:
            return inner
        return None

    def _harvest(self, sender: str, check: SignatureCheck) -> list[str]:
        """Offer the signer's certificate to every store; one store failing leaves the others."""
        signer = check.signer_certificate
        chain = [c for c in check.certificates if signer and c.fingerprint != signer.fingerprint]
        answers = call_each(
            self.plugins.pm,
            "sealrelay_harvest_certificate",
            isolate=True,
            address=sender,
            certificate=signer,
            chain=chain,
        )
        return sorted({fingerprint for _, fingerprint in answers if fingerprint})

    # -- recipient checks before the message is seen ----------------------------------------

    def check_recipient(self, envelope_sender: str, recipient: str) -> RecipientFailure | None:
        """Whether the outbound pipeline could take *recipient* at all, asked before the message
        exists (SMTP RCPT TO): a :class:`RecipientFailure` when its policy requires encryption
        that cannot happen (``temporary`` when the policy holds rather than rejects), else None.

        The message is assumed plain: a recipient refused here might have passed with content
        that is already encrypted, which a client can send by encrypting to a known certificate.
        """
        envelope = Envelope(sender=envelope_sender, recipients=(recipient,))
        decision = self._decide(envelope, envelope.recipients[0], headers.PLAIN, set())
        if decision.action == "deliver":
            return None
        return _failure(decision, temporary=decision.action == "defer")


def _failure(decision: RecipientDecision, *, temporary: bool) -> RecipientFailure:
    return RecipientFailure(
        recipient=decision.recipient,
        reason=decision.reason or "",
        temporary=temporary,
        plugin=decision.plugin,
    )


@attrs.define
class _InboundState:
    """What the layers of one inbound message revealed so far."""

    cipher: str | None = None
    decryption_error: str | None = None
    verdicts: list[SignatureVerdict] = attrs.Factory(list)
    #: For each verdict, the From address its signature was checked against.
    checked_from: list[str] = attrs.Factory(list)
    harvested: list[str] = attrs.Factory(list)

    def record(self, verdict: SignatureVerdict, checked_from: str) -> None:
        """A layer's verdict, and the From address its signature was checked against."""
        self.verdicts.append(verdict)
        self.checked_from.append(checked_from)

    def bind_sender(self, shown: str) -> None:
        """A signature vouches for the From it was checked against; once an unwrapped layer
        shows another From (a protected header), the signatures outside it vouch for nothing."""
        for number, (verdict, checked) in enumerate(
            zip(self.verdicts, self.checked_from, strict=True)
        ):
            if verdict.status == "valid" and checked != shown:
                self.verdicts[number] = attrs.evolve(
                    verdict, status="invalid", reason="address-mismatch", address="address-mismatch"
                )

    def verdict(self) -> SignatureVerdict:
        """The outermost signature's verdict, unless an inner one failed: then that one."""
        failed = [v for v in self.verdicts if v.status != "valid"]
        if failed:
            return failed[0]
        return self.verdicts[0] if self.verdicts else SignatureVerdict.unsigned()

    def annotations(self) -> list[tuple[str, str]]:
        # Reasons and signers come from plugins and certificates: quoted, never raw.
        quote = headers.parameter_value
        if self.cipher is not None:
            decryption = f"decrypted; cipher={quote(self.cipher)}"
        elif self.decryption_error is not None:
            decryption = f"failed; reason={quote(self.decryption_error)}"
        else:
            decryption = "none"
        verdict = self.verdict()
        signature = verdict.status
        if verdict.reason:
            signature += f"; reason={quote(verdict.reason)}"
        if verdict.signer:
            signature += f"; signer={quote(verdict.signer)}"
        return [(headers.SIGNATURE_HEADER, signature), (headers.DECRYPTION_HEADER, decryption)]
