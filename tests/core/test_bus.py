"""The bus's pipelines, driven with small plugins written against the public hook API.

The crypto here is a stand-in plugin that marks what it did in the message (the bus never
looks inside); the real S/MIME plugin has its own tests. What is checked is where a message
goes: grouping, Bcc copies, stage switches, fail-closed rules, nested inbound layers.
"""

from __future__ import annotations

import base64
import datetime as dt

import attrs
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from sealrelay import (
    Certificate,
    Decryption,
    DeferMessage,
    Encryption,
    Policy,
    ProvisioningError,
    RejectMessage,
    SignatureCheck,
    SignatureVerdict,
    hookimpl,
)
from sealrelay.core.bus import MessageBus
from sealrelay.core.certificate import best_encryption_certificate
from sealrelay.core.envelope import Envelope
from sealrelay.core.plugins import load_plugins
from tests.memory_store import MemoryStore, certificate_of, identity_of
from tests.pki import build_test_pki


MESSAGE = (
    b"From: Alice <alice@example.org>\r\nTo: bob@example.net, carol@example.net\r\n"
    b"Cc: dave@example.net\r\nSubject: quarterly numbers\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\nThe numbers are up.\r\n"
)
SIGNED_MARK = b"X-Test-Signed-By: "
SECRET = b"The numbers are up."


cert_of = certificate_of


class MarkingCrypto:
    """Stand-in crypto: signing adds a header, encryption replaces the body by a token that
    names the certificates, so a test can see exactly who could read which copy."""

    def __init__(self):
        self.sign_calls: list[str] = []
        self.encrypt_calls: list[list[str]] = []

    @hookimpl
    def sealrelay_sign_message(self, message, identity, policy):
        self.sign_calls.append(policy.sign)
        return (
            SIGNED_MARK
            + identity.address.encode()
            + b" "
            + policy.sign.encode()
            + b"\r\n"
            + message
        )

    @hookimpl
    def sealrelay_encrypt_message(self, message, certificates, policy):
        readers = sorted(address for cert in certificates for address in cert.addresses)
        self.encrypt_calls.append(readers)
        body = b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\n"
        return Encryption(
            content=body + b"ENCRYPTED FOR " + ",".join(readers).encode(), cipher="aes256-cbc"
        )


class Rules:
    """A policy plugin with a fixed table recipient -> Policy."""

    def __init__(self, table: dict[str, Policy]):
        self.table = table

    @hookimpl
    def sealrelay_resolve_policy(self, sender, recipient, envelope):
        return self.table.get(recipient)


@pytest.fixture
def pki():
    return build_test_pki()


@pytest.fixture
def keys(pki):
    store = MemoryStore()
    alice = identity_of(pki.rsa2048)
    store.add_identity(alice)
    store.provision_with = alice
    store.provision_authority = Certificate(der=pki.root.public_bytes(Encoding.DER), trusted=True)
    return store


@pytest.fixture
def crypto():
    return MarkingCrypto()


@pytest.fixture
def bus_with(make_config, keys, crypto):
    def make(*plugins, config=None, with_crypto=True):
        config = config or make_config()
        # No built-ins: the bus alone, with the test's plugins and nothing else answering.
        loaded = load_plugins(config, builtins=())
        stores = [keys, crypto] if with_crypto else [keys]
        for number, plugin in enumerate([*stores, *plugins]):
            loaded.pm.register(plugin, name=f"test_plugin_{number}")
        return MessageBus(loaded, config)

    return make


def outbound(bus, *recipients, message=MESSAGE, sender="alice@example.org"):
    with bus:
        return bus.process_outbound(Envelope(sender=sender, recipients=recipients), message)


def test_recipients_with_equal_treatment_share_one_signed_copy(bus_with, crypto):
    result = outbound(bus_with(), "bob@example.net", "carol@example.net")
    assert len(result.messages) == 1
    copy = result.messages[0]
    assert copy.recipients == ("bob@example.net", "carol@example.net")
    assert (copy.signed, copy.sign_mode, copy.encrypted) == (True, "clear", False)
    assert copy.content.startswith(SIGNED_MARK + b"alice@example.org clear")
    assert crypto.sign_calls == ["clear"]


