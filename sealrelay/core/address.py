"""E-mail addresses as the relay compares them: exact local part, case-insensitive IDN domain."""

from __future__ import annotations

import functools
import re

import attrs

from sealrelay.exceptions import SealrelayError


class AddressError(SealrelayError):
    """A string is not a usable e-mail address."""


#: Exactly what ``str.isspace`` or a code point below 32 matches, in one C-level scan.
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f]")


def _normalise_domain(domain: str) -> str:
    """The domain in lower-case Unicode form (U-labels): IDN and punycode forms then match."""
    domain = domain.rstrip(".").lower()
    if not domain or any(not label for label in domain.split(".")):
        raise AddressError(f"{domain!r} is not a domain name")
    if domain.isascii() and "xn--" not in domain:
        return domain  # the IDNA codec returns such a domain unchanged, slowly
    try:
        return domain.encode("ascii").decode("idna") if domain.isascii() else domain
    except UnicodeError as error:
        raise AddressError(f"{domain!r} is not a valid internationalised domain name") from error


@attrs.frozen(order=True)
class Address:
    """One mailbox address.

    The local part is kept exactly as given (RFC 5321 makes it case-sensitive; SMTPUTF8 allows
    UTF-8 in it); the domain is compared case-insensitively and in its Unicode form, so
    ``Bob@Example.ORG``, ``bob@example.org`` differ only in the local part and ``x@bücher.example``
    equals ``x@xn--bcher-kva.example``.
    """

    local: str
    domain: str

    @classmethod
    def parse(cls, text: str) -> Address:
        """Parse ``local@domain`` (angle brackets allowed); raise AddressError on anything else."""
        return _parse(text)

    @property
    def ascii_domain(self) -> str:
        """The domain in its ASCII (punycode, A-label) form, as DNS and certificates use it."""
        return self.domain.encode("idna").decode("ascii")

    @property
    def needs_smtputf8(self) -> bool:
        """True when the local part is not ASCII, so that only an SMTPUTF8 server can take it."""
        return not self.local.isascii()

    @property
    def lookup_key(self) -> str:
        """A case-folded form for looking addresses up in stores and certificates.

        Mail systems treat local parts case-insensitively in practice, and certificate
        authorities print them in any case, so lookups fold both halves.
        """
        return f"{self.local.casefold()}@{self.domain}"

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"


# A message names its sender and recipients about ten times on its way through the relay, and
# the same correspondents come back all day: parsing each text once is worth a bounded cache.
# Addresses are frozen, so a cached one cannot be changed by whoever got it.
@functools.lru_cache(maxsize=8192)
def _parse(text: str) -> Address:
    text = text.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain:
        raise AddressError(f"{text!r} is not an e-mail address (expected local@domain)")
    if _SPACE_OR_CONTROL.search(text):
        raise AddressError(f"{text!r} contains white space or control characters")
    return Address(local=local, domain=_normalise_domain(domain))
