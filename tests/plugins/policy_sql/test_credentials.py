"""Subscriber logins (SMTP AUTH, HTTP): argon2id hashes in the store, checked through the bus."""

from __future__ import annotations

import pytest

from sealrelay.core.bus import MessageBus
from tests.plugins.policy_sql.conftest import Admin


@pytest.fixture
def alice(admin: Admin, tmp_path) -> str:
    (tmp_path / "password").write_text("correct horse battery staple\n")
    admin("subscriber add", address="Alice@Example.org", password_file=tmp_path / "password")
    return "Alice@example.org"


def test_right_password_logs_in_as_the_subscriber(bus: MessageBus, alice: str):
    assert bus.check_credentials("alice@EXAMPLE.org", "correct horse battery staple") == alice


@pytest.mark.parametrize(
    ("login", "password"),
    [
        ("alice@example.org", "correct horse battery stapler"),
        ("alice@example.org", ""),
        ("bob@example.org", "correct horse battery staple"),
        ("not an address", "correct horse battery staple"),
    ],
)
def test_anything_else_is_refused(bus: MessageBus, alice: str, login: str, password: str):
    assert bus.check_credentials(login, password) is None


def test_subscriber_without_password_cannot_log_in(bus: MessageBus, admin: Admin):
    admin("subscriber add", address="nopass@example.org")
    assert bus.check_credentials("nopass@example.org", "") is None


def test_password_is_never_stored_in_the_clear(backend, bus: MessageBus, alice: str):
    with backend.raw() as database:
        [(stored,)] = database.execute_sql("SELECT credentials FROM sr_subscribers").fetchall()
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored
