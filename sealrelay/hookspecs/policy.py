"""Policy hooks: who is a subscriber, and what treatment each (sender, recipient) pair gets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sealrelay.hookspecs import hookspec


if TYPE_CHECKING:
    from sealrelay.core.envelope import Envelope
    from sealrelay.core.policy import Policy
    from sealrelay.core.subscriber import Subscriber


@hookspec(firstresult=True)
def sealrelay_resolve_policy(sender: str, recipient: str, envelope: Envelope) -> Policy | None:
    """Return the security policy for mail from *sender* to *recipient*.

    Called once per recipient of every outbound message, before any cryptography. First
    answer wins; when no plugin answers, ``[policy.default]`` of config.toml applies.

    :param sender: the envelope sender, normalised (``""`` for a bounce).
    :param recipient: one envelope recipient, normalised.
    :param envelope: the whole envelope (read only).
    :returns: a :class:`~sealrelay.Policy` (set ``origin`` to say which rule it came from),
        or ``None`` when this plugin has no rule for the pair.

    Failure semantics: an exception defers the message (SMTP 451) naming the plugin; a
    :class:`~sealrelay.RejectMessage` rejects it.
    """


@hookspec(firstresult=True)
def sealrelay_lookup_subscriber(address: str) -> Subscriber | None:
    """Return the registered subscriber with *address*, or ``None`` if it is not one.

    Called when the relay needs to know whether an address is served here: before
    provisioning a key for a sender, and by front ends to decide a message's direction.
    First answer wins.

    :param address: a normalised address.
    :returns: a :class:`~sealrelay.Subscriber`, or ``None`` when this plugin does not know it.

    Failure semantics: an exception defers the message naming the plugin.
    """


@hookspec
def sealrelay_explain_policy(sender: str, recipient: str, envelope: Envelope) -> list[str] | None:
    """Describe the rules this plugin matched for the pair, for ``sealrelay policy explain``.

    Called only by ``policy explain`` (never while processing mail), after the resolution
    itself. Collect-all: each policy source lists what it considered.

    :param sender: the normalised sender.
    :param recipient: the normalised recipient.
    :param envelope: an envelope holding just this pair.
    :returns: one line per matching rule, the one that wins first (e.g.
        ``"rule 7: *@example.org -> @partners (priority 0)"``), or ``None``/``[]`` when this
        plugin has no rule for the pair.

    Failure semantics: an exception makes ``policy explain`` fail with the plugin's name.
    """


@hookspec(firstresult=True)
def sealrelay_check_credentials(login: str, password: str) -> str | None:
    """Check a subscriber's login and password (SMTP AUTH PLAIN/LOGIN, the HTTP login).

    Called by a front end, in a worker thread, for every login attempt (SMTP only when
    ``[smtp] auth = true``). First answer wins.

    :param login: the login as the client gave it (usually the subscriber's address).
    :param password: the password as given; never log or store it.
    :returns: the authenticated subscriber's normalised address, or ``None`` when this plugin
        does not know the login or the password is wrong (the client is refused).

    Failure semantics: an exception refuses the login as a temporary failure (SMTP 454) and
    is logged with the plugin's name.
    """
