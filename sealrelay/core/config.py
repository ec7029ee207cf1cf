"""config.toml read into frozen attrs classes; every mistake is an error that names the key."""

from __future__ import annotations

import os
import tomllib
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import attrs

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


@attrs.frozen(kw_only=True)
class HttpConfig:
    listen: str = "127.0.0.1:8025"


@attrs.frozen(kw_only=True)
class KeypoolConfig:
    size: int = 20
    threshold: int = 5


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
    plugins: PluginsConfig = PluginsConfig()
    stages: StagesConfig = StagesConfig()

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


_KNOWN_SECTIONS = ("storage", "security", "smtp", "http", "policy", "keypool", "plugins", "stages")


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
    http = _section(HttpConfig, document.get("http", {}), "[http]")
    _check_listen(http.listen, "[http] listen")
    keypool = _section(KeypoolConfig, document.get("keypool", {}), "[keypool]")
    if not 0 <= keypool.threshold <= keypool.size:
        raise ConfigError(
            f"[keypool] threshold = {keypool.threshold} must be between 0 and size ({keypool.size})"
        )
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
        plugins=_plugins(document.get("plugins", {})),
        stages=_section(StagesConfig, document.get("stages", {}), "[stages]"),
    )


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
