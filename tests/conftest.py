from __future__ import annotations

import os
import shutil

import pytest


def services_required() -> bool:
    """CI sets SEALRELAY_REQUIRE_SERVICES=1: a missing service or tool then fails the test."""
    return os.environ.get("SEALRELAY_REQUIRE_SERVICES", "") not in ("", "0")


def require_executable(name: str) -> str:
    """The path of an external program a test needs, or a loud skip (a failure in CI)."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed (apt-get install {name}); this test needs it as a peer"
        if services_required():
            pytest.fail(reason)
        pytest.skip(f"SKIPPED LOUDLY: {reason}")
    return path
