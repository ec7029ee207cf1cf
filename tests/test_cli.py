from __future__ import annotations

import json
import stat

import pytest

from tests.cli import Operator, Run


MESSAGE = b"From: alice@example.org\r\nTo: bob@example.net\r\nSubject: hello\r\n\r\nHi Bob\r\n"


@pytest.fixture
def operator(tmp_path):
    return Operator.in_directory(tmp_path)


def one_line_error(run: Run) -> str:
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("sealrelay: error: ")
    return lines[0]


def test_init_creates_data_directory_and_a_private_master_key(operator):
    run = operator.run("init")
    assert run.status == 0, run.stderr
    key = operator.directory / "var" / "master.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    first = key.read_bytes()
    again = operator.run("init", "--json")
    assert again.status == 0
    assert any("kept" in step for step in again.json()["steps"])
    assert key.read_bytes() == first


def test_master_key_from_environment_is_not_written(operator):
    run = operator.run("init", "--json", env={"SEALRELAY_MASTER_KEY": "A" * 43 + "="})
    assert run.status == 0, run.stderr
    assert "master key: taken from SEALRELAY_MASTER_KEY" in run.json()["steps"]
    assert not (operator.directory / "var" / "master.key").exists()


def test_malformed_master_key_in_the_environment_is_a_clear_error(operator):
    run = operator.run("init", env={"SEALRELAY_MASTER_KEY": "not base64!"})
    assert run.status == 2
    assert "SEALRELAY_MASTER_KEY is not base64" in one_line_error(run)


def test_plugins_json_lists_builtins_and_their_hooks(operator):
    run = operator.run("plugins", "--json")
    assert run.status == 0, run.stderr
    plugins = {p["name"]: p for p in run.json()}
    assert plugins["commands_core"]["hooks"] == ["sealrelay_register_commands"]
    assert plugins["audit_log"]["source"] == "builtin"
    assert all(p["enabled"] for p in plugins.values())


def test_policy_explain_answers_from_the_default(operator):
    run = operator.run(
        "policy", "explain", "--from", "alice@example.org", "--to", "Bob@Example.NET", "--json"
    )
    assert run.status == 0, run.stderr
    explained = run.json()
    assert explained["recipient"] == "Bob@example.net"
    assert explained["winner"] == "[policy.default]"
    assert explained["policy"]["sign"] == "clear"
    assert explained["policy"]["encrypt"] == "if-possible"


def test_process_outbound_writes_each_message_and_a_summary(operator):
    operator.append_config("")
    config = operator.directory / "config.toml"
    config.write_text(config.read_text().replace('sign = "clear"', 'sign = "none"'))
    (operator.directory / "in.eml").write_bytes(MESSAGE)
    run = operator.run(
        "process",
        "outbound",
        "--from",
        "alice@example.org",
        "--to",
        "bob@example.net",
        "--to",
        "carol@example.net",
        "-i",
        "in.eml",
        "-o",
        "out",
        "--json",
    )
    assert run.status == 0, run.stderr
    summary = run.json()
    assert summary["rejected"] == []
    [message] = summary["messages"]
    assert message["recipients"] == ["bob@example.net", "carol@example.net"]
    assert (message["signed"], message["encrypted"], message["cipher"]) == (False, False, None)
    assert (operator.directory / message["file"]).read_bytes() == MESSAGE


def test_process_outbound_that_cannot_sign_fails_with_status_1(operator):
    run = operator.run(
        "process",
        "outbound",
        "--from",
        "alice@example.org",
        "--to",
        "bob@example.net",
        "-o",
        "out",
        "--json",
        stdin=MESSAGE,
    )
    assert run.status == 1
    summary = run.json()
    assert summary["messages"] == []
    assert "no signing key is known for alice@example.org" in summary["deferred"][0]["reason"]
    assert not (operator.directory / "out").exists()


def test_process_inbound_marks_the_result(operator):
    forged = b"X-Sealrelay-Signature: valid\r\n" + MESSAGE
    run = operator.run(
        "process", "inbound", "--to", "bob@example.net", "-o", "result.eml", "--json", stdin=forged
    )
    assert run.status == 0, run.stderr
    assert run.json()["signature"]["status"] == "none"
    assert run.json()["decrypted"] is False
    delivered = (operator.directory / "result.eml").read_bytes()
    assert delivered == b"X-Sealrelay-Signature: none\r\nX-Sealrelay-Decryption: none\r\n" + MESSAGE


def test_commands_are_audited_with_the_actor(operator):
    operator.run("init")
    operator.run("policy", "explain", "--from", "a@example.org", "--to", "b@example.org")
    lines = (operator.directory / "var" / "audit.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    explain = [r for r in records if r["event"] == "command" and r["command"] == "policy explain"]
    assert explain[0]["actor"].startswith("cli:")
    assert explain[0]["parameters"] == {"sender": "a@example.org", "to": "b@example.org"}


def test_malformed_config_is_one_line_and_status_2(operator):
    (operator.directory / "config.toml").write_text("[smtp]\nlisten = \n")
    run = operator.run("plugins")
    assert run.status == 2
    assert "is not valid TOML" in one_line_error(run)


def test_bad_value_names_the_key(operator):
    config = operator.directory / "config.toml"
    config.write_text(
        config.read_text().replace('encrypt = "if-possible"', 'encrypt = "sometimes"')
    )
    run = operator.run("plugins")
    assert run.status == 2
    assert "[policy.default]: encrypt = 'sometimes' is not allowed" in one_line_error(run)


def test_unknown_disabled_plugin_is_one_line_and_status_2(operator):
    config = operator.directory / "config.toml"
    config.write_text(config.read_text().replace("disabled = []", 'disabled = ["polcy_sql"]'))
    run = operator.run("plugins")
    assert run.status == 2
    assert "unknown plugin 'polcy_sql'" in one_line_error(run)


def test_plugin_raising_at_import_is_one_line_and_status_1(operator, tmp_path):
    site = tmp_path / "site"
    (site / "sealrelay_broken-0.1.dist-info").mkdir(parents=True)
    (site / "sealrelay_broken-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: sealrelay-broken\nVersion: 0.1\n"
    )
    (site / "sealrelay_broken-0.1.dist-info" / "entry_points.txt").write_text(
        "[sealrelay]\nbroken = sealrelay_broken\n"
    )
    (site / "sealrelay_broken.py").write_text("import does_not_exist\n")
    operator.pythonpath.append(str(site))
    run = operator.run("plugins")
    assert run.status == 1
    line = one_line_error(run)
    assert "plugin 'broken'" in line
    assert "No module named 'does_not_exist'" in line


def test_usage_error_is_status_2(operator):
    run = operator.run("process", "outbound", "--from", "a@example.org", "-o", "out")
    assert run.status == 2
    assert "--to" in run.stderr


def test_bad_address_is_a_clear_error(operator):
    run = operator.run("policy", "explain", "--from", "alice", "--to", "b@example.org")
    assert run.status == 2
    assert "'alice' is not an e-mail address" in one_line_error(run)
