from __future__ import annotations

import pytest

from sealrelay.core.address import Address, AddressError


def test_domain_is_case_insensitive_local_part_is_kept():
    a = Address.parse("Bob@Example.ORG")
    assert str(a) == "Bob@example.org"
    assert a == Address.parse("<Bob@example.org>")
    assert a != Address.parse("bob@example.org")
    assert a.lookup_key == Address.parse("bob@EXAMPLE.org").lookup_key


def test_idn_domain_matches_its_punycode_form():
    unicode_form = Address.parse("anna@bücher.example")
    ascii_form = Address.parse("anna@xn--bcher-kva.example")
    assert unicode_form == ascii_form
    assert ascii_form.domain == "bücher.example"
    assert unicode_form.ascii_domain == "xn--bcher-kva.example"


def test_smtputf8_local_part():
    address = Address.parse("jörg@example.org")
    assert address.needs_smtputf8
    assert not Address.parse("joerg@example.org").needs_smtputf8


def test_trailing_dot_of_the_domain_is_ignored():
    assert Address.parse("a@example.org.") == Address.parse("a@example.org")


@pytest.mark.parametrize(
    "text", ["", "bob", "@example.org", "bob@", "bob@exa mple.org", "bob@a..b", "b\x00b@x.org"]
)
def test_garbage_is_refused(text):
    with pytest.raises(AddressError):
        Address.parse(text)


def test_quoted_local_part_with_at_sign_splits_at_the_last_at():
    assert Address.parse('"a@b"@example.org').domain == "example.org"
