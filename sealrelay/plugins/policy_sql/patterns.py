"""Policy rules: the patterns they match and the order in which a match wins.

docs/policies.md is the operator's description of this order; keep the two in step (the
tests check the examples there against this module through the store).

A pattern is one of (most specific first):

=====================  ======  =================================================
form                   rank    matches
=====================  ======  =================================================
``alice@example.org``  5       that address (local part and domain case-folded)
``@group``             4       a subscriber in the group
``*@example.org``      3       any address in exactly that domain
``*@*.example.org``    2       any address in a subdomain (not the domain itself);
                               more labels after ``*.`` is more specific
``*``                  1       anything, including the null sender of bounces
=====================  ======  =================================================

Of the rules matching a pair, the winner has the most specific recipient pattern; then the
most specific sender pattern; then the highest priority; then the lowest rule id (the oldest).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs

from sealrelay.core.address import Address, AddressError
from sealrelay.core.policy import Policy
from sealrelay.plugins.policy_sql.errors import PatternError


ADDRESS: Final = "address"
GROUP: Final = "group"
DOMAIN: Final = "domain"
SUBDOMAINS: Final = "subdomains"
ANY: Final = "any"
_RANKS: Final = {ADDRESS: 5, GROUP: 4, DOMAIN: 3, SUBDOMAINS: 2, ANY: 1}
_GROUP_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_-]*")
#: The policy fields a rule may set; the rest come from [policy.default].
POLICY_FIELDS: Final = (
    "sign",
    "digest",
    "encrypt",
    "cipher",
    "missing_certificate",
    "encrypt_to_sender",
)


def normalise_group(name: str) -> str:
    """A group name in its stored form; PatternError when it is not a valid name."""
    group = name.strip().lower()
    if not _GROUP_NAME.fullmatch(group):
        hint = f"; for a domain write *@{group}" if "." in group else ""
        raise PatternError(f"{name!r} is not a group name: use letters, digits, '-' and '_'{hint}")
    return group


def _domain(text: str, pattern: str) -> str:
    try:
        return Address.parse(f"x@{text}").domain
    except AddressError as error:
        raise PatternError(f"pattern {pattern!r}: {error}") from None


@attrs.frozen
class Pattern:
    """One side of a rule, normalised: ``kind`` and ``value`` (address key, group, domain)."""

    kind: str
    value: str = ""

    @classmethod
    def parse(cls, text: str) -> Pattern:
        """Parse an operator's pattern; PatternError saying the allowed forms if it is none."""
        pattern = text.strip()
        if pattern == "*":
            return cls(ANY)
        if pattern.startswith("*@*."):
            return cls(SUBDOMAINS, _domain(pattern[4:], text))
        if pattern.startswith("*@"):
            return cls(DOMAIN, _domain(pattern[2:], text))
        if pattern.startswith("@"):
            return cls(GROUP, normalise_group(pattern[1:]))
        if "*" not in pattern:
            try:
                return cls(ADDRESS, Address.parse(pattern).lookup_key)
            except AddressError:
                pass
        raise PatternError(
            f"{text!r} is not a pattern: use an address (alice@example.org), *@domain, "
            "*@*.domain (its subdomains), @group, or *"
        )

    def __str__(self) -> str:
        return {
            ADDRESS: self.value,
            GROUP: f"@{self.value}",
            DOMAIN: f"*@{self.value}",
            SUBDOMAINS: f"*@*.{self.value}",
            ANY: "*",
        }[self.kind]

    @property
    def specificity(self) -> tuple[int, int]:
        """Larger is more specific: the rank, then (for subdomains) the labels named."""
        labels = self.value.count(".") + 1 if self.kind == SUBDOMAINS else 0
        return _RANKS[self.kind], labels


@attrs.frozen
class Party:
    """A sender or recipient as the patterns see it: "" for the null sender."""

    key: str
    domain: str
    groups: frozenset[str] = frozenset()

    @classmethod
    def of(cls, address: str, groups: Iterable[str] = ()) -> Party:
        if not address:
            return cls("", "")
        parsed = Address.parse(address)
        return cls(parsed.lookup_key, parsed.domain, frozenset(groups))

    def matches(self, pattern: Pattern) -> bool:
        if pattern.kind == ANY:
            return True
        if not self.key:
            return False
        if pattern.kind == ADDRESS:
            return pattern.value == self.key
        if pattern.kind == GROUP:
            return pattern.value in self.groups
        if pattern.kind == DOMAIN:
            return pattern.value == self.domain
        return self.domain.endswith("." + pattern.value)

    def candidate_keys(self) -> list[tuple[str, str]]:
        """Every (kind, value) a pattern matching this party can have: for index lookups."""
        keys = [(ANY, "")]
        if self.key:
            keys.append((ADDRESS, self.key))
            keys.extend((GROUP, group) for group in self.groups)
            keys.append((DOMAIN, self.domain))
            labels = self.domain.split(".")
            keys.extend((SUBDOMAINS, ".".join(labels[i:])) for i in range(1, len(labels)))
        return keys


@attrs.frozen
class Rule:
    """A stored policy rule."""

    id: int
    sender: Pattern
    recipient: Pattern
    priority: int = 0
    #: Only the policy fields the rule sets, as (name, value) pairs.
    settings: tuple[tuple[str, Any], ...] = ()
    comment: str = ""

    def sort_key(self) -> tuple[int, int, int, int, int, int]:
        """Ascending order is winning order (see the module docstring)."""
        recipient, sender = self.recipient.specificity, self.sender.specificity
        return (
            -recipient[0],
            -recipient[1],
            -sender[0],
            -sender[1],
            -self.priority,
            self.id,
        )

    def describe(self) -> str:
        text = f"rule {self.id}: {self.sender} -> {self.recipient} (priority {self.priority})"
        return f"{text}: {self.comment}" if self.comment else text

    def policy(self, default: Policy) -> Policy:
        """The rule's policy: its own settings over ``[policy.default]``."""
        return attrs.evolve(default, **dict(self.settings), origin=self.describe())

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "from": str(self.sender),
            "to": str(self.recipient),
            "priority": self.priority,
            "comment": self.comment,
            **dict(self.settings),
        }


class RuleSet:
    """Rules indexed by recipient pattern, so a lookup only looks at rules that can match."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self._by_recipient: dict[tuple[str, str], list[Rule]] = {}
        for rule in rules:
            key = (rule.recipient.kind, rule.recipient.value)
            self._by_recipient.setdefault(key, []).append(rule)

    def matching(self, sender: Party, recipient: Party) -> list[Rule]:
        """Every rule matching the pair, the winner first."""
        found = [
            rule
            for key in recipient.candidate_keys()
            for rule in self._by_recipient.get(key, ())
            if sender.matches(rule.sender)
        ]
        return sorted(found, key=Rule.sort_key)


def rule_settings(values: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The policy fields set in *values* (None means not set), checked against Policy."""
    settings = tuple((name, values[name]) for name in POLICY_FIELDS if values.get(name) is not None)
    try:
        Policy(**dict(settings))
    except (TypeError, ValueError) as error:
        raise PatternError(str(error)) from None
    return settings
