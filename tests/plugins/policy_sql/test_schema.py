"""The versioned schema: created by init, upgraded in place, never recreated, never downgraded."""

from __future__ import annotations

import datetime as dt

import pytest

from sealrelay import SealrelayError
from sealrelay.core.bus import MessageBus
from sealrelay.core.commands import CommandContext, CommandRegistry
from sealrelay.core.envelope import Envelope
from sealrelay.plugins.policy_sql import models
from sealrelay.plugins.policy_sql.migrations import SCHEMA, SCHEMA_VERSION


def run_init(admin):
    return admin("init").data["steps"]


def test_init_creates_the_schema_once(admin, backend):
    # the bus fixture already opened the store: the schema exists, init has nothing to do
    steps = run_init(admin)
    assert not any(step.startswith("policy store") for step in steps)
    with backend.raw() as db:
        assert db.execute_sql(
            "SELECT value FROM sr_meta WHERE key = 'schema_version'"
        ).fetchone() == (str(SCHEMA_VERSION),)


def test_the_models_match_the_migrated_schema(bus, backend):
    with backend.raw() as db:
        for model in models.MODELS:
            columns = {
                column.name
                for column in db.get_columns(model._meta.table_name, schema=_schema(db, backend))
            }
            fields = {field.column_name for field in model._meta.sorted_fields}
            assert columns == fields, model.__name__


def _schema(db, backend):
    """The schema the test's tables are in (each PostgreSQL test has its own)."""
    if backend.name == "postgresql":
        return db.execute_sql("SELECT current_schema()").fetchone()[0]
    return None


def create_version_1(db, postgres: bool) -> None:
    """A database as the first release of the schema left it, with some data in it."""
    types = (
        {"pk": "SERIAL PRIMARY KEY", "blob": "BYTEA"}
        if postgres
        else {
            "pk": "INTEGER PRIMARY KEY AUTOINCREMENT",
            "blob": "BLOB",
        }
    )
    for statement in SCHEMA.versions[1]():
        db.execute_sql(statement.format(**types))
    now = dt.datetime(2026, 1, 2, 3, 4, 5)

    def run(statement, params=()):
        db.execute_sql(statement.replace("?", db.param), params)

    run("INSERT INTO sr_meta (key, value) VALUES (?, ?)", ("schema_version", "1"))
    run(
        "INSERT INTO sr_subscribers (address, lookup_key, display_name, enabled, created_at) "
        "VALUES (?, ?, ?, ?, ?)",
        ("Olga@example.org", "olga@example.org", "Olga", True, now),
    )
    run("INSERT INTO sr_groups (name) VALUES (?)", ("finance",))
    run("INSERT INTO sr_group_members (subscriber_id, group_id) VALUES (1, 1)")
    run(
        "INSERT INTO sr_rules "
        "(sender_pattern, recipient_pattern, sign, encrypt, priority, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        ("@finance", "*@bank.example", "opaque", "always", 2, now),
    )


@pytest.fixture
def version_1_database(backend, make_config):
    db = backend.raw()
    if backend.sqlite_file is not None:
        backend.sqlite_file.parent.mkdir(parents=True, exist_ok=True)
    with db:
        create_version_1(db, postgres=backend.name == "postgresql")
    return backend


def test_a_version_1_database_is_upgraded_and_keeps_its_data(version_1_database, config, plugins):
    registry = CommandRegistry.from_plugins(plugins)
    context = CommandContext(config=config, plugins=plugins, actor="test:admin")
    steps = registry.execute("init", {}, context).data["steps"]
    assert f"policy store: upgraded schema from version 1 to {SCHEMA_VERSION}" in steps
    with MessageBus(plugins, config) as bus:
        envelope = Envelope(sender="olga@example.org", recipients=("teller@bank.example",))
        policy = bus.resolve_policy(envelope.sender, envelope.recipients[0], envelope)
        assert (policy.sign, policy.encrypt) == ("opaque", "always")
        assert policy.origin == "rule 1: @finance -> *@bank.example (priority 2)"
        # what version 2 added works on the upgraded database
        rule = registry.execute(
            "policy add",
            {"sender": "*", "recipient": "*@bank.example", "comment": "v2 column"},
            context,
        )
        assert rule.data["comment"] == "v2 column"
    subscribers = registry.execute("subscriber list", {}, context).data
    assert subscribers == [
        {
            "address": "Olga@example.org",
            "name": "Olga",
            "groups": ["finance"],
            "enabled": True,
            "has_credentials": False,
        }
    ]
    again = registry.execute("init", {}, context).data["steps"]
    assert not any(step.startswith("policy store") for step in again)


def test_a_newer_schema_is_refused_not_touched(backend, config, plugins):
    registry = CommandRegistry.from_plugins(plugins)
    context = CommandContext(config=config, plugins=plugins, actor="test:admin")
    registry.execute("init", {}, context)
    with backend.raw() as db:
        db.execute_sql(
            f"UPDATE sr_meta SET value = {db.param} WHERE key = 'schema_version'",  # noqa: S608
            (str(SCHEMA_VERSION + 1),),
        )
    with pytest.raises(
        SealrelayError, match=r"newer than this sealrelay knows .*upgrade sealrelay"
    ):
        registry.execute("init", {}, context)