def test_recipients_split_by_policy_and_by_certificate(bus_with, keys, pki):
    keys.certificates["bob@example.net"] = [cert_of(pki.rsa3072, capabilities=("aes256-gcm",))]
    rules = Rules({"dave@example.net": Policy(sign="opaque", encrypt="never")})
    # rsa3072's certificate is for bob@example.org: give bob@example.net one that matches.
    keys.certificates["bob@example.org"] = keys.certificates.pop("bob@example.net")
    result = outbound(bus_with(rules), "bob@example.org", "carol@example.net", "dave@example.net")
    by_recipient = {m.recipients: m for m in result.messages}
    assert set(by_recipient) == {
        ("bob@example.org",),
        ("carol@example.net",),
        ("dave@example.net",),
    }
    assert by_recipient[("bob@example.org",)].encrypted
    assert by_recipient[("bob@example.org",)].content.endswith(b"ENCRYPTED FOR bob@example.org")
    assert SECRET not in by_recipient[("bob@example.org",)].content
    assert not by_recipient[("carol@example.net",)].encrypted
    assert by_recipient[("dave@example.net",)].sign_mode == "opaque"


def test_bcc_recipients_of_encrypted_mail_get_their_own_copy(bus_with, keys, pki, crypto):
    message = MESSAGE.replace(b"To: bob@example.net, carol@example.net", b"To: bob@example.org")
    keys.certificates["bob@example.org"] = [cert_of(pki.rsa3072)]
    keys.certificates["carol@example.org"] = [cert_of(pki.p256)]
    keys.certificates["dave@example.org"] = [cert_of(pki.p384)]
    result = outbound(
        bus_with(), "bob@example.org", "carol@example.org", "dave@example.org", message=message
    )
    # carol and dave are in neither To nor Cc: each Bcc copy names only its own reader.
    assert sorted(crypto.encrypt_calls) == [
        ["bob@example.org"],
        ["carol@example.org"],
        ["dave@example.org"],
    ]
    assert len(result.messages) == 3


def test_bcc_recipients_of_plain_mail_share_the_copy(bus_with):
    result = outbound(bus_with(), "bob@example.net", "hidden@example.net")
    assert [m.recipients for m in result.messages] == [("bob@example.net", "hidden@example.net")]


def test_encrypt_always_without_certificate_rejects_only_that_recipient(bus_with):
    rules = Rules({"bob@example.net": Policy(encrypt="always")})
    result = outbound(bus_with(rules), "bob@example.net", "carol@example.net")
    assert [m.recipients for m in result.messages] == [("carol@example.net",)]
    assert [(f.recipient, f.temporary) for f in result.rejected] == [("bob@example.net", False)]
    assert "no valid certificate is known for bob@example.net" in result.rejected[0].reason
    assert all(
        SECRET not in m.content or "bob@example.net" not in m.recipients for m in result.messages
    )


def test_encrypt_always_with_hold_defers(bus_with):
    rules = Rules({"bob@example.net": Policy(encrypt="always", missing_certificate="hold")})
    result = outbound(bus_with(rules), "bob@example.net")
    assert result.messages == ()
    assert [(f.recipient, f.temporary) for f in result.deferred] == [("bob@example.net", True)]


def test_encrypt_stage_off_never_sends_plaintext_to_encrypt_always(
    bus_with, make_config, keys, pki
):
    keys.certificates["bob@example.org"] = [cert_of(pki.rsa3072)]
    rules = Rules({"bob@example.org": Policy(encrypt="always")})
    config = make_config({"stages": {"encrypt": False}})
    result = outbound(bus_with(rules, config=config), "bob@example.org", "carol@example.net")
    assert [m.recipients for m in result.messages] == [("carol@example.net",)]
    assert "encrypt stage is off" in result.rejected[0].reason


