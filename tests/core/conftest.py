from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sealrelay.core.config import Config, parse_config


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Config]:
    """A config from a TOML-shaped dict, with its data directory in tmp_path."""

    def make(document: dict[str, Any] | None = None) -> Config:
        document = dict(document or {})
        document.setdefault("storage", {"data_dir": str(tmp_path / "var")})
        return parse_config(document, tmp_path / "config.toml")

    return make


@pytest.fixture
def install_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str, str], None]:
    """Install a plugin module as a distribution with a `sealrelay` entry point, the way pip
    would (a dist-info directory on sys.path), so that discovery is the real thing."""

    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))

    def install(name: str, source: str) -> None:
        module = f"sealrelay_{name}"
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        info = site / f"sealrelay_{name}-1.2.3.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: sealrelay-{name}\nVersion: 1.2.3\n"
        )
        (info / "entry_points.txt").write_text(f"[sealrelay]\n{name} = {module}\n")
        monkeypatch.delitem(__import__("sys").modules, module, raising=False)

    return install
