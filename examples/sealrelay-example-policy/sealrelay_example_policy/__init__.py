"""An example third-party sealrelay plugin.

Mail to the partner domain (``[plugins.example_policy] domain``, default ``partner.example``)
is opaque-signed with SHA-512 and always encrypted with AES-256-GCM, whatever the policy store
says: an installed plugin's answer to ``sealrelay_resolve_policy`` wins over the built-ins.
"""

from __future__ import annotations

from sealrelay import Config, ConfigError, Envelope, Policy, hookimpl


DEFAULT_DOMAIN = "partner.example"
_settings = {"domain": DEFAULT_DOMAIN}


@hookimpl
def sealrelay_configure(config: Config) -> None:
    section = dict(config.plugin_config("example_policy"))
    domain = section.pop("domain", DEFAULT_DOMAIN)
    if section:
        raise ConfigError(f"[plugins.example_policy]: unknown key {sorted(section)[0]!r}")
    if not isinstance(domain, str) or "." not in domain:
        raise ConfigError(f"[plugins.example_policy] domain = {domain!r} is not a domain name")
    _settings["domain"] = domain.lower()


@hookimpl
def sealrelay_resolve_policy(sender: str, recipient: str, envelope: Envelope) -> Policy | None:
    if recipient.rpartition("@")[2] != _settings["domain"]:
        return None
    return Policy(
        sign="opaque",
        digest="sha512",
        encrypt="always",
        cipher="aes256-gcm",
        origin=f"example_policy: *@{_settings['domain']}",
    )