def test_sign_stage_off_sends_unsigned(bus_with, make_config, crypto):
    result = outbound(bus_with(config=make_config({"stages": {"sign": False}})), "bob@example.net")
    assert result.messages[0].content == MESSAGE
    assert not result.messages[0].signed
    assert crypto.sign_calls == []


SIGNED_DATA_OID = bytes.fromhex("06092a864886f70d010702")
ENVELOPED_DATA_OID = bytes.fromhex("06092a864886f70d010703")


def cms_like(oid: bytes) -> bytes:
    """Base64 of what a CMS ContentInfo of that type starts with (the bus looks no further)."""
    return base64.encodebytes(b"\x30\x80" + oid + b"\xa0\x80" + b"\x00" * 40).replace(
        b"\n", b"\r\n"
    )


PRESIGNED = MESSAGE.replace(
    b"Content-Type: text/plain; charset=utf-8\r\n\r\nThe numbers are up.\r\n",
    b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; boundary=x\r\n'
    b"\r\n--x\r\nContent-Type: text/plain\r\n\r\nThe numbers are up.\r\n"
    b"--x\r\nContent-Type: application/pkcs7-signature\r\nContent-Transfer-Encoding: base64\r\n"
    b"\r\n" + cms_like(SIGNED_DATA_OID) + b"--x--\r\n",
)
PREENCRYPTED = MESSAGE.replace(
    b"Content-Type: text/plain; charset=utf-8\r\n\r\nThe numbers are up.\r\n",
    b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\n" + cms_like(ENVELOPED_DATA_OID),
)


def test_signed_message_is_not_signed_again_but_still_encrypted(bus_with, keys, pki, crypto):
    keys.certificates["bob@example.org"] = [cert_of(pki.rsa3072)]
    result = outbound(bus_with(), "bob@example.org", message=PRESIGNED)
    assert crypto.sign_calls == []
    assert result.messages[0].encrypted
    assert result.messages[0].signed


def test_encrypted_message_passes_untouched(bus_with, crypto):
    rules = Rules({"bob@example.net": Policy(encrypt="always")})
    result = outbound(bus_with(rules), "bob@example.net", message=PREENCRYPTED)
    assert result.messages[0].content == PREENCRYPTED
    assert (crypto.sign_calls, crypto.encrypt_calls) == ([], [])


@pytest.mark.parametrize(
    "label",
    [
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m",
        b'Content-Type: application/x-pkcs7-mime; name="smime.p7m"',
        # Genuine-looking, but a second Content-Type lets readers see something else.
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n"
        b"Content-Type: text/plain",
    ],
)
def test_a_label_alone_does_not_pass_for_encryption(bus_with, keys, pki, crypto, label):
    """Plaintext labelled as encrypted is encrypted all the same: policy cannot be sidestepped."""
    keys.certificates["bob@example.org"] = [cert_of(pki.rsa3072)]
    body = cms_like(ENVELOPED_DATA_OID) if b"text/plain" in label else b"The numbers are up.\r\n"
    message = MESSAGE.split(b"Content-Type:")[0] + label + b"\r\n\r\n" + body
    result = outbound(
        bus_with(Rules({"bob@example.org": Policy(encrypt="always")})),
        "bob@example.org",
        message=message,
    )
    [copy] = result.messages
    assert crypto.encrypt_calls == [["bob@example.org"]]
    assert copy.content.endswith(b"ENCRYPTED FOR bob@example.org")


def test_a_label_alone_does_not_pass_for_a_signature(bus_with, crypto):
    unsigned = PRESIGNED.replace(cms_like(SIGNED_DATA_OID), b"bm90IGEgc2lnbmF0dXJl\r\n")
    [copy] = outbound(bus_with(), "bob@example.net", message=unsigned).messages
    assert crypto.sign_calls == ["clear"]
    assert copy.content.startswith(SIGNED_MARK)


