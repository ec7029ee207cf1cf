"""Broken certificates a signed message carries are left out, never an error of their own."""

from __future__ import annotations

import pytest
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives.serialization import Encoding

from sealrelay.smime.sign import Signer, signed_data
from sealrelay.smime.verify import verify_signed_data
from tests.pki import TestPKI
from tests.smime.test_verify import _streamed


BODY = b"Content-Type: text/plain\r\n\r\nhello\r\n"


def duplicated_extension(pki: TestPKI) -> bytes:
    intermediate = asn1_x509.Certificate.load(pki.intermediate.public_bytes(Encoding.DER))
    extensions = intermediate["tbs_certificate"]["extensions"]
    intermediate["tbs_certificate"]["extensions"] = asn1_x509.Extensions(
        [*extensions, extensions[0]]
    )
    return bytes(intermediate.dump(force=True))


def version_5(pki: TestPKI) -> bytes:
    der = pki.intermediate.public_bytes(Encoding.DER)
    version = b"\xa0\x03\x02\x01\x02"  # [0] EXPLICIT INTEGER 2: v3
    assert der.count(version) == 1
    return der.replace(version, b"\xa0\x03\x02\x01\x04")


@pytest.mark.parametrize("broken", [duplicated_extension, version_5])
def test_a_carried_certificate_that_cryptography_refuses_is_left_out(pki, broken):
    signer = Signer(pki.rsa2048.key, pki.rsa2048.cert, pki.rsa2048.chain)
    ber = _streamed(signed_data(BODY, signer, detached=True), extra_certificate=broken(pki))
    result = verify_signed_data(ber, BODY, trust_anchors=pki.trust_anchors(), expected_address=None)
    assert (result.status, len(result.certificates)) == ("valid", 2)
