"""Policy resolution and certificate lookup at scale, through the hooks the bus calls.

    .venv/bin/python bench/policy.py [--postgres URL] [--subscribers N] [--rules N]
                                     [--certificates N]

Builds a store with 10,000 subscribers (in 50 groups), 1,000 rules of every pattern kind and
100,000 certificates (10 per subscriber), on SQLite and, when a URL is given (or
SEALRELAY_TEST_POSTGRES_URL is set), on PostgreSQL; then times lookups:

- cold: the first lookup of a pair or address (the rule set itself already loaded; its load
  is timed separately), so the database is read;
- cached: the same lookups again, answered from the in-memory cache.

The certificates are real: issued by an EC P-256 CA to one EC key (issuing is then cheap),
each with the subscriber's address; rows go in through the store's models in bulk, not
through ``cert import`` (which audits each one).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import peewee
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sealrelay.core.bus import MessageBus
from sealrelay.core.config import Config, parse_config
from sealrelay.core.envelope import Envelope
from sealrelay.core.master_key import ensure_master_key
from sealrelay.core.plugins import load_plugins
from sealrelay.plugins import BUILTIN_PLUGINS
from sealrelay.plugins.policy_sql import models, store
from sealrelay.plugins.policy_sql.certificates import CertificateFacts


GROUPS = 50
DOMAINS = 200
BATCH = 500


def address(number: int) -> str:
    return f"user{number}@d{number % DOMAINS}.example"


def issue_certificates(count: int, subscribers: int) -> Iterator[CertificateFacts]:
    """The CA certificate first, then *count* leaves it signed."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bench CA")])
    now = dt.datetime.now(dt.UTC)
    yield CertificateFacts.of(
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    for number in range(count):
        owner = address(number % subscribers)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, owner)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(number + 2)
            .not_valid_before(now - dt.timedelta(days=number % 300))
            .not_valid_after(now + dt.timedelta(days=30 + number % 700))
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(owner)]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        yield CertificateFacts.of(certificate)


def rule_patterns(count: int, subscribers: int) -> Iterator[tuple[str, str, int]]:
    """(sender, recipient, priority) covering every kind of pattern on both sides."""
    rng = random.Random(7)  # noqa: S311 - a reproducible workload, not crypto
    for number in range(count):
        kind = number % 10
        who = address(rng.randrange(subscribers))
        domain = f"d{rng.randrange(DOMAINS)}.example"
        group = f"g{rng.randrange(GROUPS)}"
        sender, recipient = {
            0: ("*", who),
            1: ("*", who),
            2: ("*", f"*@{domain}"),
            3: ("*", f"*@*.{domain}"),
            4: ("*", f"@{group}"),
            5: (f"@{group}", f"*@{domain}"),
            6: (f"*@{domain}", who),
            7: (who, "*"),
            8: (f"@{group}", f"@g{rng.randrange(GROUPS)}"),
            9: ("*", "*"),
        }[kind]
        yield sender, recipient, rng.randrange(3)