def test_forged_security_headers_are_removed_outbound(bus_with, make_config):
    forged = b"X-Sealrelay-Signature: valid; signer=ceo@example.org\r\n" + MESSAGE
    result = outbound(
        bus_with(config=make_config({"stages": {"sign": False}})), "bob@example.net", message=forged
    )
    assert result.messages[0].content == MESSAGE


def test_no_signer_plugin_defers_and_names_the_hook(bus_with):
    result = outbound(bus_with(with_crypto=False), "bob@example.net")
    assert result.messages == ()
    assert "no plugin signed the message" in result.deferred[0].reason


def test_plugin_crash_defers_naming_the_plugin(bus_with):
    class Broken:
        @hookimpl(tryfirst=True)
        def sealrelay_sign_message(self, message):
            raise OSError("HSM unreachable")

    bus = bus_with()
    bus.plugins.pm.register(Broken(), name="hsm")
    result = outbound(bus, "bob@example.net")
    assert [(f.plugin, f.temporary) for f in result.deferred] == [("hsm", True)]
    assert (
        "plugin hsm failed in sealrelay_sign_message: OSError: HSM unreachable"
        in result.deferred[0].reason
    )


def test_reject_raised_by_a_plugin_rejects(bus_with):
    class Refuser:
        @hookimpl
        def sealrelay_resolve_policy(self, recipient):
            if recipient == "bob@example.net":
                raise RejectMessage("bob left the company")

    result = outbound(bus_with(Refuser()), "bob@example.net", "carol@example.net")
    assert [(f.recipient, f.temporary, f.reason) for f in result.rejected] == [
        ("bob@example.net", False, "bob left the company")
    ]
    assert [m.recipients for m in result.messages] == [("carol@example.net",)]


def test_no_encryptor_defers_instead_of_sending_plaintext(bus_with, keys, pki):
    keys.certificates["bob@example.org"] = [cert_of(pki.rsa3072)]

    class SignOnly:
        @hookimpl
        def sealrelay_sign_message(self, message):
            return message

    result = outbound(bus_with(SignOnly(), with_crypto=False), "bob@example.org")
    assert result.messages == ()
    assert "no plugin encrypted the message" in result.deferred[0].reason


#: Provisioning on send is off unless the operator switches it on.
PROVISION_ON_SEND = {"keypool": {"provision_on_send": True}}


def test_subscriber_without_key_is_provisioned(bus_with, make_config, keys, crypto):
    keys.subscribers.add("new@example.org")
    bus = bus_with(config=make_config(PROVISION_ON_SEND))
    result = outbound(bus, "bob@example.net", sender="new@example.org")
    assert keys.provisioned == ["new@example.org"]
    assert result.messages[0].content.startswith(SIGNED_MARK + b"new@example.org")
    # Kept: the next message finds the key, nothing is provisioned again.
    outbound(bus, "bob@example.net", sender="new@example.org")
    assert keys.provisioned == ["new@example.org"]


def test_subscriber_without_key_is_deferred_when_provisioning_on_send_is_off(bus_with, keys):
    keys.subscribers.add("new@example.org")
    result = outbound(bus_with(), "bob@example.net", sender="new@example.org")
    assert keys.provisioned == []
    assert result.messages == ()
    [deferred] = result.deferred
    assert deferred.temporary
    assert "no signing key is known for new@example.org" in deferred.reason
    assert "subscriber add --provision" in deferred.reason


def test_unknown_sender_without_key_is_deferred_with_advice(bus_with, make_config, keys):
    bus = bus_with(config=make_config(PROVISION_ON_SEND))
    result = outbound(bus, "bob@example.net", sender="stranger@example.org")
    assert keys.provisioned == []
    assert "sealrelay identity import" in result.deferred[0].reason


def test_provision_stage_off(bus_with, make_config, keys):
    keys.subscribers.add("new@example.org")
    config = make_config({**PROVISION_ON_SEND, "stages": {"provision": False}})
    result = outbound(bus_with(config=config), "bob@example.net", sender="new@example.org")
    assert keys.provisioned == []
    assert result.messages == ()
    assert "the provision stage is off" in result.deferred[0].reason
    with bus_with(config=config) as bus, pytest.raises(ProvisioningError, match="stage is off"):
        bus.provision("new@example.org")
    assert keys.provisioned == []


