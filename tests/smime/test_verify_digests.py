"""The messageDigest is computed with hashlib under the names VERIFY_DIGESTS uses."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import hashes

from sealrelay.smime.algorithms import VERIFY_DIGESTS


@pytest.mark.parametrize("name", sorted(VERIFY_DIGESTS))
def test_hashlib_computes_every_verify_digest_as_cryptography_does(name):
    content = b"Content-Type: text/plain\r\n\r\nhello\r\n"
    hasher = hashes.Hash(VERIFY_DIGESTS[name]())
    hasher.update(content)
    assert hashlib.new(name, content).digest() == hasher.finalize()
