"""The kinds of key pair the relay generates (key pool, built-in CA), by their config names."""

from __future__ import annotations

from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from sealrelay.exceptions import ConfigError


_RSA_BITS: Final = {"rsa2048": 2048, "rsa3072": 3072, "rsa4096": 4096}
_CURVES: Final[dict[str, type[ec.EllipticCurve]]] = {
    "ec-p256": ec.SECP256R1,
    "ec-p384": ec.SECP384R1,
}
#: Every name ``key_type`` may take in config.toml.
KEY_TYPES: Final = (*_RSA_BITS, *_CURVES)


def check_key_type(value: str, where: str) -> str:
    if value not in KEY_TYPES:
        raise ConfigError(f"{where} = {value!r}: expected one of {', '.join(KEY_TYPES)}")
    return value


def generate_private_key(key_type: str) -> PrivateKeyTypes:
    """A new private key of *key_type* (slow for RSA: hundreds of milliseconds for 3072 bits)."""
    if key_type in _RSA_BITS:
        return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS[key_type])
    return ec.generate_private_key(_CURVES[check_key_type(key_type, "key type")]())


def key_type_of(key: PrivateKeyTypes | PublicKeyTypes) -> str:
    """The config name of *key*'s type; ConfigError for a kind the relay does not generate."""
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        name = f"rsa{key.key_size}"
    elif isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        name = {"secp256r1": "ec-p256", "secp384r1": "ec-p384"}.get(key.curve.name, key.curve.name)
    else:
        name = type(key).__name__
    return check_key_type(name, "key type")
