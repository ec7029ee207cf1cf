"""Certification path validation for S/MIME signers: trust, validity, revocation, key usage.

Hand-written on `cryptography` primitives rather than `x509.verification` because S/MIME needs
what that module lacks: revocation from CRLs, the emailProtection EKU, and a precise reason code
for each failure. Only the given trust anchors are trusted; certificates from a message only
ever serve as intermediates.
"""

from __future__ import annotations

import datetime
import functools
import itertools
from collections.abc import Iterator, Sequence
from typing import Literal

import attrs
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from sealrelay.smime.memo import cached_by_identity, small_certificates


#: Longest path searched (leaf + intermediates + anchor) and the number of candidate issuers
#: tried: a hostile message could carry many certificates with the same name and key.
MAX_PATH_LENGTH = 8
MAX_ISSUER_CHECKS = 200

Revocation = Literal["ok", "revoked", "unknown"]


@attrs.frozen
class ChainResult:
    """`status` is "ok" or a reason code: untrusted, expired, not-yet-valid, revoked,
    no-email-protection-eku, bad-key-usage. `revocation` is "ok" only when a current CRL from
    every issuer in the path was given; "unknown" alone does not make a chain fail."""

    status: str
    revocation: Revocation
    path: tuple[x509.Certificate, ...]  # signer first, trust anchor last; empty if untrusted
    detail: str | None = None