def test_provisioning_failure_on_send_defers_naming_the_step(bus_with, make_config, keys):
    keys.subscribers.add("new@example.org")
    keys.provision_authority = None  # a key pair, but no CA to certify it
    bus = bus_with(config=make_config(PROVISION_ON_SEND))
    result = outbound(bus, "bob@example.net", sender="new@example.org")
    assert keys.provisioned == []
    assert result.messages == ()
    [deferred] = result.deferred
    assert deferred.temporary
    assert "provisioning one failed" in deferred.reason
    assert "sealrelay_issue_certificate" in deferred.reason


def test_provision_runs_without_sending(bus_with, keys, pki):
    # `subscriber add --provision` provisions with provision_on_send off: it is the send path
    # that the switch governs, not MessageBus.provision.
    with bus_with() as bus:
        identity = bus.provision("new@example.org")
    assert keys.provisioned == ["new@example.org"]
    assert identity.address == "new@example.org"
    assert identity.private_key is keys.provision_with.private_key
    assert identity.chain == keys.provision_with.chain
    assert keys.anchors == [keys.provision_authority]
    assert keys.sealrelay_signing_identity(address="new@example.org") == identity


def test_encrypt_to_sender_adds_the_senders_certificate(bus_with, keys, pki, crypto):
    keys.certificates["bob@example.org"] = [cert_of(pki.rsa3072)]
    rules = Rules({"bob@example.org": Policy(encrypt_to_sender=True)})
    outbound(bus_with(rules), "bob@example.org")
    assert crypto.encrypt_calls == [["alice@example.org", "bob@example.org"]]


def test_best_certificate_is_trusted_valid_unrevoked_and_expires_last(pki):
    now = dt.datetime.now(dt.UTC)
    good = cert_of(pki.rsa3072)
    candidates = [
        Certificate(der=good.der, trusted=False),
        Certificate(der=good.der, trusted=True, revoked=True),
        cert_of(pki.rsa2048),  # alice's: another address
    ]
    assert best_encryption_certificate(candidates, "bob@example.org", now) is None
    assert best_encryption_certificate([*candidates, good], "Bob@EXAMPLE.org", now) == good
    assert (
        best_encryption_certificate([good], "bob@example.org", now + dt.timedelta(days=3650))
        is None
    )
    ed = cert_of(pki.ed25519)  # signing only: Ed25519 cannot encrypt
    assert best_encryption_certificate([ed], pki.ed25519.address, now) is None


def test_report_reaches_every_listener_even_when_one_fails(bus_with):
    reports = []

    class Listener:
        @hookimpl
        def sealrelay_message_processed(self, report):
            reports.append(report)

    class Failing:
        @hookimpl(tryfirst=True)
        def sealrelay_message_processed(self, report):
            raise RuntimeError("metrics server down")

    result = outbound(bus_with(Listener(), Failing()), "bob@example.net")
    assert [r.outbound for r in reports] == [result]
    assert reports[0].direction == "outbound"


def test_explain_lists_every_answer_in_call_order(bus_with):
    class Late:
        @hookimpl(trylast=True)
        def sealrelay_resolve_policy(self):
            return Policy(sign="none", origin="late")

    class Early:
        @hookimpl(tryfirst=True)
        def sealrelay_resolve_policy(self, recipient):
            return Policy(encrypt="always", origin="early") if recipient.startswith("vip") else None

    bus = bus_with(Late(), Early())
    vip = bus.explain_policy("alice@example.org", "vip@example.net")
    assert (vip.winner, vip.policy.origin) == ("test_plugin_3", "early")
    assert [a.plugin for a in vip.answers] == ["test_plugin_3", "test_plugin_2"]
    other = bus.explain_policy("alice@example.org", "bob@example.net")
    assert (other.winner, other.policy.sign) == ("test_plugin_2", "none")


