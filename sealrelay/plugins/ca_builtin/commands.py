"""The CA's administrative commands: show and export it, import an existing one, revoke."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding

from sealrelay.core.commands import (
    AdminCommand,
    CommandContext,
    CommandResult,
    Parameter,
    read_file,
    read_password,
    write_file,
)
from sealrelay.exceptions import CommandError
from sealrelay.plugins.ca_builtin.authority import CertificateAuthority
from sealrelay.plugins.ca_builtin.issuing import REASONS


#: The CA the plugin module created; set by the plugin when it is imported.
_authority: CertificateAuthority | None = None


def bind(authority: CertificateAuthority) -> None:
    global _authority  # noqa: PLW0603 - one CA per process, owned by the plugin module
    _authority = authority


def _authority_for(context: CommandContext) -> CertificateAuthority:
    if _authority is None:
        raise CommandError("the ca_builtin plugin is not loaded")
    _authority.configure(context.config)
    return _authority


class CaShow(AdminCommand):
    name = "ca show"
    summary = "show the built-in CA: subject, fingerprint, validity, issued, revoked, CRL"
    read_only = True

    def run(self, context: CommandContext) -> CommandResult:
        status = _authority_for(context).status()
        text = "\n".join(f"{key}: {value}" for key, value in status.items())
        return CommandResult(data=status, text=text)


class CaExport(AdminCommand):
    name = "ca export"
    summary = "write the CA certificate (PEM) that correspondents install to trust subscribers"
    read_only = True
    parameters = (
        Parameter(name="output", kind="path", short="-o", required=True, help="file to write"),
    )

    def run(self, context: CommandContext) -> CommandResult:
        certificate = _authority_for(context).certificate()
        path: Path = self.params["output"]
        write_file(path, certificate.x509.public_bytes(Encoding.PEM))
        data = {
            "file": str(path),
            "subject": certificate.subject,
            "fingerprint": certificate.fingerprint,
        }
        return CommandResult(
            data=data,
            text=f"wrote {path}: {certificate.subject} (sha256 {certificate.fingerprint})",
        )


class CaImport(AdminCommand):
    name = "ca import"
    summary = "make an existing CA (PEM certificate and key) the one that issues from now on"
    parameters = (
        Parameter(name="certificate", kind="path", required=True, help="the CA certificate (PEM)"),
        Parameter(name="key", kind="path", required=True, help="its private key (PEM)"),
        Parameter(
            name="password_file",
            kind="path",
            help="file whose first line is the key's password (default: not encrypted)",
        ),
    )

    def run(self, context: CommandContext) -> CommandResult:
        certificate_path: Path = self.params["certificate"]
        key_path: Path = self.params["key"]
        try:
            certificate = x509.load_pem_x509_certificate(read_file(certificate_path))
        except ValueError as error:
            raise CommandError(f"{certificate_path}: not a PEM certificate: {error}") from None
        given = read_password(self.params["password_file"])
        password = None if given is None else given.encode()
        try:
            key = serialization.load_pem_private_key(read_file(key_path), password)
        except (ValueError, TypeError) as error:
            raise CommandError(
                f"{key_path}: cannot read the private key ({error}); give its password with "
                "--password-file"
            ) from None
        authority = _authority_for(context)
        signer = authority.import_authority(certificate, key)
        authority.publish_files()
        subject = signer.certificate.subject.rfc4514_string()
        return CommandResult(
            data={"subject": subject, "fingerprint": authority.certificate().fingerprint},
            text=f"the built-in CA issues as {subject} from now on",
        )


class CertRevoke(AdminCommand):
    name = "cert revoke"
    summary = "revoke a certificate the built-in CA issued; publish the new CRL at once"
    parameters = (
        Parameter(
            name="fingerprint", required=True, positional=True, help="SHA-256 fingerprint (hex)"
        ),
        Parameter(
            name="reason", choices=tuple(REASONS), default="unspecified", help="RFC 5280 reason"
        ),
    )

    def run(self, context: CommandContext) -> CommandResult:
        authority = _authority_for(context)
        info, crl = authority.revoke(self.params["fingerprint"], self.params["reason"])
        path = authority.publish_file(crl.authority_id)
        with context.bus() as bus:
            stored, failed = bus.publish_revocation_list(crl.der)
        data = {
            **info,
            "crl_number": crl.number,
            "crl_file": str(path),
            "stores": stored,
            "failed_stores": failed,
        }
        text = (
            f"revoked {info['fingerprint']} ({info['address']}, serial {info['serial']}); "
            f"CRL number {crl.number} published to {path}"
        )
        if failed:
            # The CRL is signed and published; a store that missed it gets it again when the
            # CRL refresher re-issues it, or with the next revocation.
            text += (
                f"\nstores that failed to take the CRL (see the log): {', '.join(failed)}; they "
                "may go on using the certificate until they take a later CRL"
            )
        return CommandResult(data=data, text=text, exit_status=1 if failed else 0)


COMMANDS: tuple[type[AdminCommand], ...] = (CaShow, CaExport, CaImport, CertRevoke)