def _extension(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
    except ValueError:  # an extension cryptography cannot parse: treat as absent
        return None


def _key_ids_match(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    aki = _extension(child, x509.AuthorityKeyIdentifier)
    ski = _extension(issuer, x509.SubjectKeyIdentifier)
    if not isinstance(aki, x509.AuthorityKeyIdentifier) or aki.key_identifier is None:
        return True
    if not isinstance(ski, x509.SubjectKeyIdentifier):
        return True
    return aki.key_identifier == ski.digest


class _PathSearch:
    def __init__(
        self, anchors: Sequence[x509.Certificate], intermediates: Sequence[x509.Certificate]
    ) -> None:
        self.anchors = list(anchors)
        anchor_set = set(self.anchors)
        self.intermediates = [c for c in intermediates if c not in anchor_set]
        self.checks = 0
        self.issued: dict[tuple[x509.Certificate, x509.Certificate], bool] = {}

    def _issued_by(self, child: x509.Certificate, issuer: x509.Certificate) -> bool:
        if child.issuer != issuer.subject or not _key_ids_match(child, issuer):
            return False
        pair = (child, issuer)
        if pair not in self.issued:
            self.checks += 1
            self.issued[pair] = _signed_by(child, issuer)
        return self.issued[pair]

    def paths(self, path: list[x509.Certificate]) -> Iterator[tuple[x509.Certificate, ...]]:
        """Every path from path[-1] up to an anchor, anchors tried before intermediates."""
        if self.checks > MAX_ISSUER_CHECKS or len(path) >= MAX_PATH_LENGTH:
            return
        current = path[-1]
        for anchor in self.anchors:
            if self._issued_by(current, anchor):
                yield (*path, anchor)
        for candidate in self.intermediates:
            if candidate not in path and self._issued_by(current, candidate):
                yield from self.paths([*path, candidate])


def _signed_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether `issuer`'s key signed `child`: a function of the two encodings (which
    certificates hash and compare by), so it is checked once per pair, not once per message."""
    if not small_certificates(child, issuer):
        return _verify_signed_by(child, issuer)
    return _cached_signed_by(child, issuer)


def _verify_signed_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


_cached_signed_by = functools.lru_cache(maxsize=1024)(_verify_signed_by)


def _ca_problem(path: tuple[x509.Certificate, ...]) -> str | None:
    # Intermediates must be CAs allowed to sign certificates, within their path length.
    for depth, cert in enumerate(path[1:-1], start=1):
        constraints = _extension(cert, x509.BasicConstraints)
        if not isinstance(constraints, x509.BasicConstraints) or not constraints.ca:
            return f"{cert.subject.rfc4514_string()} is not a CA certificate"
        if constraints.path_length is not None and depth - 1 > constraints.path_length:
            return f"path length constraint of {cert.subject.rfc4514_string()} exceeded"
        usage = _extension(cert, x509.KeyUsage)
        if isinstance(usage, x509.KeyUsage) and not usage.key_cert_sign:
            return f"{cert.subject.rfc4514_string()} may not sign certificates (key usage)"
    return None


def _validity_problem(
    path: tuple[x509.Certificate, ...], at: datetime.datetime
) -> tuple[str, str] | None:
    for cert in path:
        if at > cert.not_valid_after_utc:
            return "expired", f"{cert.subject.rfc4514_string()} expired {cert.not_valid_after_utc}"
        if at < cert.not_valid_before_utc:
            return "not-yet-valid", (
                f"{cert.subject.rfc4514_string()} is valid from {cert.not_valid_before_utc}"
            )
    return None


def _revocation(
    path: tuple[x509.Certificate, ...],
    crls: Sequence[x509.CertificateRevocationList],
    at: datetime.datetime,
) -> tuple[Revocation, str | None]:
    status: Revocation = "ok"
    # A CRL builds its issuer Name anew on every access: read each one once.
    issued_crls = [(crl, crl.issuer) for crl in crls]
    for cert, issuer in itertools.pairwise(path):
        usable = [
            crl
            for crl, crl_issuer in issued_crls
            if crl_issuer == issuer.subject and _crl_signed_by(crl, issuer)
        ]
        for crl in usable:
            entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
            if entry is not None and entry.revocation_date_utc <= at:
                return "revoked", (
                    f"{cert.subject.rfc4514_string()} was revoked on {entry.revocation_date_utc}"
                )
        is_current = any(
            crl.last_update_utc <= at and (crl.next_update_utc is None or at <= crl.next_update_utc)
            for crl in usable
        )
        if not is_current:
            status = "unknown"
    return status, None


def _crl_signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    # CRL objects are not hashable: the check is cached by the CRL's encoding.
    return _crl_der_signed_by(crl.public_bytes(Encoding.DER), issuer)


@functools.lru_cache(maxsize=256)
def _crl_der_signed_by(crl_der: bytes, issuer: x509.Certificate) -> bool:
    try:
        crl = x509.load_der_x509_crl(crl_der)
        return crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError, UnsupportedAlgorithm):
        return False


def _usage_problem(leaf: x509.Certificate) -> tuple[str, str] | None:
    eku = _extension(leaf, x509.ExtendedKeyUsage)
    allowed = {ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
    if isinstance(eku, x509.ExtendedKeyUsage) and not allowed.intersection(eku):
        return "no-email-protection-eku", "the signer certificate is not for e-mail protection"
    usage = _extension(leaf, x509.KeyUsage)
    if isinstance(usage, x509.KeyUsage) and not (
        usage.digital_signature or usage.content_commitment
    ):
        return "bad-key-usage", "the signer certificate's key usage does not allow signing"
    return None


def _evaluate(
    path: tuple[x509.Certificate, ...],
    crls: Sequence[x509.CertificateRevocationList],
    at: datetime.datetime,
) -> ChainResult:
    ca_problem = _ca_problem(path)
    if ca_problem is not None:
        return ChainResult("untrusted", "unknown", path, ca_problem)
    revocation, revoked_detail = _revocation(path, crls, at)
    if revocation == "revoked":
        return ChainResult("revoked", revocation, path, revoked_detail)
    problem = _validity_problem(path, at) or _usage_problem(path[0])
    if problem is not None:
        return ChainResult(problem[0], revocation, path, problem[1])
    return ChainResult("ok", revocation, path)


def validate_signer(
    signer: x509.Certificate,
    *,
    trust_anchors: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate] = (),
    crls: Sequence[x509.CertificateRevocationList] = (),
    at: datetime.datetime,
) -> ChainResult:
    """Finds a path from `signer` to one of `trust_anchors` and checks it at time `at`.

    Of several paths the first fully valid one wins, else the first found (its failure is
    reported). A signer that is itself a trust anchor is trusted directly. Verdicts are
    reused while nothing they depend on can have changed (see "reusing verdicts" below).
    """
    key = _verdict_key(signer, trust_anchors, intermediates, crls)
    if key is not None:
        cached = _VERDICTS.get(key)
        if cached is not None and _inside(at, cached[0], cached[1]):
            return cached[2]
    result = _validate(signer, trust_anchors, intermediates, crls, at)
    if key is not None and small_certificates(signer, *trust_anchors, *intermediates):
        window = _unchanging_window(signer, trust_anchors, intermediates, crls, at)
        if window is not None:
            if len(_VERDICTS) >= _MAX_VERDICTS:
                _VERDICTS.pop(next(iter(_VERDICTS)), None)
            _VERDICTS[key] = (*window, result, (signer, *trust_anchors, *intermediates))
    return result


def _validate(
    signer: x509.Certificate,
    trust_anchors: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate],
    crls: Sequence[x509.CertificateRevocationList],
    at: datetime.datetime,
) -> ChainResult:
    if signer in trust_anchors:
        path: tuple[x509.Certificate, ...] = (signer,)
        problem = _validity_problem(path, at) or _usage_problem(signer)
        if problem is not None:
            return ChainResult(problem[0], "unknown", path, problem[1])
        return ChainResult("ok", "unknown", path)
    first: ChainResult | None = None
    for candidate in _PathSearch(trust_anchors, intermediates).paths([signer]):
        result = _evaluate(candidate, crls, at)
        if result.status == "ok":
            return result
        first = first or result
    if first is not None:
        return first
    return ChainResult("untrusted", "unknown", (), "no path to a trust anchor")


# --- reusing verdicts ------------------------------------------------------------------------
#
# A sender's mail brings the same chain again and again, and validating it costs more than
# the signature check. The verdict is a function of the certificates, the CRLs and the time,
# and the time enters only through comparisons with validity bounds, CRL update times and
# revocation dates: between two consecutive such instants every comparison, and so the
# verdict, stays the same. A verdict is therefore reused for any time strictly inside the
# interval around the moment it was computed for.

#: The identities of the signer, the anchors and the intermediates (certificates are slow to
#: hash: see `sealrelay.smime.memo`), and the SHA-256 fingerprints of the CRLs.
_Key = tuple[int, tuple[int, ...], tuple[int, ...], tuple[bytes, ...]]
#: Earliest and latest instant (exclusive, None: unbounded), the verdict, and the
#: certificates whose identities are in its key, kept alive so that no other object can take
#: one of their ids while the verdict is stored.
_Verdict = tuple[
    datetime.datetime | None, datetime.datetime | None, ChainResult, tuple[x509.Certificate, ...]
]
_VERDICTS: dict[_Key, _Verdict] = {}
_MAX_VERDICTS = 256
#: Larger certificate sets, and sets with a certificate over 16 KiB (only ever from hostile
#: messages), are not cached: the cache holds at most 256 * 16 certificates of 16 KiB.
_MAX_VERDICT_CERTIFICATES = 16


def _verdict_key(
    signer: x509.Certificate,
    anchors: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate],
    crls: Sequence[x509.CertificateRevocationList],
) -> _Key | None:
    if len(anchors) + len(intermediates) >= _MAX_VERDICT_CERTIFICATES:
        return None
    fingerprints = tuple(map(_fingerprint, crls))
    return id(signer), tuple(map(id, anchors)), tuple(map(id, intermediates)), fingerprints


@cached_by_identity(maxsize=64)
def _fingerprint(crl: x509.CertificateRevocationList) -> bytes:
    # Callers pass the same parsed CRLs with every message, and hashing one costs more than
    # the rest of the lookup. (CRLs come from the store, never from messages.)
    return crl.fingerprint(hashes.SHA256())


def _inside(
    at: datetime.datetime, after: datetime.datetime | None, before: datetime.datetime | None
) -> bool:
    return (after is None or after < at) and (before is None or at < before)


def _unchanging_window(
    signer: x509.Certificate,
    anchors: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate],
    crls: Sequence[x509.CertificateRevocationList],
    at: datetime.datetime,
) -> tuple[datetime.datetime | None, datetime.datetime | None] | None:
    """The open interval around `at` in which no instant that validation compares the time
    with lies (a superset of them: every certificate and CRL given, whether in a path or
    not); None when `at` is itself such an instant or cannot be compared."""
    if at.utcoffset() is None:
        return None
    certificates = (signer, *anchors, *intermediates)
    instants = [
        bound
        for cert in certificates
        for bound in (cert.not_valid_before_utc, cert.not_valid_after_utc)
    ]
    try:
        for crl in crls:
            instants.append(crl.last_update_utc)
            if crl.next_update_utc is not None:
                instants.append(crl.next_update_utc)
            for cert in (signer, *intermediates):
                entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
                if entry is not None:
                    instants.append(entry.revocation_date_utc)
    except (ValueError, TypeError, OverflowError):
        return None
    if at in instants:
        return None
    after = max((instant for instant in instants if instant < at), default=None)
    before = min((instant for instant in instants if instant > at), default=None)
    return after, before
