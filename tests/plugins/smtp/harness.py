"""A relay on 127.0.0.1 for tests: the frontend_smtp plugin's front ends on an event loop in a
thread (so tests can talk to it with the blocking smtplib), and an aiosmtpd sink as next hop;
for the end-to-end tests, real Postfix and Dovecot around it (``mail_stack``, ``fetch``)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email
import email.policy
import imaplib
import os
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sealrelay import Policy, hookimpl
from sealrelay.core.bus import MessageBus
from sealrelay.core.config import Config, parse_config
from sealrelay.core.plugins import LoadedPlugins, load_plugins
from tests.conftest import require_executable


#: Only what these tests need: the front end, and the built-in commands; the crypto and the
#: policy store have their own tests (and the e2e test switches signing on in one place).
PLUGINS = ("sealrelay.plugins.commands_core", "sealrelay.plugins.frontend_smtp")
LOCAL = "localhost"  # smtplib's local_hostname: no getfqdn() per connection
SERVICES = Path(__file__).resolve().parents[3] / "scripts" / "services"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def relay_document(tmp_path: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """A config for tests: spool and Maildir in tmp_path, fast retries, no crypto."""
    document: dict[str, Any] = {
        "storage": {"data_dir": str(tmp_path / "var"), "url": f"sqlite:///{tmp_path}/db.sqlite"},
        "smtp": {
            "listen": f"127.0.0.1:{free_port()}",
            "next_hop": f"maildir:{tmp_path / 'outbox'}",
            "hostname": "relay.test",
            "workers": 1,
            "shutdown_timeout": 5,
        },
        "routing": {"local_domains": ["example.org"]},
        "delivery": {"retry_initial": 1, "scan_interval": 1, "node": "node1", "timeout": 5},
        "policy": {"default": {"sign": "none", "encrypt": "if-possible"}},
    }
    for name, values in sections.items():
        document.setdefault(name, {}).update(values)
    return document


def make_message(subject: str = "hello", body: str = "hello world\r\n", **headers: str) -> bytes:
    fields = {
        "From": "alice@example.org",
        "To": "bob@example.net",
        "Subject": subject,
        "Message-ID": f"<{subject.replace(' ', '-')}@test>",
        "MIME-Version": "1.0",
        "Content-Type": "text/plain; charset=utf-8",
        "Content-Transfer-Encoding": "8bit",
    }
    fields.update(headers)
    head = "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return (head + "\r\n" + body).encode("utf-8")


class AlwaysEncrypt:
    """A policy store: mail to secret@example.net must be encrypted; no certificate is known."""

    def __init__(self, address: str = "secret@example.net", hold: bool = False) -> None:
        self.address = address
        self.hold = hold

    @hookimpl
    def sealrelay_resolve_policy(self, recipient: str) -> Policy | None:
        if recipient != self.address:
            return None
        return Policy(
            sign="none",
            encrypt="always",
            missing_certificate="hold" if self.hold else "reject",
            origin="test",
        )


class Credentials:
    """sealrelay_check_credentials for alice@example.org / alicepw."""

    @hookimpl
    def sealrelay_check_credentials(self, login: str, password: str) -> str | None:
        return (
            "alice@example.org" if (login, password) == ("alice@example.org", "alicepw") else None
        )


class Relay:
    """The plugin's front ends, started on a private event loop in a thread."""

    def __init__(self, config: Config, extra: dict[str, object] | None = None) -> None:
        self.config = config
        self.plugins: LoadedPlugins = load_plugins(config, builtins=PLUGINS, entry_points=False)
        for name, plugin in (extra or {}).items():
            self.plugins.pm.register(plugin, name=name)
        self.plugins.pm.check_pending()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.bus = MessageBus(self.plugins, config)
        self.frontends: list[Any] = []

    @property
    def port(self) -> int:
        return int(self.config.smtp.listen.rpartition(":")[2])

    def call(self, coroutine: Any, timeout: float = 30) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout)

    def start(self) -> Relay:
        self.thread.start()
        self.bus.open()

        async def start() -> None:
            answers = self.plugins.pm.hook.sealrelay_create_frontends(
                config=self.config, bus=self.bus
            )
            self.frontends = [f for answer in answers for f in answer]
            for frontend in self.frontends:
                await frontend.start()

        self.call(start())
        return self

    def stop(self) -> None:
        async def stop() -> None:
            for frontend in reversed(self.frontends):
                await frontend.stop()

        self.call(stop())
        self.bus.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def frontend(self, name: str) -> Any:
        return next(f for f in self.frontends if f.name == name)

    def client(self, **kwargs: Any) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.port, local_hostname=LOCAL, timeout=10, **kwargs)

    def send(self, sender: str, recipients: list[str], message: bytes) -> dict[str, Any]:
        with self.client() as client:
            return client.sendmail(sender, recipients, message)

    def drain(self) -> None:
        """Wait until the deliveries started so far are done."""
        self.call(self.frontend("delivery").drain())


@contextlib.contextmanager
def running(config: Config, extra: dict[str, object] | None = None) -> Iterator[Relay]:
    relay = Relay(config, extra).start()
    try:
        yield relay
    finally:
        relay.stop()


