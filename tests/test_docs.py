"""The examples in docs/hooks.md and docs/writing-plugins.md cannot rot.

Every ```python block is executed as a module (its first line names its file, e.g.
``# partner_policy.py``), registered on a freshly loaded plugin manager and validated the
way ``load_plugins`` validates installed plugins. The policy examples are asked for a policy
through ``MessageBus.explain_policy``; the crypto, identity, command and front-end examples
are run together on real messages and real certificates; the test file the plugin guide
shows is run with pytest; the guide's copy of the example plugin is the shipped one.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import inspect
import re
import shutil
import subprocess
import sys
import threading
import time
import types
from collections.abc import Mapping
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
)
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sealrelay import Certificate, Envelope, Identity, MessageBus, hookimpl
from sealrelay.core.commands import CommandContext, CommandRegistry
from sealrelay.core.config import Config, parse_config
from sealrelay.core.plugins import LoadedPlugins, load_plugins
from sealrelay.hookspecs import HOOK_PREFIX, PROJECT_NAME
from sealrelay.plugins import BUILTIN_PLUGINS
from tests.hookspecs import (
    HOOKS_DOC,
    REPO,
    WRITING_PLUGINS_DOC,
    CodeBlock,
    hook_sections,
    python_blocks,
)


BLOCKS = python_blocks(HOOKS_DOC) + python_blocks(WRITING_PLUGINS_DOC)
EXAMPLE_PLUGIN = REPO / "examples" / "sealrelay-example-policy"
#: The attribute ``@hookimpl`` puts on an implementation.
IMPL_MARKER = f"{PROJECT_NAME}_impl"


def by_block(blocks: list[CodeBlock]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize(
        "block", blocks, ids=[f"{b.path.name}:{b.line}:{b.module_name}" for b in blocks]
    )


def is_test_module(block: CodeBlock) -> bool:
    return (block.module_name or "").startswith("test_")


def execute(block: CodeBlock, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Run *block* as a module. The blocks before it on its page are importable under the
    names their first lines give (the guide's test imports the guide's plugin)."""
    page = [b for b in BLOCKS if b.path == block.path]
    module = None
    for earlier in page[: page.index(block) + 1]:
        assert earlier.module_name is not None, f"{earlier.location}: first line `# <file>.py`"
        module = types.ModuleType(earlier.module_name)
        module.__file__ = str(earlier.path)
        # attrs, dataclasses and pickling look modules up by name while the code runs.
        monkeypatch.setitem(sys.modules, earlier.module_name, module)
        exec(compile(earlier.source, earlier.location, "exec"), module.__dict__)  # noqa: S102
    assert module is not None
    return module


def plugin_objects(module: types.ModuleType) -> dict[str, object]:
    """What an entry point could name: the module, and the object ``plugin`` when it has one
    (``name = "module:plugin"``)."""
    objects: dict[str, object] = {module.__name__: module}
    if hasattr(module, "plugin"):
        objects[f"{module.__name__}:plugin"] = module.plugin
    return objects


def hooks_of(plugin: object) -> set[str]:
    """The hooks *plugin* implements: prefixed attributes carrying the @hookimpl marker (a
    test module's ``import sealrelay_example_policy`` is prefixed, but no hook)."""
    return {
        name
        for name in dir(plugin)
        if name.startswith(HOOK_PREFIX) and hasattr(getattr(plugin, name), IMPL_MARKER)
    }


def make_config(tmp_path: Path, document: dict[str, object] | None = None) -> Config:
    document = {"storage": {"data_dir": str(tmp_path / "var")}, **(document or {})}
    return parse_config(document, tmp_path / "config.toml")


def load(config: Config, plugins: Mapping[str, object]) -> LoadedPlugins:
    loaded = load_plugins(config, builtins=BUILTIN_PLUGINS, entry_points=False)
    for name, plugin in plugins.items():
        loaded.pm.register(plugin, name=name)
    loaded.pm.check_pending()
    return loaded


def block_named(module_name: str) -> CodeBlock:
    [block] = [b for b in BLOCKS if b.module_name == module_name]
    return block


# -- every block ----------------------------------------------------------------------------


def test_the_pages_have_examples():
    # Guards the parametrized tests against passing vacuously.
    assert len(python_blocks(HOOKS_DOC)) >= len(hook_sections())
    assert len(python_blocks(WRITING_PLUGINS_DOC)) >= 4


def test_every_block_names_its_file():
    for path in (HOOKS_DOC, WRITING_PLUGINS_DOC):
        names = [block.module_name for block in python_blocks(path)]
        assert None not in names, f"{path.name}: start every python block with `# <file>.py`"
        assert len(names) == len(set(names)), f"{path.name}: two examples share a module name"


