"""Running the real ``sealrelay`` command in a scratch directory, as an operator would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs


REPO = Path(__file__).resolve().parents[1]


@attrs.frozen
class Run:
    status: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@attrs.define
class Operator:
    """A directory holding a copy of the embedded-default config.toml."""

    directory: Path
    pythonpath: list[str] = attrs.Factory(list)

    @classmethod
    def in_directory(cls, directory: Path) -> Operator:
        shutil.copy(REPO / "config.toml", directory / "config.toml")
        return cls(directory)

    def run(
        self, *arguments: str, stdin: bytes | None = None, env: dict[str, str] | None = None
    ) -> Run:
        # The operator's own SEALRELAY_* settings only, never the test runner's.
        environment = {k: v for k, v in os.environ.items() if not k.startswith("SEALRELAY_")}
        environment.update(env or {})
        if self.pythonpath:
            environment["PYTHONPATH"] = os.pathsep.join(self.pythonpath)
        completed = subprocess.run(
            [sys.executable, "-m", "sealrelay", *arguments],
            cwd=self.directory,
            input=stdin,
            capture_output=True,
            env=environment,
            timeout=120,
            check=False,
        )
        return Run(completed.returncode, completed.stdout.decode(), completed.stderr.decode())

    def append_config(self, text: str) -> None:
        with (self.directory / "config.toml").open("a") as config:
            config.write("\n" + text + "\n")
