"""A registered subscriber: an address whose mail the relay signs, encrypts and decrypts."""

from __future__ import annotations

import attrs


@attrs.frozen(kw_only=True)
class Subscriber:
    address: str
    display_name: str = ""
    groups: tuple[str, ...] = ()
    enabled: bool = True
