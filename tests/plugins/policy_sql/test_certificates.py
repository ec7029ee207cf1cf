"""Certificates, identities, trust anchors and CRLs: imported through the commands, answered
through the hooks the bus calls."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from sealrelay import Certificate, SealrelayError
from sealrelay.core.certificate import best_encryption_certificate
from tests.pki import build_test_pki, make_crl, make_root, rsa_key
from tests.plugins.policy_sql.conftest import der, write_pkcs12


NOW = dt.datetime.now(dt.UTC)


@pytest.fixture
def pki():
    return build_test_pki()


def pem(*certificates) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def hook(bus, name, **kwargs):
    return getattr(bus.plugins.pm.hook, name)(**kwargs)


def certificates_for(bus, address) -> list[Certificate]:
    return [
        c
        for answer in hook(bus, "sealrelay_recipient_certificates", address=address)
        for c in answer
    ]


def import_anchor_and_intermediate(admin, pki, tmp_path):
    (tmp_path / "root.pem").write_bytes(pem(pki.root))
    (tmp_path / "intermediate.der").write_bytes(
        pki.intermediate.public_bytes(serialization.Encoding.DER)
    )
    admin("cert import", files=[tmp_path / "root.pem"], trust_anchor=True)
    admin("cert import", files=[tmp_path / "intermediate.der"])


def test_a_certificate_chaining_to_a_stored_anchor_is_trusted(admin, bus, pki, tmp_path):
    (tmp_path / "alice.pem").write_bytes(pem(pki.rsa2048.cert))
    admin("cert import", files=[tmp_path / "alice.pem"])
    [untrusted] = certificates_for(bus, "alice@example.org")
    assert not untrusted.trusted
    import_anchor_and_intermediate(admin, pki, tmp_path)
    [trusted] = certificates_for(bus, "alice@example.org")
    assert trusted.der == der(pki.rsa2048)
    assert trusted.trusted
    assert not trusted.revoked
    assert trusted.source == "imported"
    chosen = best_encryption_certificate(
        certificates_for(bus, "alice@example.org"), "alice@example.org", NOW
    )
    assert chosen is not None
    assert chosen.fingerprint == trusted.fingerprint


def test_a_certificate_from_another_root_stays_untrusted_unless_trusted_explicitly(
    admin, bus, pki, tmp_path
):
    import_anchor_and_intermediate(admin, pki, tmp_path)
    (tmp_path / "ivan.pem").write_bytes(pem(pki.untrusted.cert))
    admin("cert import", files=[tmp_path / "ivan.pem"])
    assert [c.trusted for c in certificates_for(bus, "ivan@example.org")] == [False]
    admin("cert import", files=[tmp_path / "ivan.pem"], trusted=True)
    assert [c.trusted for c in certificates_for(bus, "ivan@example.org")] == [True]


def test_a_leaf_cannot_be_a_trust_anchor(admin, pki, tmp_path):
    (tmp_path / "alice.pem").write_bytes(pem(pki.rsa2048.cert))
    with pytest.raises(SealrelayError, match="not a CA certificate"):
        admin("cert import", files=[tmp_path / "alice.pem"], trust_anchor=True)


def test_pem_der_and_pkcs7_bundles_are_read(admin, bus, pki, tmp_path):
    bundle = pkcs7.serialize_certificates(
        [pki.p256.cert, pki.p384.cert], serialization.Encoding.DER
    )
    (tmp_path / "bundle.p7b").write_bytes(bundle)
    (tmp_path / "bundle.p7c.pem").write_bytes(
        pkcs7.serialize_certificates([pki.rsa3072.cert], serialization.Encoding.PEM)
    )
    (tmp_path / "erin.der").write_bytes(der(pki.ed25519))
    (tmp_path / "chain.pem").write_bytes(pem(pki.root, pki.intermediate))
    result = admin(
        "cert import",
        files=[
            tmp_path / "bundle.p7b",
            tmp_path / "bundle.p7c.pem",
            tmp_path / "erin.der",
            tmp_path / "chain.pem",
        ],
    )
    assert [row["outcome"] for row in result.data] == ["added"] * 6
    again = admin("cert import", files=[tmp_path / "erin.der"])
    assert again.data[0]["outcome"] == "unchanged"
    for identity in (pki.p256, pki.p384, pki.rsa3072, pki.ed25519):
        assert [c.der for c in certificates_for(bus, identity.address)] == [der(identity)]


def test_a_file_without_certificates_is_refused_with_its_name(admin, tmp_path):
    (tmp_path / "notes.txt").write_bytes(b"just text")
    with pytest.raises(SealrelayError, match=r"notes\.txt"):
        admin("cert import", files=[tmp_path / "notes.txt"])


def test_address_lookup_ignores_case_and_idn_form(admin, bus, pki, tmp_path):
    # Certificates carry IDN domains as A-labels (RFC 8398 allows U-labels only in SmtpUTF8Mailbox).
    identity = pki.issue(rsa_key(), address="Zoe@XN--BCHER-KVA.example")
    (tmp_path / "z.pem").write_bytes(pem(identity.cert))
    admin("cert import", files=[tmp_path / "z.pem"])
    for spelling in ("zoe@bücher.example", "ZOE@xn--bcher-kva.example", "Zoe@BÜCHER.EXAMPLE"):
        assert [c.der for c in certificates_for(bus, spelling)] == [der(identity)], spelling


def test_subject_email_address_counts_too_and_several_certificates_per_address(
    admin, bus, pki, tmp_path
):
    key = rsa_key()
    by_subject = pki.issue(key, address=None, subject_address="mallory@example.org")
    later = pki.issue(key, address="mallory@example.org", not_after=NOW + dt.timedelta(days=800))
    (tmp_path / "m.pem").write_bytes(pem(by_subject.cert, later.cert))
    import_anchor_and_intermediate(admin, pki, tmp_path)
    admin("cert import", files=[tmp_path / "m.pem"])
    found = certificates_for(bus, "mallory@example.org")
    assert [c.der for c in found] == [
        by_subject.cert.public_bytes(serialization.Encoding.DER),
        later.cert.public_bytes(serialization.Encoding.DER),
    ]
    best = best_encryption_certificate(found, "mallory@example.org", NOW)
    assert best is not None
    assert best.der == found[1].der


def test_revoked_by_an_imported_crl(admin, bus, pki, tmp_path):
    import_anchor_and_intermediate(admin, pki, tmp_path)
    (tmp_path / "grace.pem").write_bytes(pem(pki.revoked.cert, pki.rsa2048.cert))
    admin("cert import", files=[tmp_path / "grace.pem"])
    assert [c.revoked for c in certificates_for(bus, "grace@example.org")] == [False]
    (tmp_path / "intermediate.crl").write_bytes(pki.crl.public_bytes(serialization.Encoding.PEM))
    result = admin("crl import", files=[tmp_path / "intermediate.crl"])
    assert result.data[0]["outcome"] == "added"
    assert result.data[0]["revoked"] == 1
    assert [c.revoked for c in certificates_for(bus, "grace@example.org")] == [True]
    assert [c.revoked for c in certificates_for(bus, "alice@example.org")] == [False]
    crls = [crl for answer in hook(bus, "sealrelay_revocation_lists") for crl in answer]
    assert crls == [pki.crl.public_bytes(serialization.Encoding.DER)]
    assert (
        best_encryption_certificate(
            certificates_for(bus, "grace@example.org"), "grace@example.org", NOW
        )
        is None
    )


def test_a_crl_not_signed_by_a_stored_ca_is_refused(admin, pki, tmp_path):
    import_anchor_and_intermediate(admin, pki, tmp_path)
    impostor, impostor_key = make_root("Sealrelay Test Intermediate CA")
    forged = make_crl(impostor, impostor_key, [pki.revoked.cert])
    (tmp_path / "forged.crl").write_bytes(forged.public_bytes(serialization.Encoding.DER))
    with pytest.raises(SealrelayError, match="no stored CA certificate signed this CRL"):
        admin("crl import", files=[tmp_path / "forged.crl"])


def test_trust_anchors_hook_returns_only_anchors(admin, bus, pki, tmp_path):
    import_anchor_and_intermediate(admin, pki, tmp_path)
    anchors = [c for answer in hook(bus, "sealrelay_trust_anchors") for c in answer]
    assert [c.der for c in anchors] == [pki.root.public_bytes(serialization.Encoding.DER)]
    assert all(c.trusted for c in anchors)


@pytest.mark.parametrize("legacy", [False, True], ids=["aes-pbkdf2", "legacy-3des"])
def test_identity_import_gives_signing_and_decryption_identities(admin, bus, pki, tmp_path, legacy):
    import_anchor_and_intermediate(admin, pki, tmp_path)
    p12 = write_pkcs12(tmp_path / "alice.p12", pki.rsa2048, b"s3cret", legacy=legacy)
    (tmp_path / "password").write_text("s3cret\n")
    result = admin("identity import", file=p12, password_file=tmp_path / "password")
    assert result.data["outcome"] == "added"
    assert result.data["addresses"] == ["alice@example.org"]
    identity = hook(bus, "sealrelay_signing_identity", address="Alice@Example.ORG")
    assert identity is not None
    assert identity.certificate.der == der(pki.rsa2048)
    assert identity.certificate.trusted
    assert [c.der for c in identity.chain] == [
        pki.intermediate.public_bytes(serialization.Encoding.DER)
    ]
    assert identity.private_key.private_numbers() == pki.rsa2048.key.private_numbers()
    assert "private_key" not in repr(identity)


def test_wrong_pkcs12_password_is_a_clear_error(admin, pki, tmp_path):
    p12 = write_pkcs12(tmp_path / "alice.p12", pki.rsa2048, b"right")
    (tmp_path / "password").write_text("wrong\n")
    with pytest.raises(SealrelayError, match="password is wrong"):
        admin("identity import", file=p12, password_file=tmp_path / "password")


def test_signing_uses_the_newest_valid_key_and_decryption_gets_every_key(admin, bus, pki, tmp_path):
    import_anchor_and_intermediate(admin, pki, tmp_path)
    old_key, new_key, expired_key = rsa_key(), rsa_key(), rsa_key()
    old = pki.issue(old_key, address="henry@example.org")
    new = pki.issue(new_key, address="henry@example.org")
    expired = pki.issue(
        expired_key,
        address="henry@example.org",
        not_before=NOW - dt.timedelta(days=400),
        not_after=NOW - dt.timedelta(days=1),
    )
    for name, identity in (("old", old), ("new", new), ("expired", expired)):
        admin("identity import", file=write_pkcs12(tmp_path / f"{name}.p12", identity, None))
    signing = hook(bus, "sealrelay_signing_identity", address="henry@example.org")
    assert signing.certificate.der == new.cert.public_bytes(serialization.Encoding.DER)
    answers = hook(bus, "sealrelay_decryption_identities", address="henry@example.org")
    keys = {i.certificate.fingerprint for answer in answers for i in answer}
    assert keys == {
        Certificate(der=i.cert.public_bytes(serialization.Encoding.DER)).fingerprint
        for i in (old, new, expired)
    }
    assert hook(bus, "sealrelay_signing_identity", address="nobody@example.org") is None


def test_harvest_stores_once_and_updates_capabilities(admin, bus, pki, tmp_path):
    import_anchor_and_intermediate(admin, pki, tmp_path)
    signer = Certificate(der=der(pki.p256), capabilities=("aes256-gcm", "aes128-cbc"))
    chain = [Certificate(der=pki.intermediate.public_bytes(serialization.Encoding.DER))]
    first = hook(
        bus,
        "sealrelay_harvest_certificate",
        address="carol@example.org",
        certificate=signer,
        chain=chain,
    )
    again = hook(
        bus,
        "sealrelay_harvest_certificate",
        address="carol@example.org",
        certificate=signer,
        chain=chain,
    )
    assert first == again == [signer.fingerprint]
    [stored] = certificates_for(bus, "carol@example.org")
    assert stored.source == "harvested"
    assert stored.trusted
    assert stored.capabilities == ("aes256-gcm", "aes128-cbc")
    newer = Certificate(der=der(pki.p256), capabilities=("aes128-gcm",))
    hook(
        bus,
        "sealrelay_harvest_certificate",
        address="carol@example.org",
        certificate=newer,
        chain=chain,
    )
    assert [c.capabilities for c in certificates_for(bus, "carol@example.org")] == [("aes128-gcm",)]
    listed = admin("cert list", address="carol@example.org").data
    assert [row["source"] for row in listed] == ["harvested"]


def test_harvest_keeps_an_unknown_issuer_so_the_chain_can_be_trusted(admin, bus, pki, tmp_path):
    (tmp_path / "root.pem").write_bytes(pem(pki.root))
    admin("cert import", files=[tmp_path / "root.pem"], trust_anchor=True)
    signer = Certificate(der=der(pki.p384))
    chain = [Certificate(der=pki.intermediate.public_bytes(serialization.Encoding.DER))]
    hook(
        bus,
        "sealrelay_harvest_certificate",
        address="dave@example.org",
        certificate=signer,
        chain=chain,
    )
    assert [c.trusted for c in certificates_for(bus, "dave@example.org")] == [True]


def test_cert_list_shows_status(admin, pki, tmp_path):
    import_anchor_and_intermediate(admin, pki, tmp_path)
    (tmp_path / "leaves.pem").write_bytes(
        pem(pki.rsa2048.cert, pki.expired.cert, pki.revoked.cert, pki.untrusted.cert)
    )
    admin("cert import", files=[tmp_path / "leaves.pem"])
    (tmp_path / "i.crl").write_bytes(pki.crl.public_bytes(serialization.Encoding.DER))
    admin("crl import", files=[tmp_path / "i.crl"])
    rows = {tuple(row["addresses"]) or (row["subject"],): row for row in admin("cert list").data}
    assert rows[("alice@example.org",)]["status"] == "valid"
    assert rows[("frank@example.org",)]["status"] == "expired"
    assert rows[("grace@example.org",)]["status"] == "revoked"
    assert rows[("ivan@example.org",)]["status"] == "untrusted"
    anchor = next(row for row in rows.values() if row["trust_anchor"])
    assert anchor["status"] == "trust-anchor"
    assert (
        admin("cert list", address="ALICE@example.org").data[0]["fingerprint"]
        == Certificate(der=der(pki.rsa2048)).fingerprint
    )
