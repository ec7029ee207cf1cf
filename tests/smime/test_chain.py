"""Reused chain verdicts: the same answer as a fresh validation, at any moment."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from sealrelay.smime import chain
from sealrelay.smime.chain import ChainResult, validate_signer
from tests.pki import TestIdentity, TestPKI, make_root


NOW = datetime.datetime.now(datetime.UTC)
SECOND = datetime.timedelta(seconds=1)


def validate(
    pki: TestPKI,
    identity: TestIdentity,
    at: datetime.datetime,
    crls: list[x509.CertificateRevocationList] | None = None,
    intermediates: tuple[x509.Certificate, ...] | None = None,
) -> ChainResult:
    return validate_signer(
        identity.cert,
        trust_anchors=pki.trust_anchors(),
        intermediates=identity.chain if intermediates is None else intermediates,
        crls=[pki.crl, pki.root_crl] if crls is None else crls,
        at=at,
    )


def fresh(pki: TestPKI, identity: TestIdentity, at: datetime.datetime, **kwargs) -> ChainResult:
    chain._VERDICTS.clear()
    return validate(pki, identity, at, **kwargs)


def test_a_verdict_is_reused_for_the_same_chain_and_crls(pki: TestPKI):
    first = fresh(pki, pki.rsa2048, NOW)
    assert first.status == "ok"
    assert validate(pki, pki.rsa2048, NOW + SECOND) is first
    # Other CRLs, other intermediates: validated anew.
    assert validate(pki, pki.rsa2048, NOW, crls=[pki.crl]) is not first
    assert validate(pki, pki.rsa2048, NOW, crls=[pki.crl]).revocation == "unknown"
    assert validate(pki, pki.rsa2048, NOW, intermediates=()).status == "untrusted"


def test_validity_bounds_end_a_verdict(pki: TestPKI):
    leaf = pki.rsa2048.cert
    inside = leaf.not_valid_after_utc - SECOND
    for at, status in (
        (inside, "ok"),
        (leaf.not_valid_after_utc + SECOND, "expired"),
        (inside, "ok"),
        (leaf.not_valid_before_utc - SECOND, "not-yet-valid"),
        (NOW, "ok"),
    ):
        assert validate(pki, pki.rsa2048, at).status == status
        assert validate(pki, pki.rsa2048, at) == fresh(pki, pki.rsa2048, at)


def test_revocation_dates_and_crl_updates_end_a_verdict(pki: TestPKI):
    entry = pki.crl.get_revoked_certificate_by_serial_number(pki.revoked.cert.serial_number)
    assert entry is not None
    before_revocation = entry.revocation_date_utc - SECOND
    assert pki.crl.next_update_utc is not None
    stale = pki.crl.next_update_utc + SECOND
    moments = (NOW, before_revocation, NOW, stale, before_revocation)
    seen = []
    for at in moments:
        cached = validate(pki, pki.revoked, at)
        assert cached == fresh(pki, pki.revoked, at)
        seen.append((cached.status, cached.revocation))
    # Before its revocation (and before the CRL was issued) the certificate was fine, but
    # no CRL vouched for it yet.
    assert seen == [
        ("revoked", "revoked"),
        ("ok", "unknown"),
        ("revoked", "revoked"),
        ("revoked", "revoked"),
        ("ok", "unknown"),
    ]


def test_a_verdict_at_a_bound_itself_is_not_reused(pki: TestPKI):
    at = pki.rsa2048.cert.not_valid_after_utc
    first = fresh(pki, pki.rsa2048, at)
    assert validate(pki, pki.rsa2048, at) is not first


def test_large_certificate_sets_are_not_cached(pki: TestPKI):
    strangers = tuple(make_root(f"Stranger {i}")[0] for i in range(chain._MAX_VERDICT_CERTIFICATES))
    intermediates = (*strangers, pki.intermediate)
    first = fresh(pki, pki.rsa2048, NOW, intermediates=intermediates)
    assert first.status == "ok"
    assert validate(pki, pki.rsa2048, NOW, intermediates=intermediates) is not first


def test_crl_fingerprints_are_remembered_by_identity(pki: TestPKI):
    fingerprint = chain._fingerprint(pki.crl)
    assert chain._fingerprint(pki.crl) is fingerprint
    copy = x509.load_der_x509_crl(pki.crl.public_bytes(Encoding.DER))
    assert chain._fingerprint(copy) == fingerprint


def test_an_equal_copy_of_a_certificate_is_validated_anew(pki: TestPKI):
    first = fresh(pki, pki.rsa2048, NOW)
    copy = x509.load_der_x509_certificate(pki.rsa2048.cert.public_bytes(Encoding.DER))
    again = validate_signer(
        copy,
        trust_anchors=pki.trust_anchors(),
        intermediates=pki.rsa2048.chain,
        crls=[pki.crl, pki.root_crl],
        at=NOW,
    )
    assert again == first
    assert again is not first