def fill(subscribers: int, rules: int, certificates: int) -> str:
    """Bulk rows through the models; returns how the certificates were made."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    db = models.database
    with db.atomic():
        models.Group.insert_many([{"name": f"g{n}"} for n in range(GROUPS)]).execute()
        group_ids = [g.id for g in models.Group.select().order_by(models.Group.id)]
        rows = [
            {
                "address": address(n),
                "lookup_key": address(n),
                "display_name": f"User {n}",
                "enabled": True,
                "created_at": now,
            }
            for n in range(subscribers)
        ]
        for start in range(0, len(rows), BATCH):
            models.Subscriber.insert_many(rows[start : start + BATCH]).execute()
        ids = [s.id for s in models.Subscriber.select().order_by(models.Subscriber.id)]
        members = [
            {"subscriber": sid, "group": group_ids[(n + k * 7) % GROUPS]}
            for n, sid in enumerate(ids)
            for k in range(2)
        ]
        for start in range(0, len(members), BATCH):
            models.Membership.insert_many(members[start : start + BATCH]).execute()
        models.Rule.insert_many(
            [
                {
                    "sender_pattern": sender,
                    "recipient_pattern": recipient,
                    "priority": priority,
                    "sign": ("clear", "opaque", "none")[n % 3],
                    "encrypt": ("if-possible", "always", "never")[n % 3],
                    "created_at": now,
                    "comment": "",
                }
                for n, (sender, recipient, priority) in enumerate(rule_patterns(rules, subscribers))
            ]
        ).execute()
    started = time.perf_counter()
    batch: list[CertificateFacts] = []

    def flush() -> None:
        with db.atomic():
            models.StoredCertificate.insert_many(
                [
                    {
                        "fingerprint": f.fingerprint,
                        "der": f.der,
                        "subject": f.subject,
                        "issuer": f.issuer,
                        "subject_hash": f.subject_hash,
                        "issuer_hash": f.issuer_hash,
                        "serial": f.serial,
                        "not_before": f.not_before,
                        "not_after": f.not_after,
                        "key_usages": "",
                        "is_ca": f.is_ca,
                        "source": "imported",
                        # Leaves are trusted through the chain (a signature check per
                        # certificate on a cold lookup), as imported ones are.
                        "trusted": False,
                        "trust_anchor": f.is_ca,
                        "capabilities": "aes256-gcm,aes256-cbc",
                        "created_at": now,
                    }
                    for f in batch
                ]
            ).execute()
            stored: dict[str, int] = dict(
                models.StoredCertificate.select(  # type: ignore[arg-type]
                    models.StoredCertificate.fingerprint, models.StoredCertificate.id
                )
                .where(models.StoredCertificate.fingerprint.in_([f.fingerprint for f in batch]))
                .tuples()
            )
            models.CertificateAddress.insert_many(
                [
                    {"certificate": stored[f.fingerprint], "lookup_key": key}
                    for f in batch
                    for key in f.addresses
                ]
            ).execute()
            models.Change.update(counter=models.Change.counter + 1).execute()
        batch.clear()

    for facts in issue_certificates(certificates, subscribers):
        batch.append(facts)
        if len(batch) == BATCH:
            flush()
    if batch:
        flush()
    seconds = time.perf_counter() - started
    return (
        f"{certificates:,} real certificates issued by one EC P-256 CA (stored as the trust "
        f"anchor) to one EC key, inserted in bulk through the models in {seconds:.1f} s"
    )


def timed(calls: Sequence[Callable[[], object]]) -> list[float]:
    """Milliseconds per call."""
    times = []
    for call in calls:
        started = time.perf_counter_ns()
        call()
        times.append((time.perf_counter_ns() - started) / 1e6)
    return times


def summary(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


@contextmanager
def relay(url: str, directory: Path) -> Iterator[tuple[Config, MessageBus]]:
    document = {
        "storage": {"url": url, "data_dir": str(directory / "var")},
        "security": {"master_key_file": str(directory / "var" / "master.key")},
    }
    config = parse_config(document, directory / "config.toml")
    ensure_master_key(config)
    plugins = load_plugins(config, builtins=BUILTIN_PLUGINS, entry_points=False)
    with MessageBus(plugins, config) as bus:
        yield config, bus


def run(name: str, url: str, args: argparse.Namespace, directory: Path) -> list[str]:
    with relay(url, directory) as (_, bus):
        print(f"[{name}] filling ...", file=sys.stderr)
        how = fill(args.subscribers, args.rules, args.certificates)
        print(f"[{name}] {how}", file=sys.stderr)
        rng = random.Random(11)  # noqa: S311
        pairs = [
            (address(rng.randrange(args.subscribers)), address(rng.randrange(args.subscribers)))
            for _ in range(args.samples)
        ]
        envelopes = [Envelope(sender=s, recipients=(r,)) for s, r in pairs]
        hook = bus.plugins.pm.hook
        store._cache.invalidate()
        load_ms = timed([lambda: store.resolve(*pairs[0])])[0]

        def resolve(envelope: Envelope) -> Callable[[], object]:
            return lambda: bus.resolve_policy(envelope.sender, envelope.recipients[0], envelope)

        def certificates(who: str) -> Callable[[], object]:
            return lambda: hook.sealrelay_recipient_certificates(address=who)

        resolve_cold = timed([resolve(e) for e in envelopes[1:]])
        resolve_cached = timed([resolve(e) for e in envelopes[1:]] * args.repeat)
        lookups = [r for _, r in pairs]
        store._cache.invalidate()
        certificates_cold = timed([certificates(who) for who in dict.fromkeys(lookups)])
        certificates_cached = timed([certificates(who) for who in lookups] * args.repeat)
    per_address = args.certificates // args.subscribers
    rows = [
        ("rule set load (1st lookup)", [load_ms]),
        ("resolve policy, cold", resolve_cold),
        ("resolve policy, cached", resolve_cached),
        (f"certificates ({per_address}/address), cold", certificates_cold),
        ("certificates, cached", certificates_cached),
    ]
    lines = []
    for label, times in rows:
        median, p99 = summary(times)
        lines.append(f"| {name} | {label} | {len(times):,} | {median:.4f} | {p99:.4f} |")
    return [f"{name}: {how}", *lines]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default=os.environ.get("SEALRELAY_TEST_POSTGRES_URL"))
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--rules", type=int, default=1_000)
    parser.add_argument("--certificates", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    results: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        results += run("sqlite", f"sqlite:///{tmp}/bench.db", args, Path(tmp))
    if args.postgres:
        schema = f"bench_{secrets.token_hex(4)}"
        admin = peewee.PostgresqlDatabase(args.postgres, prefer_psycopg3=True)
        admin.execute_sql(f"CREATE SCHEMA {schema}")  # type: ignore[no-untyped-call]
        try:
            separator = "&" if "?" in args.postgres else "?"
            url = f"{args.postgres}{separator}options=-csearch_path%3D{schema}"
            with tempfile.TemporaryDirectory() as tmp:
                results += run("postgresql", url, args, Path(tmp))
        finally:
            store.close()
            admin.execute_sql(f"DROP SCHEMA {schema} CASCADE")  # type: ignore[no-untyped-call]
            admin.close()
    else:
        results.append("postgresql: skipped (no --postgres URL, SEALRELAY_TEST_POSTGRES_URL unset)")
    notes = [line for line in results if not line.startswith("|")]
    table = [line for line in results if line.startswith("|")]
    print(
        f"{args.subscribers:,} subscribers, {args.rules:,} rules, "
        f"{args.certificates:,} certificates"
    )
    print(*notes, sep="\n")
    print("| backend | lookup | n | median ms | p99 ms |")
    print("|---|---|---|---|---|")
    print(*table, sep="\n")


if __name__ == "__main__":
    main()