# -- inbound ----------------------------------------------------------------------------------

ENVELOPED = (
    b"From: Bob <bob@example.org>\r\nTo: alice@example.org\r\nSubject: re: numbers\r\n"
    b"X-Sealrelay-Signature: valid; signer=forged@example.org\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n"
    b"\r\nCIPHER\r\n"
)
INNER_SIGNED = (
    b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; boundary=b\r\n\r\n'
    b"--b\r\nContent-Type: text/plain\r\n\r\nsecret reply\r\n--b--\r\n"
)
OPAQUE_SIGNED = b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n\r\nSIGNED\r\n"


class Inbound:
    """Stand-in decryptor and verifier working on the tokens above."""

    def __init__(self, pki, verdict="valid"):
        self.signer = cert_of(pki.rsa3072, source="message")
        self.verdict = verdict
        self.harvested: list[tuple[str, str]] = []
        self.seen_identities = []

    @hookimpl
    def sealrelay_decryption_identities(self, address):
        return [address]

    @hookimpl
    def sealrelay_decrypt_message(self, message, identities):
        self.seen_identities = identities
        if b"CIPHER" not in message:
            return None
        return Decryption(content=INNER_SIGNED, cipher="aes128-gcm")

    @hookimpl
    def sealrelay_verify_signature(self, message, sender, trust_anchors):
        verdict = SignatureVerdict(
            status=self.verdict,
            signer=sender,
            reason=None if self.verdict == "valid" else "untrusted",
            crypto="ok",
            chain="ok" if self.verdict == "valid" else "untrusted",
            address="ok",
        )
        if b"OUTER" in message:
            inner = ENVELOPED.split(b"MIME-Version: 1.0\r\n")[1]
        elif b"SIGNED" in message:
            inner = b"Content-Type: text/plain\r\n\r\nopaque content\r\n"
        else:
            inner = b"Content-Type: text/plain\r\n\r\nsecret reply\r\n"
        return SignatureCheck(
            verdict=verdict,
            content=inner,
            signer_certificate=self.signer,
            certificates=(self.signer,),
        )

    @hookimpl
    def sealrelay_harvest_certificate(self, address, certificate):
        self.harvested.append((address, certificate.fingerprint))
        return certificate.fingerprint


def inbound(bus, message, recipient="alice@example.org"):
    with bus:
        return bus.process_inbound(
            Envelope(sender="bob@example.org", recipients=(recipient,), direction="inbound"),
            message,
            recipient,
        )


def test_encrypted_then_signed_is_decrypted_verified_and_harvested(bus_with, pki):
    plugin = Inbound(pki)
    result = inbound(bus_with(plugin, with_crypto=False), ENVELOPED)
    assert result.decrypted
    assert result.signature.status == "valid"
    assert "alice@example.org" in plugin.seen_identities
    assert plugin.harvested == [("bob@example.org", plugin.signer.fingerprint)]
    assert result.harvested == (plugin.signer.fingerprint,)
    # The clear-signed inner message is delivered as signed, with the outer headers and ours.
    assert result.content.startswith(
        b"X-Sealrelay-Signature: valid; signer=bob@example.org\r\n"
        b"X-Sealrelay-Decryption: decrypted; cipher=aes128-gcm\r\n"
        b"From: Bob <bob@example.org>\r\nTo: alice@example.org\r\nSubject: re: numbers\r\n"
    )
    assert b"forged@example.org" not in result.content
    assert result.content.endswith(INNER_SIGNED)


def test_signed_encrypted_signed_layers_are_all_opened(bus_with, pki):
    plugin = Inbound(pki)
    message = b"From: bob@example.org\r\nSubject: triple\r\n" + INNER_SIGNED.replace(
        b"secret reply", b"OUTER"
    )
    result = inbound(bus_with(plugin, with_crypto=False), message)
    assert result.decrypted
    assert len(plugin.harvested) == 2
    assert result.content.endswith(INNER_SIGNED)


