"""A cache keyed by the identity of the objects a function is called with.

Certificates and parsed CRLs reach the S/MIME layer as the same Python objects with every
message (the store and the certificate cache hand out the objects they made once), but they
are slow to hash: cryptography hashes a certificate's whole parsed structure, about a
microsecond each time, more than the lookups it is for. Keying by `id()` costs nothing; each
entry holds its objects alive, so that no other object can take one of their ids while it is
stored. Equal objects that are not the same object simply miss.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

from cryptography import x509


#: Real certificates are 1-2 KB. Larger ones only ever come from hostile messages, and no
#: cache keeps them: a cache must not hold on to huge objects.
MAX_CACHED_CERTIFICATE = 16 * 1024

_P = ParamSpec("_P")
_R = TypeVar("_R")


def cached_by_identity(
    maxsize: int, admit: Callable[..., bool] | None = None
) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Caches a function of positional arguments (never keywords) by their identities, for
    up to `maxsize` argument tuples (the oldest goes first). `admit(*arguments)`, when given,
    decides whether a result is stored: the cache keeps its arguments alive, so large ones
    from hostile messages must stay out. Only for functions of values nobody mutates, as
    certificates are.
    """

    def decorate(function: Callable[_P, _R]) -> Callable[_P, _R]:
        entries: dict[tuple[int, ...], tuple[tuple[Any, ...], _R]] = {}
        # Messages are processed in several threads: evicting walks the dict, which another
        # thread's insert would otherwise change under it.
        lock = threading.Lock()

        @functools.wraps(function)
        def lookup(*arguments: Any) -> _R:
            key = tuple(map(id, arguments))
            entry = entries.get(key)
            if entry is not None:
                return entry[1]
            result = function(*arguments)  # type: ignore[call-arg]
            if admit is None or admit(*arguments):
                with lock:
                    if len(entries) >= maxsize:
                        entries.pop(next(iter(entries)))
                    entries[key] = (arguments, result)
            return result

        return cast(Callable[_P, _R], lookup)

    return decorate


def small_certificates(*certificates: x509.Certificate) -> bool:
    """Whether every one of `certificates` is small enough to be kept in a cache."""
    return all(
        len(cert.tbs_certificate_bytes) + len(cert.signature) <= MAX_CACHED_CERTIFICATE
        for cert in certificates
    )
