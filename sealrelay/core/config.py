"""config.toml read into frozen attrs classes; every mistake is an error that names the key."""

from __future__ import annotations

import ipaddress
import os
import tomllib
import types
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import attrs

from sealrelay.core.address import Address, AddressError
from sealrelay.core.key_types import check_key_type
from sealrelay.core.policy import Policy
from sealrelay.exceptions import ConfigError


#: Environment variables that override secrets and host-specific values in config.toml.
ENV_MASTER_KEY = "SEALRELAY_MASTER_KEY"
ENV_STORAGE_URL = "SEALRELAY_STORAGE_URL"


def _check_listen(value: str, where: str) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{where} = {value!r}: expected HOST:PORT, e.g. 127.0.0.1:10025")


def split_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:25`` for IPv6) as a (host, port) pair."""
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


@attrs.frozen(kw_only=True)
class StorageConfig:
    #: ``sqlite:///relative/or/absolute.db`` or ``postgresql://user@host:port/db``.
    url: str = "sqlite:///var/sealrelay.db"
    #: Node-local state: the spool, the master key (unless given in the environment), exports.
    data_dir: str = "var"


@attrs.frozen(kw_only=True)
class SecurityConfig:
    #: File holding the master key that encrypts private keys at rest (created by ``init``, 0600).
    #: ``SEALRELAY_MASTER_KEY`` in the environment takes precedence.
    master_key_file: str = "var/master.key"


@attrs.frozen(kw_only=True)
class SmtpConfig:
    listen: str = "127.0.0.1:10025"
    #: ``maildir:PATH`` or ``smtp://HOST:PORT``.
    next_hop: str = "maildir:var/outbox"
    #: ``smtp`` (submission or after-queue filter) or ``lmtp`` (one reply per recipient).
    protocol: str = "smtp"
    #: The name in the greeting, EHLO and bounces; empty: the machine's host name.
    hostname: str = ""
    #: Event-loop processes sharing the listening port (SO_REUSEPORT).
    workers: int = 2
    #: Threads per worker that run the pipelines and the spool write, off the event loop.
    pipeline_threads: int = 1
    #: Bytes of message data (SIZE); larger messages are refused with 552.
    max_message_size: int = 26214400
    max_recipients: int = 100
    #: Octets per line of message data, without CRLF (RFC 5322 allows 998).
    max_line_length: int = 998
    #: Seconds of silence allowed between commands, and while message data is arriving.
    command_timeout: int = 300
    data_timeout: int = 300
    #: Simultaneous connections per worker; more get 421 and are closed.
    max_connections: int = 100
    #: PEM files for STARTTLS; both empty: no STARTTLS.
    tls_certificate: str = ""
    tls_key: str = ""
    #: SMTP AUTH (PLAIN, LOGIN) against subscribers' credentials, only after STARTTLS or on
    #: loopback. Needs a plugin implementing ``sealrelay_check_credentials``.
    auth: bool = False
    #: Clients that may relay to non-local recipients without AUTH (CIDR networks).
    relay_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    #: Seconds a stopping worker waits for transactions and deliveries in flight.
    shutdown_timeout: int = 30


@attrs.frozen(kw_only=True)
class RoutingConfig:
    #: Domains whose mail the relay delivers to subscribers (inbound pipeline); all other
    #: recipients are outbound.
    local_domains: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class DeliveryConfig:
    #: This node's spool directory name under ``<data_dir>/spool``; empty: the host name.
    node: str = ""
    #: Seconds before the first retry after a temporary failure; doubled per attempt up to
    #: ``retry_max_interval``; after ``max_age`` seconds in the spool a message bounces.
    retry_initial: int = 60
    retry_max_interval: int = 3600
    max_age: int = 432000
    #: Seconds in the spool after which the sender is told, once, that the message is still
    #: being retried (an RFC 3464 "delayed" notice); 0: never.
    delay_warning: int = 14400
    #: Simultaneous deliveries (and pooled next-hop connections) per worker.
    concurrency: int = 8
    #: Seconds between looks at the spool for messages due again.
    scan_interval: int = 5
    #: Seconds for each exchange with the next hop.
    timeout: int = 60
    #: Verify the next hop's certificate after STARTTLS (opportunistic TLS does not, RFC 7435).
    tls_verify: bool = False


@attrs.frozen(kw_only=True)
class HttpConfig:
    listen: str = "127.0.0.1:8025"


@attrs.frozen(kw_only=True)
class KeypoolConfig:
    #: Key pairs kept ready; refilled to ``size`` when fewer than ``threshold`` are left.
    size: int = 20
    threshold: int = 5
    #: The kind of key pair pooled and handed out (``sealrelay.core.key_types.KEY_TYPES``).
    key_type: str = "rsa3072"
    #: Give a registered subscriber who sends mail without a key one at once (a key from the
    #: pool and a certificate from the relay's CA). Off: only ``subscriber add --provision``.
    provision_on_send: bool = False
    #: Processes ``serve`` runs to generate keys (each one key at a time); 0: this node runs
    #: none (another node sharing the database does).
    generators: int = 1
    #: Seconds between looks at the pool's level by the replenisher.
    check_interval: int = 2


@attrs.frozen(kw_only=True)
class CaConfig:
    """The built-in certificate authority that certifies provisioned keys."""

    #: The kind of key pair the CA itself gets at ``sealrelay init``.
    key_type: str = "rsa3072"
    #: The CA's common name; empty: "sealrelay CA" and the relay's host name.
    name: str = ""
    #: Validity of the CA certificate, and of the certificates it issues, in days.
    validity_days: int = 3650
    certificate_validity_days: int = 730
    #: URL written into issued certificates as their CRL distribution point; empty: none.
    crl_distribution_point: str = ""
    #: Where the current CRL (DER) is published as a file; relative to the config file.
    crl_file: str = "var/ca/crl.der"
    #: Days a CRL is valid (its nextUpdate); it is issued again at half that age.
    crl_validity_days: int = 7


@attrs.frozen(kw_only=True)
class StagesConfig:
    """Pipeline stages the operator can switch off. The order of stages is fixed in the bus."""

    #: Outbound signing. Off: nothing is signed, whatever the policy says.
    sign: bool = True
    #: Outbound encryption. Off: ``encrypt = "always"`` recipients are refused, never sent plain.
    encrypt: bool = True
    #: Taking a key from the key pool for a subscriber without one.
    provision: bool = True
    #: Inbound decryption.
    decrypt: bool = True
    #: Inbound signature verification.
    verify: bool = True
    #: Storing certificates from verified inbound signatures.
    harvest: bool = True


@attrs.frozen(kw_only=True)
class PluginsConfig:
    #: Plugin names (built-in or entry point) not to load.
    disabled: tuple[str, ...] = ()
    #: ``[plugins.<name>]`` tables, handed to the plugin named.
    sections: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class Config:
    """The whole configuration. Paths in it are relative to the directory of the config file."""

    path: Path
    storage: StorageConfig = StorageConfig()
    security: SecurityConfig = SecurityConfig()
    smtp: SmtpConfig = SmtpConfig()
    http: HttpConfig = HttpConfig()
    default_policy: Policy = attrs.field(factory=lambda: Policy(origin="[policy.default]"))
    keypool: KeypoolConfig = KeypoolConfig()
    ca: CaConfig = CaConfig()
    plugins: PluginsConfig = PluginsConfig()
    stages: StagesConfig = StagesConfig()
    routing: RoutingConfig = RoutingConfig()
    delivery: DeliveryConfig = DeliveryConfig()

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolve(self, relative: str) -> Path:
        """A path from the config made absolute against the config file's directory."""
        return (self.base_dir / relative).resolve()

    @property
    def data_dir(self) -> Path:
        return self.resolve(self.storage.data_dir)

    @property
    def storage_url(self) -> str:
        """The database URL with a relative SQLite path made absolute."""
        url = os.environ.get(ENV_STORAGE_URL) or self.storage.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/"):
            return prefix + str(self.resolve(url[len(prefix) :]))
        return url

    def plugin_config(self, name: str) -> Mapping[str, Any]:
        """The ``[plugins.<name>]`` table, empty when there is none."""
        return self.plugins.sections.get(name, {})