class Sink:
    """An aiosmtpd next hop that records what it receives, and can refuse on demand."""

    def __init__(
        self,
        port: int | None = None,
        *,
        pipelining: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.port = port or free_port()
        #: Offer PIPELINING (aiosmtpd takes pipelined commands, but does not say so).
        self.pipelining = pipelining
        #: Offer STARTTLS with this context.
        self.tls = tls
        self.received: list[tuple[str, list[str], bytes]] = []
        #: For each message received: whether it came over TLS.
        self.over_tls: list[bool] = []
        #: Returns a reply to refuse a recipient at RCPT, or None to accept it.
        self.refuse_rcpt: Callable[[str], str | None] = lambda _address: None
        #: Returns a reply to refuse the message at the end of DATA, or None to take it.
        self.refuse_data: Callable[[str], str | None] = lambda _sender: None
        #: Close this many connections right after a message, as a next hop ending an idle
        #: connection does.
        self.hang_ups = 0
        self.controller: Controller | None = None
        self.lock = threading.Lock()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, options):  # noqa: N802
        refusal = self.refuse_rcpt(address)
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        refusal = self.refuse_data(envelope.mail_from)
        if refusal is not None:
            return refusal
        with self.lock:
            self.received.append(
                (envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
            )
            self.over_tls.append(session.ssl is not None)
            if self.hang_ups:
                self.hang_ups -= 1
                asyncio.get_running_loop().call_later(0.05, server.transport.close)
        return "250 2.0.0 Ok: queued"

    def start(self) -> Sink:
        self.controller = Controller(
            self,
            hostname="127.0.0.1",
            port=self.port,
            server_hostname="sink.test",
            tls_context=self.tls,
        )
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def wait_for(self, count: int, timeout: float = 20) -> list[tuple[str, list[str], bytes]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        raise AssertionError(f"the sink got {len(self.received)} of {count} messages")


def maildir_messages(path: Path) -> list[email.message.Message]:
    new = path / "new"
    if not new.is_dir():
        return []
    return [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.SMTPUTF8)
        for p in sorted(new.iterdir())
    ]


def wait_until(predicate: Callable[[], bool], timeout: float = 20, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def make_certificate(directory: Path) -> tuple[str, str]:
    """A self-signed certificate for relay.test and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("relay.test")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


def config_for(tmp_path: Path, **sections: dict[str, Any]) -> Config:
    return parse_config(relay_document(tmp_path, **sections), tmp_path / "config.toml")


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "[" + ", ".join(toml_value(item) for item in value) + "]"


def write_config(path: Path, document: dict[str, Any]) -> Path:
    """*document* as config.toml (flat tables and [policy.default] are all the tests need)."""
    lines = []
    for section, table in document.items():
        plain = {k: v for k, v in table.items() if not isinstance(v, dict)}
        nested = {k: v for k, v in table.items() if isinstance(v, dict)}
        if plain:
            lines.append(f"[{section}]")
            lines += [f"{key} = {toml_value(value)}" for key, value in plain.items()]
        for name, sub in nested.items():
            lines.append(f"[{section}.{name}]")
            lines += [f"{key} = {toml_value(value)}" for key, value in sub.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def mail_stack() -> Iterator[dict[str, int]]:
    """Dovecot and Postfix (scripts/services/) on free ports, sealrelay's place left open:
    Postfix hands every message to FILTER_PORT and takes it back on REINJECT_PORT, then
    delivers alice@/bob@example.org and carol@example.net over LMTP (IMAP on IMAP_PORT).
    Import it into a test module (listed in its ``__all__``): one stack per module."""
    require_executable("postfix")
    require_executable("dovecot")
    # Not under pytest's tmp_path: its parents are 0700, and Dovecot's and Postfix's users
    # must reach their files.
    base = Path(tempfile.mkdtemp(prefix="sealrelay-e2e-"))
    base.chmod(0o755)
    ports = {
        "SMTP_PORT": free_port(),
        "FILTER_PORT": free_port(),
        "REINJECT_PORT": free_port(),
        "LMTP_PORT": free_port(),
        "IMAP_PORT": free_port(),
    }
    environment = {**os.environ, **{k: str(v) for k, v in ports.items()}}

    def script(name: str, directory: str) -> None:
        subprocess.run(
            [str(SERVICES / name), str(base / directory)],
            env=environment,
            check=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )

    # Each down script runs even when its up script failed half-way (a daemon may be up).
    try:
        script("dovecot-up.sh", "dovecot")
        try:
            script("postfix-up.sh", "postfix")
            yield ports
        finally:
            script("postfix-down.sh", "postfix")
    finally:
        script("dovecot-down.sh", "dovecot")
        shutil.rmtree(base, ignore_errors=True)


def fetch(port: int, user: str, password: str, subject: str, timeout: float = 30) -> bytes:
    """The newest message in *user*'s IMAP INBOX with *subject*, exactly as IMAP serves it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        imap = imaplib.IMAP4("127.0.0.1", port, timeout=10)
        try:
            imap.login(user, password)
            imap.select("INBOX")
            _, found = imap.search(None, "SUBJECT", f'"{subject}"')
            if found[0]:
                _, data = imap.fetch(found[0].split()[-1], "(RFC822)")
                raw = data[0]
                assert isinstance(raw, tuple)
                return bytes(raw[1])
        finally:
            imap.logout()
        time.sleep(0.2)
    raise AssertionError(f"{subject!r} did not arrive for {user} within {timeout}s")
