"""The errors of the built-in CA; each message tells the operator what to do."""

from __future__ import annotations

from sealrelay.exceptions import SealrelayError


class CaError(SealrelayError):
    """The built-in CA cannot do what was asked (no CA yet, unknown certificate, bad import)."""
