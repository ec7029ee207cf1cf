"""The master key that encrypts private keys at rest. It never enters the database."""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from typing import Final

from sealrelay.core.config import ENV_MASTER_KEY, Config
from sealrelay.exceptions import ConfigError


KEY_BYTES: Final = 32


def _decode(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"the master key in {where} is not base64") from None
    if len(key) != KEY_BYTES:
        raise ConfigError(
            f"the master key in {where} is {len(key)} bytes long; it must be {KEY_BYTES} "
            "(create one with `sealrelay init`, or `head -c 32 /dev/urandom | base64`)"
        )
    return key


def load_master_key(config: Config) -> bytes:
    """The master key from ``SEALRELAY_MASTER_KEY``, else from ``[security] master_key_file``."""
    from_environment = os.environ.get(ENV_MASTER_KEY)
    if from_environment:
        return _decode(from_environment, ENV_MASTER_KEY)
    path = config.resolve(config.security.master_key_file)
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise ConfigError(
            f"no master key at {path}: run `sealrelay init` or set {ENV_MASTER_KEY}"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read the master key at {path}: {error}") from None
    return _decode(text, str(path))


def ensure_master_key(config: Config) -> str:
    """Create the master key file (mode 0600) unless a key exists; say what was done."""
    if os.environ.get(ENV_MASTER_KEY):
        load_master_key(config)
        return f"master key: taken from {ENV_MASTER_KEY}"
    path = config.resolve(config.security.master_key_file)
    if path.exists():
        load_master_key(config)
        return f"master key: kept {path}"
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded = base64.b64encode(secrets.token_bytes(KEY_BYTES)) + b"\n"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(descriptor, encoded)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return f"master key: created {path} (mode 0600); back it up, keys cannot be read without it"
