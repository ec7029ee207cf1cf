"""The security policy for one (sender, recipient) pair."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import attrs

from sealrelay.exceptions import ConfigError


SIGN_MODES: Final = ("none", "clear", "opaque")
DIGESTS: Final = ("sha256", "sha384", "sha512")
ENCRYPT_MODES: Final = ("never", "if-possible", "always")
CIPHERS: Final = ("auto", "aes128-cbc", "aes256-cbc", "aes128-gcm", "aes256-gcm")
MISSING_CERTIFICATE_ACTIONS: Final = ("reject", "hold")


def _one_of(allowed: tuple[str, ...]) -> Any:
    def check(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
        if value not in allowed:
            raise ValueError(
                f"{attribute.name} = {value!r} is not allowed; use one of: {', '.join(allowed)}"
            )

    return check


@attrs.frozen(kw_only=True)
class Policy:
    """What to do with mail from one sender to one recipient.

    Two policies that treat a message the same compare equal, whatever rule they came from
    (``origin`` is left out of comparison), so recipients can be grouped by treatment.
    """

    #: ``none``, ``clear`` (multipart/signed) or ``opaque`` (application/pkcs7-mime signed-data).
    sign: str = attrs.field(default="clear", validator=_one_of(SIGN_MODES))
    #: Digest of the signature.
    digest: str = attrs.field(default="sha256", validator=_one_of(DIGESTS))
    #: ``never``; ``if-possible`` (when a valid certificate is known); ``always`` (or not at all).
    encrypt: str = attrs.field(default="if-possible", validator=_one_of(ENCRYPT_MODES))
    #: Content cipher; ``auto`` is the strongest every recipient announced, else AES-256-CBC.
    cipher: str = attrs.field(default="auto", validator=_one_of(CIPHERS))
    #: With ``encrypt = "always"`` and no certificate: ``reject`` the recipient (5xx) or ``hold``
    #: the message for later (4xx), so a certificate can be imported meanwhile.
    missing_certificate: str = attrs.field(
        default="reject", validator=_one_of(MISSING_CERTIFICATE_ACTIONS)
    )
    #: Also encrypt to the sender's own certificate, so the sender can read the sent copy.
    encrypt_to_sender: bool = attrs.field(
        default=False, validator=attrs.validators.instance_of(bool)
    )
    #: Where the policy came from (a rule, a plugin, the default), for ``policy explain``.
    origin: str = attrs.field(default="", eq=False, order=False)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, where: str) -> Policy:
        """Build a policy from a config table; errors name ``where`` and the offending key."""
        known = {field.name for field in attrs.fields(cls)} - {"origin"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(sorted(known))}"
            )
        try:
            return cls(**values, origin=where)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{where}: {error}") from error

    def to_dict(self) -> dict[str, Any]:
        """The policy as JSON-ready data (``origin`` included)."""
        return attrs.asdict(self)