@by_block(BLOCKS)
def test_example_loads_into_a_plugin_manager(block, tmp_path, monkeypatch):
    module = execute(block, monkeypatch)
    objects = plugin_objects(module)
    loaded = load(make_config(tmp_path), objects)  # check_pending(): no unknown hook, no typo

    implemented = set().union(*(hooks_of(plugin) for plugin in objects.values()))
    if is_test_module(block):
        assert implemented == set()
        return
    assert implemented, f"{block.location}: the example implements no hook"
    for name in implemented:
        for impl in getattr(loaded.pm.hook, name).get_hookimpls():
            assert not inspect.iscoroutinefunction(impl.function), f"{block.location}: {name}"
            assert not impl.hookwrapper, f"{block.location}: use wrapper=True"


@pytest.mark.parametrize("section", hook_sections(), ids=lambda section: section.name)
def test_every_hook_section_shows_an_implementation_of_its_hook(section):
    blocks = re.findall(r"^```python\n(.*?)^```$", section.body, re.MULTILINE | re.DOTALL)
    assert any(f"def {section.name}(" in source for source in blocks), section.name


def _explain_pair(block: CodeBlock) -> tuple[str, str]:
    """The pair the example says to try: ``policy explain --from A --to B`` in the block, else
    the first such command on the page after it."""
    pattern = re.compile(r"policy explain --from (\S+) --to (\S+)")
    after = block.path.read_text(encoding="utf-8").split(block.source, 1)[1]
    for other in BLOCKS:  # another example's hint is not this one's
        after = after.replace(other.source, "")
    match = pattern.search(block.source) or pattern.search(after)
    assert match is not None, f"{block.location}: say which pair to try (`policy explain ...`)"
    return match.group(1), match.group(2)


POLICY_BLOCKS = [b for b in BLOCKS if "def sealrelay_resolve_policy(" in b.source]


def test_there_are_policy_examples():
    assert len(POLICY_BLOCKS) >= 3


@by_block(POLICY_BLOCKS)
def test_policy_example_answers_policy_explain(block, tmp_path, monkeypatch):
    objects = plugin_objects(execute(block, monkeypatch))
    config = make_config(tmp_path)
    sender, recipient = _explain_pair(block)

    with MessageBus(load(config, objects), config) as bus:
        explanation = bus.explain_policy(sender, recipient)

    assert explanation.winner in objects, f"{block.location}: no answer for {recipient}"
    [answer] = [a for a in explanation.answers if a.plugin == explanation.winner]
    assert answer.policy is not None
    assert explanation.policy == answer.policy
    assert explanation.policy.origin, f"{block.location}: set Policy.origin"


