"""Policy resolution: the order written in docs/policies.md, checked on its own examples."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from sealrelay import CommandError, Policy, SealrelayError, Subscriber
from sealrelay.core.bus import MessageBus
from sealrelay.core.envelope import Envelope
from tests.cli import REPO


DOC = (REPO / "docs" / "policies.md").read_text(encoding="utf-8")


def doc_table(name: str) -> list[list[str]]:
    """The rows of the table between ``<!-- name -->`` and ``<!-- end name -->`` (cells
    without backquotes), header and separator left out."""
    block = re.search(rf"<!-- {name} -->\n(.*?)<!-- end {name} -->", DOC, re.DOTALL)
    assert block is not None, f"docs/policies.md has no {name} table"
    lines = [line for line in block.group(1).splitlines() if line.startswith("|")]
    return [[cell.strip().strip("`") for cell in line.strip("|").split("|")] for line in lines[2:]]


RULES = doc_table("rules")
EXAMPLES = doc_table("examples")


def add_documented_rules(admin) -> None:
    admin("subscriber add", address="alice@example.org", group=["legal", "staff", "sales"])
    admin("subscriber add", address="dave@partner.example", group=["partners"])
    for number, (rule_id, sender, recipient, priority, sets) in enumerate(RULES, start=1):
        assert int(rule_id) == number, "the documented rules must be numbered 1, 2, ..."
        settings = dict(item.split("=") for item in sets.split(", "))
        added = admin(
            "policy add", sender=sender, recipient=recipient, priority=int(priority), **settings
        )
        assert added.data["id"] == number


def test_the_documented_tables_are_there():
    assert len(RULES) >= 10
    assert len(EXAMPLES) >= 10


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda row: f"{row[0] or '<>'}->{row[1]}")
def test_documented_example(admin, bus, example):
    sender, recipient, winner, why = example
    add_documented_rules(admin)
    envelope = Envelope(sender=sender, recipients=(recipient,))
    policy = bus.resolve_policy(envelope.sender, envelope.recipients[0], envelope)
    assert policy.origin.startswith(f"rule {winner}: "), why
    explained = bus.explain_policy(sender, recipient)
    assert explained.winner == "policy_sql"
    lines = [line for plugin, line in explained.rules if plugin == "policy_sql"]
    assert lines[0].startswith(f"rule {winner}: ")
    assert "[wins" in lines[0]
    assert all("[loses" in line for line in lines[1:])


def test_explain_lists_every_matching_rule_in_winning_order(admin, bus):
    add_documented_rules(admin)
    explained = bus.explain_policy("alice@example.org", "x@other.example")
    numbers = [int(line.split(":")[0].removeprefix("rule ")) for _, line in explained.rules]
    # recipient domain rules first (senders: 2 groups at priority 5 by id, group at 0,
    # domain), then the recipient wildcard rules (address sender, wildcard sender).
    assert numbers == [11, 12, 10, 9, 8, 1]


def test_a_rule_sets_only_its_fields_the_rest_comes_from_the_default(make_config, plugins, admin):
    admin(
        "policy add",
        sender="*",
        recipient="*@partner.example",
        encrypt="always",
        cipher="aes128-gcm",
    )
    config = make_config({"policy": {"default": {"sign": "opaque", "digest": "sha384"}}})
    with MessageBus(plugins, config) as bus:
        envelope = Envelope(sender="a@example.org", recipients=("b@partner.example",))
        policy = bus.resolve_policy(envelope.sender, envelope.recipients[0], envelope)
    assert policy == Policy(sign="opaque", digest="sha384", encrypt="always", cipher="aes128-gcm")
    assert policy.origin == "rule 1: * -> *@partner.example (priority 0)"


def test_no_matching_rule_falls_back_to_the_default(admin, bus, config):
    admin("policy add", sender="*", recipient="*@partner.example", encrypt="always")
    envelope = Envelope(sender="a@example.org", recipients=("b@elsewhere.example",))
    policy = bus.resolve_policy(envelope.sender, envelope.recipients[0], envelope)
    assert policy is config.default_policy
    assert bus.explain_policy("a@example.org", "b@elsewhere.example").rules == ()


def test_changes_apply_at_once_in_the_process_that_made_them(admin, bus):
    envelope = Envelope(sender="a@example.org", recipients=("b@partner.example",))
    assert bus.resolve_policy("a@example.org", "b@partner.example", envelope).origin == (
        "[policy.default]"
    )
    rule = admin("policy add", sender="*", recipient="*@partner.example", sign="none").data
    assert bus.resolve_policy("a@example.org", "b@partner.example", envelope).sign == "none"
    admin("policy remove", id=rule["id"])
    assert bus.resolve_policy("a@example.org", "b@partner.example", envelope).sign == "clear"


def test_group_membership_counts_as_soon_as_the_subscriber_is_added(admin, bus):
    admin("policy add", sender="@legal", recipient="*", sign="opaque")
    envelope = Envelope(sender="erin@example.org", recipients=("x@example.net",))
    assert bus.resolve_policy(envelope.sender, "x@example.net", envelope).sign == "clear"
    admin("subscriber add", address="Erin@Example.org", group=["Legal"])
    assert bus.resolve_policy(envelope.sender, "x@example.net", envelope).sign == "opaque"


@pytest.mark.parametrize(
    "pattern",
    ["@example.org", "*@", "alice", "*@exa mple.org", "a*@example.org", "@Bad Group", ""],
)
def test_malformed_patterns_are_usage_errors_that_name_the_forms(admin, pattern):
    with pytest.raises(CommandError, match=r"pattern|group name|domain"):
        admin("policy add", sender=pattern, recipient="*")
    assert admin("policy list").data == []


def test_a_rule_with_an_invalid_policy_value_is_refused(admin):
    with pytest.raises(CommandError, match="not allowed"):
        admin("policy add", sender="*", recipient="*", sign="sometimes")


def test_lookup_subscriber_answers_for_registered_addresses_only(admin, bus):
    admin("subscriber add", address="Erin@Example.org", group=["legal", "ops"], display_name="Erin")
    found = bus.plugins.pm.hook.sealrelay_lookup_subscriber(address="erin@EXAMPLE.org")
    assert found == Subscriber(
        address="Erin@example.org", display_name="Erin", groups=("legal", "ops"), enabled=True
    )
    assert bus.plugins.pm.hook.sealrelay_lookup_subscriber(address="zed@example.org") is None
    with pytest.raises(SealrelayError, match="subscriber already"):
        admin("subscriber add", address="erin@example.org")


def test_lookups_from_many_threads_while_rules_change(admin, bus):
    """Hooks run in worker threads: each borrows its own connection, and the shared cache
    stays consistent while another thread changes the rules."""
    admin("subscriber add", address="alice@example.org", group=["legal"])
    admin("policy add", sender="@legal", recipient="*", sign="opaque")
    pairs = [(f"u{n}@example.org", f"r{n % 7}@partner.example") for n in range(50)]

    def work() -> set[str]:
        seen = set()
        for sender, recipient in pairs:
            envelope = Envelope(sender=sender, recipients=(recipient,))
            seen.add(bus.resolve_policy(sender, recipient, envelope).sign)
            hook = bus.plugins.pm.hook
            hook.sealrelay_recipient_certificates(address=recipient)
        envelope = Envelope(sender="alice@example.org", recipients=("x@example.net",))
        seen.add(bus.resolve_policy("alice@example.org", "x@example.net", envelope).sign)
        return seen

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(work) for _ in range(16)]
        for n in range(5):
            admin("policy add", sender="*", recipient=f"*@d{n}.example", sign="none")
        results = [future.result() for future in futures]
    assert all("opaque" in seen for seen in results)
    assert len(admin("policy list").data) == 6
