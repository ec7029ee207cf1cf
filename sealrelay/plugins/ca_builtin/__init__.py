"""Built-in plugin ``ca_builtin``: the relay's own certificate authority.

``sealrelay init`` creates it (``[ca] key_type``, RSA-3072 by default), or ``ca import``
brings an existing one. It certifies the keys of provisioned subscribers
(``sealrelay_issue_certificate``), revokes them (``cert revoke``), and keeps a CRL that is
re-issued at half its validity, stored with the other stores, and published as a file. Its
private keys are sealed under the master key in the database (``[storage] url``).
"""

from __future__ import annotations

import logging
import threading

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from sealrelay.core.bus import MessageBus
from sealrelay.core.certificate import IssuedCertificate
from sealrelay.core.commands import AdminCommand
from sealrelay.core.config import Config
from sealrelay.core.service import BackgroundService
from sealrelay.hookspecs import hookimpl
from sealrelay.plugins.ca_builtin import commands
from sealrelay.plugins.ca_builtin.authority import CertificateAuthority


log = logging.getLogger(__name__)

#: Seconds between looks at the CRLs' age (and at the published file) by the refresher.
REFRESH_SECONDS = 300.0

authority = CertificateAuthority()
commands.bind(authority)


@hookimpl
def sealrelay_configure(config: Config) -> None:
    authority.configure(config)


@hookimpl
def sealrelay_prepare_state(config: Config) -> list[str]:
    authority.configure(config)
    return authority.prepare()


@hookimpl
def sealrelay_startup(config: Config) -> None:
    authority.configure(config)


@hookimpl
def sealrelay_shutdown() -> None:
    authority.close()


@hookimpl(trylast=True)
def sealrelay_issue_certificate(
    address: str, public_key: PublicKeyTypes
) -> IssuedCertificate | None:
    return authority.issue(address, public_key)


@hookimpl
def sealrelay_register_commands() -> list[type[AdminCommand]]:
    return list(commands.COMMANDS)


@hookimpl
def sealrelay_background_services() -> list[BackgroundService]:
    return [BackgroundService(name="ca-crl", run=refresh_crls)]


def refresh_crls(bus: MessageBus, stop: threading.Event) -> None:
    """Re-issue each CRL at half its validity, hand it to the stores, keep the file current
    (on every node: the file is node-local)."""
    while not stop.is_set():
        for crl in authority.refresh_crls():
            if crl.new:
                log.info("issued CRL number %d", crl.number)
                bus.publish_revocation_list(crl.der)
        authority.publish_files()
        stop.wait(REFRESH_SECONDS)
