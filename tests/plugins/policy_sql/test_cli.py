"""The store's commands through the real ``sealrelay`` command line, as an operator runs them,
and the audit trail they leave."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives import serialization

from tests.cli import Operator
from tests.pki import build_test_pki
from tests.plugins.policy_sql.conftest import write_pkcs12


@pytest.fixture
def operator(backend):
    operator = Operator.in_directory(backend.tmp_path)
    config = operator.directory / "config.toml"
    text = config.read_text()
    config.write_text(re.sub(r'(?m)^url = ".*"$', f'url = "{backend.url}"', text, count=1))
    run = operator.run("init")
    assert run.status == 0, run.stderr
    assert "policy store: created schema version" in run.stdout
    return operator


def ok(run):
    assert run.status == 0, run.stderr
    return run


def audit(backend) -> list[tuple[str, str, str, Any, Any]]:
    with backend.raw() as db:
        rows = db.execute_sql(
            "SELECT actor, action, target, before, after FROM sr_audit ORDER BY id"
        ).fetchall()
    return [
        (actor, action, target, before and json.loads(before), after and json.loads(after))
        for actor, action, target, before, after in rows
    ]


def test_subscribers_and_policies_round_trip_with_an_audit_trail(operator, backend):
    (operator.directory / "pw").write_text("correct horse\n")
    ok(
        operator.run(
            "subscriber",
            "add",
            "Alice@Example.org",
            "--group",
            "legal",
            "--group",
            "Staff",
            "--name",
            "Alice A.",
            "--password-file",
            "pw",
        )
    )
    listed = ok(operator.run("subscriber", "list", "--json")).json()
    assert listed == [
        {
            "address": "Alice@example.org",
            "name": "Alice A.",
            "groups": ["legal", "staff"],
            "enabled": True,
            "has_credentials": True,
        }
    ]
    with backend.raw() as db:
        [(stored,)] = db.execute_sql("SELECT credentials FROM sr_subscribers").fetchall()
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored
    assert PasswordHasher().verify(stored, "correct horse")

    added = ok(
        operator.run(
            "policy",
            "add",
            "--from",
            "@legal",
            "--to",
            "*@partner.example",
            "--sign",
            "opaque",
            "--encrypt",
            "always",
            "--priority",
            "3",
            "--json",
        )
    ).json()
    assert added == {
        "id": 1,
        "from": "@legal",
        "to": "*@partner.example",
        "priority": 3,
        "comment": "",
        "sign": "opaque",
        "encrypt": "always",
    }
    explained = ok(
        operator.run(
            "policy",
            "explain",
            "--from",
            "alice@example.org",
            "--to",
            "bob@partner.example",
            "--json",
        )
    ).json()
    assert explained["winner"] == "policy_sql"
    assert (explained["policy"]["sign"], explained["policy"]["encrypt"]) == ("opaque", "always")
    assert explained["policy"]["origin"] == "rule 1: @legal -> *@partner.example (priority 3)"
    assert len(ok(operator.run("policy", "list", "--json")).json()) == 1
    ok(operator.run("policy", "remove", "1"))
    assert ok(operator.run("policy", "list", "--json")).json() == []
    missing = operator.run("policy", "remove", "1")
    assert missing.status == 1
    assert "there is no rule 1" in missing.stderr

    trail = audit(backend)
    assert [(action, target) for _, action, target, _, _ in trail] == [
        ("subscriber add", "Alice@example.org"),
        ("policy add", "rule 1"),
        ("policy remove", "rule 1"),
    ]
    assert all(actor.startswith("cli:") for actor, *_ in trail)
    assert trail[1][3] is None
    assert trail[1][4]["sign"] == "opaque"
    assert trail[2][3] == trail[1][4]
    assert trail[2][4] is None
    assert "correct horse" not in json.dumps(trail)


def test_bad_patterns_are_usage_errors_on_one_line(operator):
    run = operator.run("policy", "add", "--from", "@example.org", "--to", "*")
    assert run.status == 2
    assert run.stderr.strip().splitlines() == [
        "sealrelay: error: 'example.org' is not a group name: use letters, digits, '-' and '_'; "
        "for a domain write *@example.org"
    ]


def test_identity_certificates_and_crls_from_files(operator, backend, tmp_path):
    pki = build_test_pki()
    pem = serialization.Encoding.PEM
    (tmp_path / "root.pem").write_bytes(pki.root.public_bytes(pem))
    (tmp_path / "grace.der").write_bytes(pki.revoked.cert.public_bytes(serialization.Encoding.DER))
    (tmp_path / "intermediate.crl").write_bytes(pki.crl.public_bytes(serialization.Encoding.DER))
    write_pkcs12(tmp_path / "alice.p12", pki.rsa2048, b"pw", legacy=True)
    (tmp_path / "p12pw").write_text("pw\n")

    ok(operator.run("cert", "import", str(tmp_path / "root.pem"), "--trust-anchor"))
    early = operator.run("crl", "import", str(tmp_path / "intermediate.crl"))
    assert early.status == 1
    assert "import the issuing CA first" in early.stderr
    imported = ok(
        operator.run(
            "identity",
            "import",
            str(tmp_path / "alice.p12"),
            "--password-file",
            str(tmp_path / "p12pw"),
            "--json",
        )
    ).json()
    assert imported["outcome"] == "added"
    assert imported["addresses"] == ["alice@example.org"]
    ok(operator.run("cert", "import", str(tmp_path / "grace.der")))
    ok(operator.run("crl", "import", str(tmp_path / "intermediate.crl")))

    listed = {
        tuple(row["addresses"]): row for row in ok(operator.run("cert", "list", "--json")).json()
    }
    assert listed[("alice@example.org",)]["status"] == "valid"
    assert listed[("alice@example.org",)]["private_key"] is True
    assert listed[("grace@example.org",)]["status"] == "revoked"
    assert (
        ok(operator.run("cert", "list", "--address", "Grace@Example.org", "--json")).json()[0][
            "status"
        ]
        == "revoked"
    )
    text = ok(operator.run("cert", "list")).stdout
    assert "revoked" in text
    assert "alice@example.org" in text

    actions = [action for _, action, _, _, _ in audit(backend)]
    assert actions == ["cert import", "identity import", "cert import", "crl import"]
