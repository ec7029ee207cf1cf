"""Built-in plugin ``policy_sql``: subscribers, policy rules, identities, certificates and
revocation lists in SQL (peewee), SQLite (WAL) by default or PostgreSQL for several nodes.

Every hook answers from an in-memory cache (``cache.py``); changes made on any node sharing
the database reach the others within about half a second. Private keys are stored sealed
under the master key (``sealrelay.core.sealed_keys``), never in the clear.

peewee connections are per thread: each hook call borrows a pooled connection for the
calling worker thread and gives it back, so hooks may run in any number of threads.
"""

from __future__ import annotations

from sealrelay.core.certificate import Certificate, Identity
from sealrelay.core.commands import AdminCommand
from sealrelay.core.config import Config
from sealrelay.core.policy import Policy
from sealrelay.core.subscriber import Subscriber
from sealrelay.hookspecs import hookimpl
from sealrelay.plugins.policy_sql import commands
from sealrelay.plugins.policy_sql.store import PolicyStore


store = PolicyStore()
commands.bind(store)


@hookimpl
def sealrelay_configure(config: Config) -> None:
    store.configure(config)


@hookimpl
def sealrelay_prepare_state(config: Config) -> list[str]:
    store.configure(config)
    return store.prepare()


@hookimpl
def sealrelay_startup(config: Config) -> None:
    store.configure(config)
    store.prepare()


@hookimpl
def sealrelay_shutdown() -> None:
    store.close()


@hookimpl(trylast=True)
def sealrelay_resolve_policy(sender: str, recipient: str) -> Policy | None:
    return store.resolve(sender, recipient)


@hookimpl
def sealrelay_explain_policy(sender: str, recipient: str) -> list[str]:
    return store.explain(sender, recipient)


@hookimpl(trylast=True)
def sealrelay_lookup_subscriber(address: str) -> Subscriber | None:
    return store.lookup_subscriber(address)


@hookimpl(trylast=True)
def sealrelay_check_credentials(login: str, password: str) -> str | None:
    return store.check_credentials(login, password)


@hookimpl(trylast=True)
def sealrelay_signing_identity(address: str) -> Identity | None:
    return store.signing_identity(address)


@hookimpl
def sealrelay_decryption_identities(address: str) -> list[Identity]:
    return store.decryption_identities(address)


@hookimpl
def sealrelay_recipient_certificates(address: str) -> list[Certificate]:
    return store.recipient_certificates(address)


@hookimpl
def sealrelay_trust_anchors() -> list[Certificate]:
    return store.trust_anchors()


@hookimpl
def sealrelay_revocation_lists() -> list[bytes]:
    return store.revocation_lists()


@hookimpl
def sealrelay_harvest_certificate(
    address: str, certificate: Certificate, chain: list[Certificate]
) -> str | None:
    return store.harvest(address, certificate, chain)


@hookimpl
def sealrelay_store_identity(identity: Identity, authority: Certificate | None) -> str:
    return store.store_identity(identity, authority)


@hookimpl
def sealrelay_store_revocation_list(crl: bytes) -> str | None:
    return store.store_revocation_list(crl)


@hookimpl
def sealrelay_register_commands() -> list[type[AdminCommand]]:
    return list(commands.COMMANDS)