def test_examples_pass_the_project_linters(tmp_path):
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("SKIPPED LOUDLY: ruff is not installed (pip install -e .[dev])")
    for block in BLOCKS:
        path = tmp_path / f"{block.module_name}.py"
        path.write_text(block.source)
    config = str(REPO / "pyproject.toml")
    # The examples' own modules are first-party, as they are in their authors' projects.
    modules = ", ".join(f'"{block.module_name}"' for block in BLOCKS)
    first_party = f"lint.isort.known-first-party = [{modules}]"
    # S101: the guide's test uses assert, as tests do.
    check = [ruff, "check", "--no-cache", "--config", config, "--config", first_party]
    check += ["--ignore", "S101", str(tmp_path)]
    checked = subprocess.run(check, capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout
    formatting = [ruff, "format", "--check", "--diff", "--config", config, str(tmp_path)]
    formatted = subprocess.run(formatting, capture_output=True, text=True, check=False)
    assert formatted.returncode == 0, formatted.stdout


# -- the plugin guide ---------------------------------------------------------------------


def test_guide_shows_the_shipped_example_plugin():
    module = block_named("sealrelay_example_policy")
    shipped = EXAMPLE_PLUGIN / "sealrelay_example_policy" / "__init__.py"
    # The block is the file, after the line naming it.
    assert module.source.split("\n", 1)[1] == shipped.read_text(encoding="utf-8")
    page = WRITING_PLUGINS_DOC.read_text(encoding="utf-8")
    pyproject = (EXAMPLE_PLUGIN / "pyproject.toml").read_text(encoding="utf-8")
    assert f"```toml\n{pyproject}```" in page


def test_guide_test_file_passes(tmp_path):
    # The guide's test module, next to the guide's plugin, run by pytest as a plugin author
    # would run it (outside this repository, so none of its configuration applies).
    plugin = block_named("sealrelay_example_policy")
    tests = block_named("test_example_policy")
    package = tmp_path / "sealrelay_example_policy"
    package.mkdir()
    (package / "__init__.py").write_text(plugin.source)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_example_policy.py").write_text(tests.source)

    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error", "tests"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "3 passed" in run.stdout


def test_guide_command_example_runs(tmp_path, monkeypatch):
    module = execute(block_named("sealrelay_policy_matrix"), monkeypatch)
    policy = execute(block_named("sealrelay_example_policy"), monkeypatch)
    config = make_config(tmp_path)
    loaded = load(config, {"policy_matrix": module, "example_policy": policy})
    registry = CommandRegistry.from_plugins(loaded)
    context = CommandContext(config=config, plugins=loaded, actor="test:docs")

    result = registry.execute(
        "policy matrix",
        {"sender": "alice@example.org", "to": ["bob@partner.example", "carol@example.net"]},
        context,
    )

    assert [(row["recipient"], row["encrypt"], row["from"]) for row in result.data] == [
        ("bob@partner.example", "always", "example_policy: *@partner.example"),
        ("carol@example.net", "if-possible", "[policy.default]"),
    ]
    assert "bob@partner.example  sign=opaque encrypt=always cipher=aes256-gcm" in result.text


# -- the examples at work -------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(
    subject: str,
    key: PrivateKeyTypes,
    issuer: x509.Certificate | None,
    issuer_key: CertificateIssuerPrivateKeyTypes,
) -> x509.Certificate:
    """A CA certificate (no issuer) or an S/MIME leaf for the address *subject*."""
    now = dt.datetime.now(dt.UTC)
    public_key = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer else _name(subject))
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:
        rsa_key = isinstance(key, rsa.RSAPrivateKey)
        usage = x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=rsa_key,
            data_encipherment=False,
            key_agreement=not rsa_key,
            key_cert_sign=False,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        )
        builder = (
            builder.add_extension(usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(subject)]), False)
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Subject: Figures\r\n"
    b"Date: Mon, 06 Jan 2025 10:00:00 +0000\r\n"
    b"Message-ID: <figures-1@example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"The figures: 42.\r\n"
)


class Correspondents:
    """The test's own key store: Alice signs, Bob's certificate encrypts, Bob decrypts."""

    def __init__(self, alice: Identity, bob: Identity, anchor: Certificate) -> None:
        self.alice, self.bob, self.anchor = alice, bob, anchor

    @hookimpl
    def sealrelay_signing_identity(self, address: str) -> Identity | None:
        return self.alice if address == self.alice.address else None

    @hookimpl
    def sealrelay_recipient_certificates(self, address: str) -> list[Certificate]:
        return [self.bob.certificate] if address == self.bob.address else []

    @hookimpl
    def sealrelay_decryption_identities(self, address: str) -> list[Identity]:
        return [self.bob] if address == self.bob.address else []

    @hookimpl
    def sealrelay_trust_anchors(self) -> list[Certificate]:
        return [self.anchor]


@pytest.fixture(scope="module")
def rsa_people() -> tuple[Identity, Identity, Certificate]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("Docs Test CA", ca_key, None, ca_key)
    people = []
    for address in ("alice@example.org", "bob@example.net"):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = Certificate(der=_der(_issue(address, key, ca, ca_key)), trusted=True)
        people.append(Identity(address=address, certificate=cert, chain=(), private_key=key))
    return people[0], people[1], Certificate(der=_der(ca), trusted=True)


def test_crypto_examples_round_trip(tmp_path, monkeypatch, rsa_people):
    alice, bob, anchor = rsa_people
    examples = {
        name: execute(block_named(name), monkeypatch)
        for name in ("pkcs7_signer", "pkcs7_encryptor", "pkcs7_decryptor", "signer_blocklist")
    }
    config = make_config(tmp_path, {"policy": {"default": {"sign": "clear", "encrypt": "always"}}})
    # Without the built-in S/MIME plugin, every step is the examples' own work ...
    alone = make_config(
        tmp_path,
        {
            "policy": {"default": {"sign": "clear", "encrypt": "always"}},
            "plugins": {"disabled": ["crypto_smime"]},
        },
    )
    plugins = {"correspondents": Correspondents(alice, bob, anchor), **examples}
    with MessageBus(load(alone, plugins), alone) as bus:
        envelope = Envelope(sender=alice.address, recipients=(bob.address,))
        [sent] = bus.process_outbound(envelope, MESSAGE).messages
        assert (sent.signed, sent.sign_mode, sent.encrypted, sent.cipher) == (
            True,
            "clear",
            True,
            "aes256-cbc",
        )
        assert b"The figures" not in sent.content
        inbound = Envelope(sender=alice.address, recipients=(bob.address,), direction="inbound")
        received = bus.process_inbound(inbound, sent.content, bob.address)
    assert (received.decrypted, received.decryption_error) == (True, None)
    assert b"The figures: 42." in received.content
    assert b"multipart/signed" in received.content

    # ... and what they produce is standard S/MIME: the built-in verifies the signature
    # (the blocklist wrapper around it has no objection).
    with MessageBus(load(config, plugins), config) as bus:
        received = bus.process_inbound(inbound, sent.content, bob.address)
    assert received.decrypted
    assert (received.signature.status, received.signature.signer) == (
        "valid",
        "alice@example.org",
    )


