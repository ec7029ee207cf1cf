"""The example third-party plugin, built and installed the way an operator would install it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cli import REPO, Operator


@pytest.fixture(scope="session")
def example_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/sealrelay-example-policy built into a wheel and installed into its own
    directory, which the operator's sealrelay then finds on PYTHONPATH."""
    site = tmp_path_factory.mktemp("example-site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(REPO / "examples" / "sealrelay-example-policy"),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return site


@pytest.fixture
def operator(tmp_path, example_site) -> Operator:
    operator = Operator.in_directory(tmp_path)
    operator.pythonpath.append(str(example_site))
    return operator


def explain(operator: Operator, recipient: str) -> Any:
    run = operator.run(
        "policy", "explain", "--from", "alice@example.org", "--to", recipient, "--json"
    )
    assert run.status == 0, run.stderr
    return run.json()


def test_installed_example_appears_in_plugins(operator):
    run = operator.run("plugins", "--json")
    assert run.status == 0, run.stderr
    example = {p["name"]: p for p in run.json()}["example_policy"]
    assert example["source"] == "entry point"
    assert (example["distribution"], example["version"]) == ("sealrelay-example-policy", "1.0.0")
    assert example["hooks"] == ["sealrelay_configure", "sealrelay_resolve_policy"]
    assert example["enabled"]


def test_example_overrides_policy_for_its_domain_only(operator):
    partner = explain(operator, "bob@Partner.Example")
    assert partner["winner"] == "example_policy"
    assert partner["policy"]["sign"] == "opaque"
    assert partner["policy"]["encrypt"] == "always"
    assert partner["policy"]["origin"] == "example_policy: *@partner.example"
    other = explain(operator, "bob@example.net")
    assert other["winner"] == "[policy.default]"
    # Installed plugins are asked before the built-ins.
    assert other["answers"][0] == {"plugin": "example_policy", "policy": None}


def test_example_reads_its_config_section(operator):
    operator.append_config('[plugins.example_policy]\ndomain = "other.example"')
    assert explain(operator, "bob@other.example")["winner"] == "example_policy"
    assert explain(operator, "bob@partner.example")["winner"] == "[policy.default]"


def test_disabling_the_example_removes_it(operator):
    config = operator.directory / "config.toml"
    config.write_text(config.read_text().replace("disabled = []", 'disabled = ["example_policy"]'))
    listed = {p["name"]: p for p in operator.run("plugins", "--json").json()}["example_policy"]
    assert (listed["enabled"], listed["hooks"]) == (False, [])
    partner = explain(operator, "bob@partner.example")
    assert partner["winner"] == "[policy.default]"
    assert "example_policy" not in [answer["plugin"] for answer in partner["answers"]]
