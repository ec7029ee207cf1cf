"""The errors the S/MIME layer raises; callers catch `SmimeError` to handle any of them."""

from __future__ import annotations

from sealrelay.exceptions import SealrelayError


class SmimeError(SealrelayError):
    """Base of every error raised by `sealrelay.smime`."""


class MalformedMessage(SmimeError):
    """The input is not a well-formed S/MIME entity or CMS structure (bad MIME, base64 or ASN.1).

    Raised for every kind of broken or hostile input, so that a caller needs one except clause
    to turn garbage into a rejected message instead of a crash.
    """


class SigningError(SmimeError):
    """A signature could not be made: unsupported key or digest, or a key that does not match."""


class EncryptionError(SmimeError):
    """A message could not be encrypted: a recipient key or certificate cannot be used for it."""


class UnsupportedAlgorithm(SmimeError):
    """A well-formed message uses a content cipher or key management scheme sealrelay lacks."""


class NoMatchingKey(SmimeError):
    """None of the message's recipients is one of the keys we hold: it was not encrypted to us."""


class DecryptionFailed(SmimeError):
    """A recipient matched one of our keys, but the content could not be recovered.

    Every cause (wrong key material, bad padding, failed authentication tag, corrupted content)
    raises this one error with the same message, so that a sender of forged messages learns
    nothing from the failure (no padding or key-unwrap oracle).
    """