def test_opaque_signature_is_unwrapped(bus_with, pki):
    message = b"From: bob@example.org\r\nSubject: s\r\n" + OPAQUE_SIGNED
    result = inbound(bus_with(Inbound(pki), with_crypto=False), message)
    assert result.content.endswith(b"Content-Type: text/plain\r\n\r\nopaque content\r\n")


def test_invalid_signature_is_marked_and_not_harvested(bus_with, pki):
    plugin = Inbound(pki, verdict="invalid")
    result = inbound(bus_with(plugin, with_crypto=False), ENVELOPED)
    assert (result.signature.status, result.signature.reason) == ("invalid", "untrusted")
    assert plugin.harvested == []
    assert result.content.startswith(
        b"X-Sealrelay-Signature: invalid; reason=untrusted; signer=bob@example.org\r\n"
    )


def test_undecryptable_mail_is_delivered_marked_never_dropped(bus_with, pki):
    class NoKey:
        @hookimpl(tryfirst=True)
        def sealrelay_decrypt_message(self):
            raise DeferMessage("no-key")

    result = inbound(bus_with(Inbound(pki), NoKey(), with_crypto=False), ENVELOPED)
    assert not result.decrypted
    assert result.decryption_error == "no-key"
    assert result.content.endswith(b"CIPHER\r\n")
    assert b"X-Sealrelay-Decryption: failed; reason=no-key\r\n" in result.content


def test_decrypt_stage_off_leaves_the_message_encrypted(bus_with, make_config, pki):
    config = make_config({"stages": {"decrypt": False}})
    result = inbound(bus_with(Inbound(pki), config=config, with_crypto=False), ENVELOPED)
    assert result.decryption_error == "decrypt-stage-off"
    assert result.content.endswith(b"CIPHER\r\n")


def test_harvest_stage_off(bus_with, make_config, pki):
    plugin = Inbound(pki)
    config = make_config({"stages": {"harvest": False}})
    result = inbound(bus_with(plugin, config=config, with_crypto=False), ENVELOPED)
    assert result.signature.status == "valid"
    assert plugin.harvested == []


def test_plain_inbound_mail_is_marked_unsigned(bus_with):
    result = inbound(bus_with(with_crypto=False), MESSAGE)
    assert result.signature.status == "none"
    assert result.content == (
        b"X-Sealrelay-Signature: none\r\nX-Sealrelay-Decryption: none\r\n" + MESSAGE
    )


def test_layers_are_bounded(bus_with, pki):
    class Onion(Inbound):
        @hookimpl
        def sealrelay_decrypt_message(self, message, identities):
            return Decryption(content=ENVELOPED, cipher="aes128-cbc")

    result = inbound(bus_with(Onion(pki), with_crypto=False), ENVELOPED)
    assert result.decrypted


def test_explain_collects_matched_rules_from_every_source(bus_with):
    class Store:
        @hookimpl
        def sealrelay_explain_policy(self, recipient):
            return [f"rule 2: * -> {recipient}", "rule 9: * -> *"]

    class Silent:
        @hookimpl
        def sealrelay_explain_policy(self):
            return None

    explained = bus_with(Store(), Silent()).explain_policy("a@example.org", "b@example.org")
    assert explained.rules == (
        ("test_plugin_2", "rule 2: * -> b@example.org"),
        ("test_plugin_2", "rule 9: * -> *"),
    )
    assert explained.to_dict()["rules"][0] == {
        "plugin": "test_plugin_2",
        "rule": "rule 2: * -> b@example.org",
    }


def test_markers_forged_inside_a_layer_are_removed(bus_with, pki):
    class Forging(Inbound):
        @hookimpl
        def sealrelay_decrypt_message(self, message, identities):
            return Decryption(
                content=b"X-Sealrelay-Signature: valid; signer=ceo@example.org\r\n"
                b"Content-Type: text/plain\r\n\r\npay\r\n",
                cipher="aes128-gcm",
            )

    result = inbound(bus_with(Forging(pki), with_crypto=False), ENVELOPED)
    assert b"ceo@example.org" not in result.content
    assert result.content.count(b"X-Sealrelay-Signature:") == 1