_Section = TypeVar("_Section")

_TYPE_NAMES = {bool: "true or false", int: "an integer", str: "a string"}


def _expected(annotation: Any) -> type:
    """The plain type a config field holds (``tuple[str, ...]`` is a list of strings in TOML)."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return _expected(next(arg for arg in get_args(annotation) if arg is not type(None)))
    return origin or annotation  # type: ignore[no-any-return]


def _section(cls: type[_Section], table: object, where: str) -> _Section:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table, e.g. {where} followed by key = value lines")
    fields = get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, given in table.items():
        annotation = fields.get(key)
        if annotation is None:
            raise ConfigError(
                f"{where}: unknown key {key!r}; allowed keys: {', '.join(sorted(fields))}"
            )
        expected = _expected(annotation)
        if expected is tuple:
            if not isinstance(given, list) or not all(isinstance(item, str) for item in given):
                raise ConfigError(f'{where} {key} must be a list of strings, e.g. ["a", "b"]')
            values[key] = tuple(given)
        elif type(given) is not expected:
            raise ConfigError(
                f"{where} {key} = {given!r} must be {_TYPE_NAMES.get(expected, expected.__name__)}"
            )
        else:
            values[key] = given
    return cls(**values)


_KNOWN_SECTIONS = (
    "storage",
    "security",
    "smtp",
    "http",
    "policy",
    "keypool",
    "ca",
    "plugins",
    "stages",
    "routing",
    "delivery",
)


def parse_config(document: Mapping[str, Any], path: Path) -> Config:
    """Validate a parsed TOML document; raise ConfigError naming the first bad key."""
    unknown = sorted(set(document) - set(_KNOWN_SECTIONS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown section [{unknown[0]}]; known sections: {', '.join(_KNOWN_SECTIONS)}"
        )
    smtp = _section(SmtpConfig, document.get("smtp", {}), "[smtp]")
    _check_listen(smtp.listen, "[smtp] listen")
    if not smtp.next_hop.startswith(("maildir:", "smtp://")):
        raise ConfigError(
            f"[smtp] next_hop = {smtp.next_hop!r}: expected maildir:PATH or smtp://HOST:PORT"
        )
    _check_smtp(smtp)
    http = _section(HttpConfig, document.get("http", {}), "[http]")
    _check_listen(http.listen, "[http] listen")
    keypool = _keypool(document.get("keypool", {}))
    storage = _section(StorageConfig, document.get("storage", {}), "[storage]")
    if not storage.url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise ConfigError(
            f"[storage] url = {storage.url!r}: expected sqlite:///PATH or postgresql://USER@HOST:PORT/DB"
        )
    return Config(
        path=path,
        storage=storage,
        security=_section(SecurityConfig, document.get("security", {}), "[security]"),
        smtp=smtp,
        http=http,
        default_policy=_default_policy(document.get("policy", {})),
        keypool=keypool,
        ca=_ca(document.get("ca", {})),
        plugins=_plugins(document.get("plugins", {})),
        stages=_section(StagesConfig, document.get("stages", {}), "[stages]"),
        routing=_routing(document.get("routing", {})),
        delivery=_delivery(document.get("delivery", {})),
    )


def _check_positive(section: object, where: str, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(section, name)
        if value < 1:
            raise ConfigError(f"{where} {name} = {value} must be at least 1")


def _check_smtp(smtp: SmtpConfig) -> None:
    if smtp.protocol not in ("smtp", "lmtp"):
        raise ConfigError(f"[smtp] protocol = {smtp.protocol!r}: expected smtp or lmtp")
    _check_positive(
        smtp,
        "[smtp]",
        (
            "workers",
            "pipeline_threads",
            "max_message_size",
            "max_recipients",
            "max_line_length",
            "command_timeout",
            "data_timeout",
            "max_connections",
            "shutdown_timeout",
        ),
    )
    if bool(smtp.tls_certificate) != bool(smtp.tls_key):
        raise ConfigError("[smtp] tls_certificate and tls_key go together: set both or neither")
    for network in smtp.relay_networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ConfigError(
                f"[smtp] relay_networks: {network!r} is not a network, e.g. 192.0.2.0/24"
            ) from None


def _keypool(table: object) -> KeypoolConfig:
    keypool = _section(KeypoolConfig, table, "[keypool]")
    if not 0 <= keypool.threshold <= keypool.size:
        raise ConfigError(
            f"[keypool] threshold = {keypool.threshold} must be between 0 and size ({keypool.size})"
        )
    check_key_type(keypool.key_type, "[keypool] key_type")
    _check_positive(keypool, "[keypool]", ("check_interval",))
    if keypool.generators < 0:
        raise ConfigError(f"[keypool] generators = {keypool.generators} must be 0 or more")
    return keypool


def _ca(table: object) -> CaConfig:
    ca = _section(CaConfig, table, "[ca]")
    check_key_type(ca.key_type, "[ca] key_type")
    _check_positive(ca, "[ca]", ("validity_days", "certificate_validity_days", "crl_validity_days"))
    if ca.certificate_validity_days > ca.validity_days:
        raise ConfigError(
            f"[ca] certificate_validity_days = {ca.certificate_validity_days} must not exceed "
            f"validity_days ({ca.validity_days}): a certificate cannot outlive its CA"
        )
    point = urllib.parse.urlsplit(ca.crl_distribution_point)
    if ca.crl_distribution_point and (
        point.scheme not in ("http", "https", "ldap")
        or not point.hostname
        or any(character.isspace() for character in ca.crl_distribution_point)
    ):
        raise ConfigError(
            f"[ca] crl_distribution_point = {ca.crl_distribution_point!r}: expected an "
            "http://, https:// or ldap:// URL, or empty for none"
        )
    if not ca.crl_file:
        raise ConfigError("[ca] crl_file must name a file, e.g. var/ca/crl.der")
    return ca


def _routing(table: object) -> RoutingConfig:
    routing = _section(RoutingConfig, table, "[routing]")
    domains = []
    for domain in routing.local_domains:
        try:
            domains.append(str(Address.parse(f"postmaster@{domain}").domain))
        except AddressError:
            raise ConfigError(f"[routing] local_domains: {domain!r} is not a domain name") from None
    return attrs.evolve(routing, local_domains=tuple(domains))


def _delivery(table: object) -> DeliveryConfig:
    delivery = _section(DeliveryConfig, table, "[delivery]")
    _check_positive(
        delivery,
        "[delivery]",
        (
            "retry_initial",
            "retry_max_interval",
            "max_age",
            "concurrency",
            "scan_interval",
            "timeout",
        ),
    )
    if "/" in delivery.node or delivery.node in (".", ".."):
        raise ConfigError(f"[delivery] node = {delivery.node!r} must be a plain directory name")
    if delivery.delay_warning < 0:
        raise ConfigError(
            f"[delivery] delay_warning = {delivery.delay_warning} must be 0 (never) or more"
        )
    return delivery


def _default_policy(table: object) -> Policy:
    if not isinstance(table, dict):
        raise ConfigError("[policy] must be a table with a [policy.default] table inside")
    unknown = sorted(set(table) - {"default"})
    if unknown:
        raise ConfigError(
            f"[policy]: unknown key {unknown[0]!r}; only [policy.default] belongs in config.toml "
            "(rules live in the policy store: `sealrelay policy add`)"
        )
    default = table.get("default", {})
    if not isinstance(default, dict):
        raise ConfigError("[policy.default] must be a table")
    return Policy.from_mapping(default, where="[policy.default]")


def _plugins(table: object) -> PluginsConfig:
    if not isinstance(table, dict):
        raise ConfigError("[plugins] must be a table")
    plain = {key: value for key, value in table.items() if not isinstance(value, dict)}
    sections = {key: value for key, value in table.items() if isinstance(value, dict)}
    settings = _section(PluginsConfig, plain, "[plugins]")
    return attrs.evolve(settings, sections=sections)


def load_config(path: Path | str) -> Config:
    """Read and validate a config file; raise ConfigError with a one-line explanation."""
    path = Path(path).resolve()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"no config file at {path}: run sealrelay from the directory holding config.toml "
            "or pass -c PATH"
        ) from None
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from None
    return parse_config(document, path)