def test_identity_examples_work_together(tmp_path, monkeypatch):
    """The key, certificate and subscriber examples, on their default paths (relative to
    config.toml), with the built-in S/MIME plugin doing the cryptography: the stash filler
    makes keys ahead of time; Alice is a subscriber without a key, gets one from the stash,
    certified by the local CA and kept as a PKCS#12 file; she signs and encrypts to Bob; the
    CA's CRL is published; Bob decrypts with his archived key, verifies against the CA bundle
    (where provisioning put the CA) and keeps Alice's certificate."""
    names = (
        "stash_filler",
        "subscribers_file",
        "p12_keys",
        "key_stash",
        "local_ca",
        "p12_store",
        "key_archive",
        "pem_directory",
        "ca_bundle",
        "crl_directory",
        "crl_publisher",
        "harvest_to_directory",
    )
    examples = {name: execute(block_named(name), monkeypatch) for name in names}
    monkeypatch.setenv("SEALRELAY_STASH_PASSPHRASE", "stash passphrase")
    monkeypatch.setenv("SEALRELAY_P12_PASSPHRASE", "p12 passphrase")
    # The built-in store (policy_sql) keeps the provisioned identity too, under the master key.
    monkeypatch.setenv("SEALRELAY_MASTER_KEY", base64.b64encode(bytes(range(32))).decode())
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("Example CA", ca_key, None, ca_key)
    bob_key = ec.generate_private_key(ec.SECP256R1())
    bob = _issue("bob@example.net", bob_key, ca, ca_key)
    (tmp_path / "ca").mkdir()
    (tmp_path / "ca" / "ca.pem").write_bytes(_pem(ca))
    (tmp_path / "ca" / "ca.key").write_bytes(
        ca_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "subscribers.txt").write_text("alice@example.org staff  # Alice\n")
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "bob@example.net.pem").write_bytes(_pem(bob))
    archive = tmp_path / "key-archive" / "bob@example.net"
    archive.mkdir(parents=True)
    encryption = serialization.NoEncryption()
    (archive / "2025.p12").write_bytes(
        pkcs12.serialize_key_and_certificates(b"bob", bob_key, bob, None, encryption)
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
        .next_update(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    config = make_config(
        tmp_path,
        {
            "policy": {"default": {"sign": "clear", "encrypt": "always"}},
            "keypool": {"provision_on_send": True, "key_type": "ec-p256"},
        },
    )
    plugins = {
        name: plugin
        for module in examples.values()
        for name, plugin in plugin_objects(module).items()
        if hooks_of(plugin)
    }
    loaded = load(config, plugins)
    [filler] = examples["stash_filler"].sealrelay_background_services(config=config)
    stash = tmp_path / "key-stash" / "ec-p256"

    with MessageBus(loaded, config) as bus:
        # The filler runs as `serve` runs it, until the stash holds [keypool] size keys.
        stop = threading.Event()
        service = threading.Thread(target=filler.run, args=(bus, stop))
        service.start()
        deadline = time.monotonic() + 60
        while len(list(stash.glob("*.pem"))) < config.keypool.size:
            assert time.monotonic() < deadline, "the stash filler made no keys"
            time.sleep(0.01)
        stop.set()
        service.join(timeout=10)
        assert not service.is_alive()

        envelope = Envelope(sender="alice@example.org", recipients=("bob@example.net",))
        result = bus.process_outbound(envelope, MESSAGE)
        assert (result.rejected, result.deferred) == ((), ())
        [sent] = result.messages
        assert (sent.signed, sent.encrypted) == (True, True)
        published, failed = bus.publish_revocation_list(
            crl.public_bytes(serialization.Encoding.DER)
        )
        inbound = Envelope(
            sender="alice@example.org", recipients=("bob@example.net",), direction="inbound"
        )
        received = bus.process_inbound(inbound, sent.content, "bob@example.net")

    # One key left the stash, for good, and Alice's sealed PKCS#12 file holds it.
    assert len(list(stash.glob("*.pem"))) == config.keypool.size - 1
    p12 = (tmp_path / "keys" / "alice@example.org.p12").read_bytes()
    key, certificate, _ = pkcs12.load_key_and_certificates(p12, b"p12 passphrase")
    assert key is not None
    assert certificate is not None
    assert certificate.public_key() == key.public_key()
    assert certificate.issuer == ca.subject
    # The CRL went to every store: the publisher's file is what crl_directory reads.
    crl_der = crl.public_bytes(serialization.Encoding.DER)
    assert ("crl_publisher" in published, failed) == (True, [])
    assert [path.read_bytes() for path in (tmp_path / "crls").glob("*.crl")] == [crl_der]
    assert received.decrypted
    assert received.signature.status == "valid", received.signature
    assert b"The figures: 42." in received.content
    # Harvested into the directory the pem_directory example reads.
    alice_pem = (tmp_path / "certs" / "alice@example.org.pem").read_bytes()
    [alice] = x509.load_pem_x509_certificates(alice_pem)
    assert alice == certificate
    assert received.harvested == (Certificate(der=_der(alice)).fingerprint,)


def test_drop_folder_example_serves(tmp_path, monkeypatch):
    module = execute(block_named("drop_folder"), monkeypatch)
    folder = tmp_path / "pickup"
    # The built-in SMTP front end is switched off: no test listens on a real port.
    plugins = {"drop_folder": {"path": "pickup"}, "disabled": ["frontend_smtp"]}
    config = make_config(tmp_path, {"policy": {"default": {"sign": "none"}}, "plugins": plugins})
    # [plugins.drop_folder] needs an installed drop_folder: load the example as if it were.
    monkeypatch.setitem(sys.modules, "docs_examples.drop_folder", module)
    loaded = load_plugins(
        config, builtins=(*BUILTIN_PLUGINS, "docs_examples.drop_folder"), entry_points=False
    )
    folder.mkdir()
    (folder / "1.eml").write_bytes(MESSAGE)

    async def serve(bus: MessageBus) -> None:
        [[frontend]] = loaded.pm.hook.sealrelay_create_frontends(config=config, bus=bus)
        await frontend.start()
        for _ in range(100):  # the folder is read at once, then every 5 seconds
            if not (folder / "1.eml").exists():
                break
            await asyncio.sleep(0.05)
        await frontend.stop()

    with MessageBus(loaded, config) as bus:
        asyncio.run(serve(bus))
    assert not (folder / "1.eml").exists()


def test_small_examples_do_what_they_say(tmp_path, monkeypatch):
    names = ("greylist", "domain_rules", "audit_tail", "quota", "p12_keys")
    examples = {name: execute(block_named(name), monkeypatch) for name in names}
    config = make_config(tmp_path)
    loaded = load(config, examples)
    registry = CommandRegistry.from_plugins(loaded)
    context = CommandContext(config=config, plugins=loaded, actor="test:docs")

    # greylist: `init` creates its table once, and says so once.
    first = registry.execute("init", {}, context).data["steps"]
    second = registry.execute("init", {}, context).data["steps"]
    assert any(step.startswith("greylist: created") for step in first)
    assert not any(step.startswith("greylist:") for step in second)

    # audit_tail: the command is there and reads what audit_log wrote for those two runs.
    entries = registry.execute("audit tail", {"lines": "2"}, context).data
    assert [(entry["command"], entry["outcome"]) for entry in entries] == [("init", "ok")] * 2

    # quota: its own hook exists once the plugin is registered.
    assert loaded.pm.hook.sealrelay_quota_exceeded(sender="alice@example.org", count=501) == []

    # domain_rules: policy explain lists every rule that matched, the winner first.
    with MessageBus(loaded, config) as bus:
        explanation = bus.explain_policy("alice@example.org", "oncall@ops.example.com")
    assert [rule for plugin, rule in explanation.rules if plugin == "domain_rules"] == [
        "rule 1: *@ops.example.com -> never encrypt (pagers)",
        "rule 2: *@example.com -> encrypt if possible",
    ]

    # p12_keys: a key file named after the address is that address's signing key.
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _issue("alice@example.org", key, _issue("CA", key, None, key), key)
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "alice@example.org.p12").write_bytes(
        pkcs12.serialize_key_and_certificates(None, key, cert, None, serialization.NoEncryption())
    )
    identity = examples["p12_keys"].sealrelay_signing_identity(address="alice@example.org")
    assert identity.certificate.der == _der(cert)
    assert examples["p12_keys"].sealrelay_signing_identity(address="bob@example.net") is None
