from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from sealrelay.core.config import load_config, parse_config
from sealrelay.exceptions import ConfigError


REPO = Path(__file__).resolve().parents[2]


def test_embedded_default_loads_and_matches_the_code_defaults(tmp_path):
    config = load_config(REPO / "config.toml")
    assert config.default_policy.sign == "clear"
    assert config.default_policy.encrypt == "if-possible"
    assert config.smtp.listen == "127.0.0.1:10025"
    assert config.storage_url == f"sqlite:///{REPO / 'var' / 'sealrelay.db'}"
    # The reference file documents every key with its default value.
    assert parse_config({}, tmp_path / "c.toml") == parse_config(
        tomllib.loads((REPO / "config.toml").read_text()), tmp_path / "c.toml"
    )


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"smpt": {}}, "unknown section [smpt]"),
        ({"smtp": {"lisen": "x"}}, "[smtp]: unknown key 'lisen'"),
        ({"smtp": {"listen": "localhost"}}, "[smtp] listen = 'localhost': expected HOST:PORT"),
        ({"smtp": {"next_hop": "ftp://x"}}, "expected maildir:PATH or smtp://HOST:PORT"),
        ({"smtp": {"pipeline_threads": 0}}, "[smtp] pipeline_threads = 0 must be at least 1"),
        ({"keypool": {"size": "20"}}, "[keypool] size = '20' must be an integer"),
        ({"keypool": {"size": 5, "threshold": 9}}, "threshold = 9 must be between 0 and size"),
        ({"stages": {"sign": "yes"}}, "[stages] sign = 'yes' must be true or false"),
        ({"plugins": {"disabled": "x"}}, "[plugins] disabled must be a list of strings"),
        ({"policy": {"default": {"sign": "always"}}}, "sign = 'always' is not allowed"),
        ({"policy": {"default": {"encrypt": "maybe"}}}, "use one of: never, if-possible, always"),
        ({"policy": {"default": {"colour": "red"}}}, "[policy.default]: unknown key 'colour'"),
        ({"policy": {"rules": {}}}, "only [policy.default] belongs in config.toml"),
        ({"storage": {"url": "mysql://x"}}, "expected sqlite:///PATH or postgresql://"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(tmp_path, document, message):
    with pytest.raises(ConfigError) as raised:
        parse_config(document, tmp_path / "config.toml")
    assert message in str(raised.value)


def test_malformed_toml_is_one_clear_error(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("[smtp\nlisten = 1\n")
    with pytest.raises(ConfigError, match=r"is not valid TOML: .*line 1"):
        load_config(path)


def test_missing_file_says_how_to_fix(tmp_path):
    with pytest.raises(ConfigError, match="pass -c PATH"):
        load_config(tmp_path / "nowhere.toml")


def test_paths_are_relative_to_the_config_file(tmp_path):
    config = parse_config(
        {"storage": {"url": "sqlite:///db/x.db", "data_dir": "state"}}, tmp_path / "c.toml"
    )
    assert config.data_dir == tmp_path / "state"
    assert config.storage_url == f"sqlite:///{tmp_path / 'db' / 'x.db'}"
    absolute = parse_config({"storage": {"url": "sqlite:////srv/x.db"}}, tmp_path / "c.toml")
    assert absolute.storage_url == "sqlite:////srv/x.db"


def test_storage_url_may_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SEALRELAY_STORAGE_URL", "postgresql://relay@db:5432/sealrelay")
    config = parse_config({}, tmp_path / "c.toml")
    assert config.storage_url == "postgresql://relay@db:5432/sealrelay"


def test_plugin_sections_reach_their_plugin(tmp_path):
    config = parse_config(
        {"plugins": {"disabled": ["audit_log"], "example_policy": {"domain": "p.example"}}},
        tmp_path / "c.toml",
    )
    assert config.plugins.disabled == ("audit_log",)
    assert config.plugin_config("example_policy") == {"domain": "p.example"}
    assert config.plugin_config("other") == {}


def test_config_is_frozen(tmp_path):
    config = parse_config({}, tmp_path / "c.toml")
    with pytest.raises(AttributeError):
        config.smtp = None  # type: ignore[misc,assignment]
