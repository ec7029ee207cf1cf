"""The "delayed" DSN (RFC 3464): a message still waiting after ``[delivery] delay_warning``
seconds is reported to its sender, once, while it is still being tried."""

from __future__ import annotations

import email
import email.message
import email.policy
import email.utils

import pytest

from sealrelay.exceptions import ConfigError
from sealrelay.spool.store import Spool
from tests.plugins.smtp.harness import Sink, config_for, make_message, running, wait_until


BUSY = "451 4.2.1 mailbox busy"


@pytest.fixture
def sink():
    server = Sink().start()
    yield server
    server.stop()


def fast_retries(tmp_path, port: int, **delivery):
    """Retries every second, so that a test sees several attempts past delay_warning."""
    delivery = {"retry_initial": 1, "retry_max_interval": 1, "max_age": 3600, **delivery}
    return config_for(tmp_path, smtp={"next_hop": f"smtp://127.0.0.1:{port}"}, delivery=delivery)


def attempts_of_the_original(spool: Spool) -> int:
    return max((e.state.attempts for e in spool.entries() if e.meta.kind == "outbound"), default=0)


def test_a_delayed_message_is_reported_to_its_sender_once_and_still_delivered(tmp_path, sink):
    sink.refuse_rcpt = lambda address: BUSY if address == "bob@example.net" else None
    config = fast_retries(tmp_path, sink.port, delay_warning=1)
    spool = Spool.for_config(config)
    with running(config) as relay:
        relay.send("alice@example.org", ["bob@example.net"], make_message("slow one"))
        [(sender, recipients, notice)] = sink.wait_for(1, timeout=30)
        # Recorded (`sealrelay queue show` reports it), so that no second notice follows.
        wait_until(
            lambda: [e.state.delay_notified for e in spool.entries()] == [True],
            what="the notice to be recorded",
        )
        # Tried twice more after the notice: no second one.
        seen = attempts_of_the_original(spool)
        wait_until(lambda: attempts_of_the_original(spool) >= seen + 2, what="two more attempts")
        assert len(sink.received) == 1
        sink.refuse_rcpt = lambda address: None  # the mailbox is free again
        received = sink.wait_for(2, timeout=30)
        relay.drain()
        wait_until(lambda: spool.entry_ids() == [], what="the entry to go")
    assert (sender, recipients) == ("<>", ["alice@example.org"])
    assert received[1][:2] == ("alice@example.org", ["bob@example.net"])
    assert len(sink.received) == 2

    report = email.message_from_bytes(notice, policy=email.policy.compat32)
    assert report["Subject"] == "Delayed Mail (still being retried)"
    assert report["Auto-Submitted"] == "auto-replied"
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    parts: dict[str, email.message.Message] = {}
    for part in report.walk():  # the first of each type: the status groups look text/plain
        parts.setdefault(part.get_content_type(), part)
    status = parts["message/delivery-status"].as_string()
    assert "Final-Recipient: rfc822; bob@example.net" in status
    assert "Action: delayed" in status
    assert "Status: 4.2.1" in status
    assert f"Diagnostic-Code: smtp; {BUSY}" in status
    # Tried until max_age after arrival.
    [until] = [line for line in status.splitlines() if line.startswith("Will-Retry-Until: ")]
    [arrival] = [line for line in status.splitlines() if line.startswith("Arrival-Date: ")]
    retry_until = email.utils.parsedate_to_datetime(until.split(": ", 1)[1])
    arrived = email.utils.parsedate_to_datetime(arrival.split(": ", 1)[1])
    assert 3599 <= (retry_until - arrived).total_seconds() <= 3601
    explanation = parts["text/plain"].get_payload()
    assert "you do not need to send the message again" in explanation
    assert "Subject: slow one" in parts["text/rfc822-headers"].as_string()


@pytest.mark.parametrize(
    ("sender", "delay_warning"),
    [("<>", 1), ("alice@example.org", 0)],
    ids=["null-sender", "switched-off"],
)
def test_no_delay_notice_to_the_null_sender_nor_when_switched_off(
    tmp_path, sink, sender, delay_warning
):
    sink.refuse_rcpt = lambda address: BUSY if address == "bob@example.net" else None
    config = fast_retries(tmp_path, sink.port, delay_warning=delay_warning)
    spool = Spool.for_config(config)
    with running(config) as relay:
        relay.send(sender, ["bob@example.net"], make_message("quiet"))
        wait_until(lambda: attempts_of_the_original(spool) >= 3, what="three attempts")
        relay.drain()
        # A notice would be in the spool or, delivered, at the sink (it takes alice@).
        assert [entry.meta.kind for entry in spool.entries()] == ["outbound"]
    assert sink.received == []


def test_delay_warning_must_not_be_negative(tmp_path):
    with pytest.raises(ConfigError, match=r"\[delivery\] delay_warning = -1 must be 0"):
        config_for(tmp_path, delivery={"delay_warning": -1})
