"""Built-in administrative commands: init, plugins, process, policy explain."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import attrs

from sealrelay.core.address import Address
from sealrelay.core.commands import (
    AdminCommand,
    CommandContext,
    CommandResult,
    Parameter,
    read_file,
    write_file,
)
from sealrelay.core.envelope import Envelope
from sealrelay.core.headers import from_address
from sealrelay.core.master_key import ensure_master_key
from sealrelay.core.plugins import call_each
from sealrelay.exceptions import CommandError, ProvisioningError
from sealrelay.hookspecs import hookimpl


def _read_input(path: Path | None) -> bytes:
    return sys.stdin.buffer.read() if path is None else read_file(path)


class Init(AdminCommand):
    name = "init"
    summary = "create the data directory, the master key and every plugin's state"

    def run(self, context: CommandContext) -> CommandResult:
        data_dir = context.config.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        lines = [f"data directory: {data_dir}", ensure_master_key(context.config)]
        pm = context.plugins.pm
        for _, answer in call_each(pm, "sealrelay_prepare_state", config=context.config):
            lines.extend([answer] if isinstance(answer, str) else answer or [])
        return CommandResult(data={"steps": lines}, text="\n".join(lines))


class Plugins(AdminCommand):
    name = "plugins"
    summary = "list every plugin: name, version, origin, hooks, enabled or not"
    read_only = True

    def run(self, context: CommandContext) -> CommandResult:
        rows = [attrs.asdict(info) for info in context.plugins.info]
        lines = []
        for info in context.plugins.info:
            state = "enabled" if info.enabled else "disabled"
            origin = f"{info.source}, {info.distribution or '?'} {info.version or ''}".rstrip()
            lines.append(f"{info.name} ({origin}; {state})")
            lines.extend(f"    {hook}" for hook in info.hooks)
        return CommandResult(data=rows, text="\n".join(lines))


class ProcessOutbound(AdminCommand):
    name = "process outbound"
    summary = "run the outbound pipeline once and write each outgoing message to a directory"
    parameters = (
        Parameter(name="sender", flag="--from", help="envelope sender", required=True),
        Parameter(
            name="to", help="envelope recipient (repeat for more)", required=True, multiple=True
        ),
        Parameter(name="input", short="-i", kind="path", help="the message (default: stdin)"),
        Parameter(
            name="output", short="-o", kind="path", help="directory for the results", required=True
        ),
    )

    def run(self, context: CommandContext) -> CommandResult:
        message = _read_input(self.params["input"])
        envelope = Envelope(sender=self.params["sender"], recipients=tuple(self.params["to"]))
        with context.bus() as bus:
            result = bus.process_outbound(envelope, message)
        output: Path = self.params["output"]
        rows: list[dict[str, Any]] = []
        for number, outgoing in enumerate(result.messages, start=1):
            path = output / f"{envelope.id}-{number}.eml"
            write_file(path, outgoing.content)
            rows.append(
                {
                    "file": str(path),
                    "recipients": list(outgoing.recipients),
                    "signed": outgoing.signed,
                    "sign_mode": outgoing.sign_mode,
                    "encrypted": outgoing.encrypted,
                    "cipher": outgoing.cipher,
                }
            )
        data = {
            "messages": rows,
            "rejected": [f.to_dict() for f in result.rejected],
            "deferred": [f.to_dict() for f in result.deferred],
        }
        lines = [
            f"{row['file']}: {', '.join(row['recipients'])} "
            f"(signed: {row['sign_mode'] if row['signed'] else 'no'}, "
            f"encrypted: {row['cipher'] or 'yes' if row['encrypted'] else 'no'})"
            for row in rows
        ]
        lines += [f"rejected {f.recipient}: {f.reason}" for f in result.rejected]
        lines += [f"deferred {f.recipient}: {f.reason}" for f in result.deferred]
        failed = bool(result.rejected or result.deferred)
        return CommandResult(data=data, text="\n".join(lines), exit_status=1 if failed else 0)


class ProcessInbound(AdminCommand):
    name = "process inbound"
    summary = "run the inbound pipeline once for one recipient and write the result"
    parameters = (
        Parameter(name="to", help="the subscriber the message is for", required=True),
        Parameter(name="sender", flag="--from", help="envelope sender (default: the From header)"),
        Parameter(name="input", short="-i", kind="path", help="the message (default: stdin)"),
        Parameter(
            name="output", short="-o", kind="path", help="file for the result", required=True
        ),
    )

    def run(self, context: CommandContext) -> CommandResult:
        message = _read_input(self.params["input"])
        sender = self.params["sender"] or from_address(message) or ""
        envelope = Envelope(sender=sender, recipients=(self.params["to"],), direction="inbound")
        with context.bus() as bus:
            result = bus.process_inbound(envelope, message, envelope.recipients[0])
        output: Path = self.params["output"]
        write_file(output, result.content)
        data = {
            "decrypted": result.decrypted,
            "decryption_error": result.decryption_error,
            "signature": result.signature.to_dict(),
            "harvested": list(result.harvested),
            "file": str(output),
        }
        signature = result.signature.status
        if result.signature.reason:
            signature += f" ({result.signature.reason})"
        decryption = "yes" if result.decrypted else result.decryption_error or "not encrypted"
        text = f"{output}: decrypted: {decryption}; signature: {signature}"
        return CommandResult(data=data, text=text)


class PolicyExplain(AdminCommand):
    name = "policy explain"
    summary = "show the effective policy for a sender and recipient, and where it came from"
    read_only = True
    parameters = (
        Parameter(name="sender", flag="--from", help="the sender address", required=True),
        Parameter(name="to", help="the recipient address", required=True),
    )

    def run(self, context: CommandContext) -> CommandResult:
        with context.bus() as bus:
            explanation = bus.explain_policy(self.params["sender"], self.params["to"])
        policy = explanation.policy
        lines = [
            f"{explanation.sender} -> {explanation.recipient}",
            f"  sign={policy.sign} digest={policy.digest} encrypt={policy.encrypt} "
            f"cipher={policy.cipher} missing_certificate={policy.missing_certificate}",
            f"  from: {policy.origin or explanation.winner or '[policy.default]'}",
        ]
        for answer in explanation.answers:
            said = answer.policy.origin or "a policy" if answer.policy else "no opinion"
            lines.append(f"  asked {answer.plugin}: {said}")
        lines.extend(f"  matched in {plugin}: {rule}" for plugin, rule in explanation.rules)
        return CommandResult(data=explanation.to_dict(), text="\n".join(lines))


class IdentityProvision(AdminCommand):
    name = "identity provision"
    summary = "give an address a new key pair (from the key pool) and certificate (from the CA)"
    parameters = (Parameter(name="address", required=True, positional=True, help="the subscriber"),)

    def run(self, context: CommandContext) -> CommandResult:
        with context.bus() as bus:
            try:
                identity = bus.provision(str(Address.parse(self.params["address"])))
            except ProvisioningError as error:
                raise CommandError(str(error)) from error
        certificate = identity.certificate
        data = {
            "address": identity.address,
            "fingerprint": certificate.fingerprint,
            "subject": certificate.subject,
            "not_after": certificate.not_after.isoformat(),
        }
        text = (
            f"provisioned {identity.address}: certificate {certificate.fingerprint} "
            f"({certificate.subject}), valid until {certificate.not_after:%Y-%m-%d}"
        )
        return CommandResult(data=data, text=text)


@hookimpl
def sealrelay_register_commands() -> list[type[AdminCommand]]:
    return [Init, Plugins, ProcessOutbound, ProcessInbound, PolicyExplain, IdentityProvision]
