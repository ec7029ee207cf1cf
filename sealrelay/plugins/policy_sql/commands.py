"""The store's administrative commands: subscribers, policy rules, identities,
certificates and CRLs. Each change is audited by the store with the command's actor."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from sealrelay.core.certificate import Certificate
from sealrelay.core.commands import (
    AdminCommand,
    CommandContext,
    CommandResult,
    Parameter,
    read_file,
    read_password,
)
from sealrelay.core.policy import (
    CIPHERS,
    DIGESTS,
    ENCRYPT_MODES,
    MISSING_CERTIFICATE_ACTIONS,
    SIGN_MODES,
)
from sealrelay.exceptions import CommandError, ProvisioningError
from sealrelay.plugins.policy_sql.certificates import (
    new_export_password,
    pkcs12_bytes,
    read_certificates,
    read_crl,
    read_pkcs12,
    write_private_file,
)
from sealrelay.plugins.policy_sql.errors import PatternError
from sealrelay.plugins.policy_sql.store import PolicyStore


#: The store the plugin module created; set by the plugin when it is imported.
_store: PolicyStore | None = None


def bind(store: PolicyStore) -> None:
    global _store  # noqa: PLW0603 - one store per process, owned by the plugin module
    _store = store


def _store_for(context: CommandContext) -> PolicyStore:
    if _store is None:
        raise CommandError("the policy_sql plugin is not loaded")
    if _store.config is not context.config:
        _store.configure(context.config)
    return _store


@contextmanager
def _usage_errors() -> Iterator[None]:
    """A malformed pattern or group name is a usage error (exit status 2), not a failure."""
    try:
        yield
    except PatternError as error:
        raise CommandError(str(error)) from None


class SubscriberAdd(AdminCommand):
    name = "subscriber add"
    summary = "register an address whose mail the relay protects"
    parameters = (
        Parameter(name="address", help="the subscriber's address", required=True, positional=True),
        Parameter(name="group", help="a group to put it in (repeat for more)", multiple=True),
        Parameter(name="display_name", flag="--name", help="display name", default=""),
        Parameter(
            name="password_file",
            kind="path",
            help="file whose first line is the password for front-end logins (stored as an "
            "argon2id hash)",
        ),
        Parameter(
            name="provision",
            kind="bool",
            help="give the subscriber a key pair from the key pool and a certificate from the "
            "relay's CA at once",
        ),
    )

    def run(self, context: CommandContext) -> CommandResult:
        with _usage_errors():
            added = _store_for(context).add_subscriber(
                actor=context.actor,
                address=self.params["address"],
                groups=self.params["group"],
                display_name=self.params["display_name"],
                password=read_password(self.params["password_file"]),
            )
        groups = ", ".join(added["groups"]) or "no groups"
        text = f"added subscriber {added['address']} ({groups})"
        if self.params["provision"]:
            with context.bus() as bus:
                try:
                    identity = bus.provision(added["address"])
                except ProvisioningError as error:
                    raise CommandError(
                        f"added subscriber {added['address']}, but could not give it a key: "
                        f"{error}; once that is fixed, run `sealrelay identity provision "
                        f"{added['address']}`"
                    ) from error
            certificate = identity.certificate
            added = {**added, "certificate": certificate.fingerprint}
            text += f"; provisioned certificate {certificate.fingerprint} ({certificate.subject})"
        return CommandResult(data=added, text=text)


class SubscriberList(AdminCommand):
    name = "subscriber list"
    summary = "list the registered subscribers"
    read_only = True

    def run(self, context: CommandContext) -> CommandResult:
        rows = _store_for(context).list_subscribers()
        lines = [
            f"{row['address']}\t{row['name']}\t{','.join(row['groups'])}\t"
            f"{'enabled' if row['enabled'] else 'disabled'}"
            for row in rows
        ]
        return CommandResult(data=rows, text="\n".join(lines) or "no subscribers")


class PolicyAdd(AdminCommand):
    name = "policy add"
    summary = "add a policy rule for mail from a sender pattern to a recipient pattern"
    parameters = (
        Parameter(
            name="sender",
            flag="--from",
            required=True,
            help="sender pattern: ADDRESS, *@DOMAIN, *@*.DOMAIN, @GROUP or *",
        ),
        Parameter(
            name="recipient",
            flag="--to",
            required=True,
            help="recipient pattern: ADDRESS, *@DOMAIN, *@*.DOMAIN, @GROUP or *",
        ),
        Parameter(name="sign", choices=SIGN_MODES, help="signature mode"),
        Parameter(name="digest", choices=DIGESTS, help="signature digest"),
        Parameter(name="encrypt", choices=ENCRYPT_MODES, help="encryption"),
        Parameter(name="cipher", choices=CIPHERS, help="content cipher"),
        Parameter(
            name="missing_certificate",
            choices=MISSING_CERTIFICATE_ACTIONS,
            help="with encrypt=always and no certificate: reject or hold",
        ),
        Parameter(
            name="encrypt_to_sender",
            choices=("yes", "no"),
            help="also encrypt to the sender's own certificate",
        ),
        Parameter(
            name="priority",
            kind="int",
            default=0,
            help="tie-break between equally specific rules; higher wins (default 0)",
        ),
        Parameter(name="comment", default="", help="a note shown by policy list and explain"),
    )

    def run(self, context: CommandContext) -> CommandResult:
        settings: dict[str, Any] = {
            name: self.params[name]
            for name in ("sign", "digest", "encrypt", "cipher", "missing_certificate")
        }
        if self.params["encrypt_to_sender"] is not None:
            settings["encrypt_to_sender"] = self.params["encrypt_to_sender"] == "yes"
        with _usage_errors():
            rule = _store_for(context).add_rule(
                actor=context.actor,
                sender=self.params["sender"],
                recipient=self.params["recipient"],
                settings=settings,
                priority=self.params["priority"],
                comment=self.params["comment"],
            )
        return CommandResult(data=rule.to_dict(), text=f"added {rule.describe()}")


class PolicyList(AdminCommand):
    name = "policy list"
    summary = "list the policy rules"
    read_only = True

    def run(self, context: CommandContext) -> CommandResult:
        rules = _store_for(context).list_rules()
        lines = []
        for rule in rules:
            settings = " ".join(f"{name}={value}" for name, value in rule.settings)
            lines.append(f"{rule.describe()}  {settings or '(all from [policy.default])'}")
        return CommandResult(
            data=[rule.to_dict() for rule in rules], text="\n".join(lines) or "no rules"
        )


class PolicyRemove(AdminCommand):
    name = "policy remove"
    summary = "remove a policy rule by its id"
    parameters = (
        Parameter(name="id", kind="int", required=True, positional=True, help="the rule's id"),
    )

    def run(self, context: CommandContext) -> CommandResult:
        rule = _store_for(context).remove_rule(actor=context.actor, rule_id=self.params["id"])
        return CommandResult(data=rule.to_dict(), text=f"removed {rule.describe()}")


class IdentityImport(AdminCommand):
    name = "identity import"
    summary = "import a private key with its certificate and chain from a PKCS#12 file"
    parameters = (
        Parameter(name="file", kind="path", required=True, positional=True, help="the .p12 file"),
        Parameter(
            name="password_file",
            kind="path",
            help="file whose first line is the PKCS#12 password (default: no password)",
        ),
    )

    def run(self, context: CommandContext) -> CommandResult:
        path: Path = self.params["file"]
        password = read_password(self.params["password_file"])
        contents = read_pkcs12(
            read_file(path), password.encode() if password is not None else None, str(path)
        )
        summary = _store_for(context).import_identity(
            actor=context.actor, contents=contents, origin=str(path)
        )
        text = (
            f"{summary['outcome']} identity for {', '.join(summary['addresses'])}: "
            f"{summary['subject']} ({summary['fingerprint']})"
        )
        return CommandResult(data=summary, text=text)


class IdentityExport(AdminCommand):
    name = "identity export"
    summary = "write a subscriber's private key, certificate and chain to a PKCS#12 file"
    parameters = (
        Parameter(name="address", required=True, positional=True, help="the subscriber"),
        Parameter(
            name="output", kind="path", short="-o", required=True, help="the .p12 file to write"
        ),
        Parameter(
            name="password_file",
            kind="path",
            help="file whose first line is the password for the .p12 (default: a new random "
            "password, shown once)",
        ),
        Parameter(
            name="legacy",
            kind="bool",
            help="3DES and SHA-1 encryption for older clients (Windows 7 era Outlook, old "
            "macOS); the default is AES-256 and SHA-256",
        ),
    )

    def run(self, context: CommandContext) -> CommandResult:
        path: Path = self.params["output"]
        given = read_password(self.params["password_file"])
        password = given if given else new_export_password()
        contents = _store_for(context).export_identity(self.params["address"])
        data = pkcs12_bytes(contents, password, legacy=bool(self.params["legacy"]))
        write_private_file(path, data)
        certificate = Certificate(der=contents.certificate.public_bytes(Encoding.DER))
        result: dict[str, Any] = {
            "file": str(path),
            "fingerprint": certificate.fingerprint,
            "subject": certificate.subject,
            "legacy": bool(self.params["legacy"]),
        }
        text = f"wrote {path} ({certificate.subject}, {certificate.fingerprint})"
        if not given:
            result["password"] = password
            text += f"\npassword: {password}"
        return CommandResult(data=result, text=text)


class CertImport(AdminCommand):
    name = "cert import"
    summary = "import certificates (PEM, DER or PKCS#7 bundles)"
    parameters = (
        Parameter(
            name="files",
            kind="path",
            required=True,
            multiple=True,
            positional=True,
            help="certificate files",
        ),
        Parameter(name="trust_anchor", kind="bool", help="trust these CA certificates as roots"),
        Parameter(
            name="trusted",
            kind="bool",
            help="trust these certificates themselves, without a chain to a trust anchor",
        ),
    )

    def run(self, context: CommandContext) -> CommandResult:
        certificates = [
            certificate
            for path in self.params["files"]
            for certificate in read_certificates(read_file(path), str(path))
        ]
        results = _store_for(context).import_certificates(
            actor=context.actor,
            certificates=certificates,
            trust_anchor=bool(self.params["trust_anchor"]),
            trusted=bool(self.params["trusted"]),
        )
        lines = [f"{row['outcome']} {row['subject']} ({row['fingerprint']})" for row in results]
        return CommandResult(data=results, text="\n".join(lines))


class CertList(AdminCommand):
    name = "cert list"
    summary = "list certificates: fingerprint, subject, addresses, validity, status"
    read_only = True
    parameters = (Parameter(name="address", help="only the certificates of this address"),)

    def run(self, context: CommandContext) -> CommandResult:
        rows = _store_for(context).list_certificates(self.params["address"])
        lines = [
            f"{row['fingerprint']}  {row['status']}  {row['subject']}  "
            f"{','.join(row['addresses']) or '-'}  {row['not_before']} .. {row['not_after']}"
            for row in rows
        ]
        return CommandResult(data=rows, text="\n".join(lines) or "no certificates")


class CrlImport(AdminCommand):
    name = "crl import"
    summary = "import certificate revocation lists, each checked against its stored CA"
    parameters = (
        Parameter(
            name="files",
            kind="path",
            required=True,
            multiple=True,
            positional=True,
            help="CRL files (PEM or DER)",
        ),
    )

    def run(self, context: CommandContext) -> CommandResult:
        store = _store_for(context)
        results = [
            store.import_crl(
                actor=context.actor, crl=read_crl(read_file(path), str(path)), origin=str(path)
            )
            for path in self.params["files"]
        ]
        lines = [
            f"{row['outcome']} CRL of {row['issuer']}: {row['revoked']} revoked "
            f"(next update {row['next_update'] or 'none'})"
            for row in results
        ]
        return CommandResult(data=results, text="\n".join(lines))


COMMANDS: tuple[type[AdminCommand], ...] = (
    SubscriberAdd,
    SubscriberList,
    PolicyAdd,
    PolicyList,
    PolicyRemove,
    IdentityImport,
    IdentityExport,
    CertImport,
    CertList,
    CrlImport,
)