def test_signature_does_not_vouch_for_a_from_inside_it(bus_with, pki):
    """An opaque signature checked against the outer From must not lend its verdict to
    another From that the unwrapped content would show."""

    class InnerFrom(Inbound):
        @hookimpl
        def sealrelay_verify_signature(self, message, sender, trust_anchors):
            check = super().sealrelay_verify_signature(message, sender, trust_anchors)
            return attrs.evolve(
                check, content=b"From: ceo@example.org\r\nContent-Type: text/plain\r\n\r\nx\r\n"
            )

    message = b"From: bob@example.org\r\nSubject: s\r\n" + OPAQUE_SIGNED
    result = inbound(bus_with(InnerFrom(pki), with_crypto=False), message)
    assert (result.signature.status, result.signature.reason) == ("invalid", "address-mismatch")
    assert result.content.startswith(b"X-Sealrelay-Signature: invalid; reason=address-mismatch")


def test_certificate_text_cannot_inject_headers(bus_with, pki):
    class Hostile(Inbound):
        @hookimpl
        def sealrelay_verify_signature(self, message, sender, trust_anchors):
            check = super().sealrelay_verify_signature(message, sender, trust_anchors)
            signer = "mallory@evil.example\r\nX-Sealrelay-Signature: valid; signer=ceo@bank.example"
            return attrs.evolve(check, verdict=attrs.evolve(check.verdict, signer=signer))

    message = b"From: bob@example.org\r\nSubject: s\r\n" + OPAQUE_SIGNED
    result = inbound(bus_with(Hostile(pki), with_crypto=False), message)
    first_line, rest = result.content.split(b"\r\n", 1)
    assert first_line.startswith(b'X-Sealrelay-Signature: valid; signer="mallory@evil.example??')
    assert b"X-Sealrelay-Signature" not in rest


def test_from_swapped_inside_an_encrypted_layer_voids_the_signature(bus_with, pki):
    """Mallory signs (validly, as herself) an encrypted blob whose content says From: ceo."""

    class Swap(Inbound):
        @hookimpl
        def sealrelay_verify_signature(self, message, sender, trust_anchors):
            check = super().sealrelay_verify_signature(message, sender, trust_anchors)
            inner = ENVELOPED.split(b"MIME-Version: 1.0\r\n")[1]
            return attrs.evolve(check, content=inner)

        @hookimpl
        def sealrelay_decrypt_message(self, message, identities):
            return Decryption(
                content=b"From: ceo@example.org\r\nContent-Type: text/plain\r\n\r\nwire it\r\n",
                cipher="aes128-cbc",
            )

    message = b"From: mallory@example.org\r\nSubject: s\r\n" + OPAQUE_SIGNED
    result = inbound(bus_with(Swap(pki), with_crypto=False), message)
    assert result.decrypted
    assert (result.signature.status, result.signature.reason) == ("invalid", "address-mismatch")


def test_a_layer_beyond_the_limit_is_not_called_verified(bus_with, pki):
    class Onion(Inbound):
        @hookimpl
        def sealrelay_decrypt_message(self, message, identities):
            return Decryption(content=ENVELOPED, cipher="aes128-cbc")

    result = inbound(bus_with(Onion(pki), with_crypto=False), ENVELOPED)
    assert (result.signature.status, result.signature.reason) == ("invalid", "too-many-layers")


def test_bcc_header_is_removed_from_every_copy(bus_with, keys, pki):
    keys.certificates["bob@example.org"] = [cert_of(pki.rsa3072)]
    message = MESSAGE.replace(b"Subject:", b"Bcc: hidden@example.net\r\nSubject:")
    result = outbound(bus_with(), "bob@example.org", "hidden@example.net", message=message)
    assert len(result.messages) == 2
    assert all(b"hidden@example.net" not in m.content for m in result.messages)
