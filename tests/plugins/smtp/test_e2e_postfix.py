"""End to end behind real Postfix and Dovecot (scripts/services/): a message goes in at
Postfix, through ``sealrelay serve`` as Postfix's after-queue content filter, back into
Postfix, over LMTP into Dovecot, and is read back over IMAP.

Skipped loudly without postfix/dovecot; a failure in CI (SEALRELAY_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import json
import smtplib
import subprocess
import uuid
from pathlib import Path

from tests.conftest import require_executable
from tests.plugins.smtp.harness import LOCAL, fetch, mail_stack, make_message
from tests.plugins.smtp.test_serve import Server


#: mail_stack is a module-scoped fixture from the harness: each e2e module gets its own stack.
__all__ = ["mail_stack"]


#: The one switch for signing outbound mail (the built-in crypto_smime plugin, a key for the
#: sender made with openssl and imported). False: the pipeline runs without crypto.
SIGN = True


def import_signing_key(relay: Server, directory: Path, address: str) -> None:
    """A self-signed S/MIME key and certificate for *address*, imported as its identity."""
    key, cert, p12, password = (directory / name for name in ("k.pem", "c.pem", "a.p12", "pw"))
    openssl = require_executable("openssl")
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-keyout", str(key), "-out", str(cert), "-subj", f"/CN=e2e/emailAddress={address}"),
            *("-addext", f"subjectAltName=email:{address}"),
            *("-addext", "extendedKeyUsage=emailProtection"),
        ],
        check=True,
        capture_output=True,
    )
    password.write_text("e2e\n")
    subprocess.run(
        [
            *(openssl, "pkcs12", "-export", "-inkey", str(key), "-in", str(cert)),
            *("-out", str(p12), "-passout", f"file:{password}"),
        ],
        check=True,
    )
    relay.run("identity", "import", str(p12), "--password-file", str(password))


def test_postfix_sealrelay_dovecot(mail_stack, tmp_path):
    relay = Server.content_filter(tmp_path, mail_stack, sign="clear" if SIGN else "none")
    if SIGN:
        import_signing_key(relay, tmp_path, "alice@example.org")
    relay.start()
    try:
        tag = uuid.uuid4().hex[:8]
        inbound, outbound = f"to bob {tag}", f"to carol {tag}"
        with smtplib.SMTP(
            "127.0.0.1", mail_stack["SMTP_PORT"], local_hostname=LOCAL, timeout=30
        ) as client:
            client.sendmail(
                "alice@example.org",
                ["bob@example.org"],
                make_message(inbound, "Grüße through the relay\r\n", To="bob@example.org"),
            )
            client.sendmail(
                "alice@example.org",
                ["carol@example.net"],
                make_message(outbound, "out through the relay\r\n", To="carol@example.net"),
            )
        imap = mail_stack["IMAP_PORT"]
        # example.org is local to the relay: the inbound pipeline annotated it.
        for_bob = fetch(imap, "bob@example.org", "bobpw", inbound)
        assert b"X-Sealrelay-Signature: none" in for_bob
        assert "Grüße through the relay".encode() in for_bob  # 8bit body unchanged
        # example.net is outside: the outbound pipeline ran (and signed, with SIGN).
        for_carol = fetch(imap, "carol@example.net", "carolpw", outbound)
        assert b"X-Sealrelay-" not in for_carol
        if SIGN:
            assert b"Content-Type: multipart/signed" in for_carol
            # The signature survived Postfix, LMTP and IMAP byte for byte: the verifier finds
            # the content intact (the self-made certificate is untrusted, as it should be).
            (tmp_path / "carol.eml").write_bytes(for_carol)
            checked = relay.run(
                "process", "inbound", "--to", "carol@example.net", "--json",
                "-i", str(tmp_path / "carol.eml"), "-o", str(tmp_path / "checked.eml"),
            )  # fmt: skip
            signature = json.loads(checked.stdout)["signature"]
            assert signature["crypto"] == "ok", signature
    finally:
        assert relay.terminate() == 0
