"""The webhook events of a run's records, and delivery's retry rules (the HTTP POST faked:
tests/e2e/test_webhooks_e2e.py posts to real local servers)."""

from __future__ import annotations

import requests

from syncer.core.model import Event, Record, State, Webhook
from syncer.tools.webhooks import ATTEMPTS, Notification, deliver, notifications

SINCE = "2026-12-01T10:00:00Z"


def record(name: str, *events: tuple[str, str, str]) -> Record:
    return Record(
        name=name,
        tag="1.0",
        source=f"docker.io/library/{name}:1.0@sha256:{'a' * 64}",
        digest="sha256:" + "a" * 64,
        state=State.PROMOTED,
        events=[Event(at, event, detail) for at, event, detail in events],
    )


def test_only_this_runs_events_that_a_webhook_can_ask_for():
    recs = [
        record(
            "web",
            ("2026-12-01T09:59:59Z", "held", "before this run"),
            (SINCE, "scanned", "not an event for webhooks"),
            (SINCE, "cleared", "passes again"),
            ("2026-12-01T10:00:05Z", "lagging", "eu: refused"),
        ),
        record(
            "api",
            ("2026-12-01T10:01:00Z", "demoted", "1 critical"),
            ("2026-12-01T10:01:00Z", "flagged", "1 high"),
            ("2026-12-01T10:01:00Z", "failed", "boom"),
        ),
    ]
    found = notifications(recs, SINCE, [("db", "upstream unreachable")])
    assert [(n.event, n.image, n.tag, n.detail) for n in found] == [
        ("promoted", "web", "1.0", "passes again"),
        ("failed", "web", "1.0", "eu: refused"),
        ("demoted", "api", "1.0", "1 critical"),
        ("flagged", "api", "1.0", "1 high"),
        ("failed", "api", "1.0", "boom"),
        ("failed", "db", None, "upstream unreachable"),
    ]


def test_slack_text_escapes_its_control_characters():
    doc = Notification("held", "web", "1.0", None, "a <b> & c").payload("r1", "")
    assert doc["text"] == "syncer: web:1.0 held: a &lt;b&gt; &amp; c"
    assert doc["detail"] == "a <b> & c" and doc["run_url"] is None


def test_a_refusal_is_not_retried_and_a_failing_webhook_is_given_up_for_the_run():
    calls: list[str] = []
    answers = {"https://refuses.example/s3cret": 404, "https://down.example/s3cret": None}

    def post(url, document):
        calls.append(url)
        if answers[url] is None:
            raise requests.ConnectionError(f"cannot connect to {url}")
        return answers[url]

    sleeps: list[float] = []
    hooks = [Webhook("REFUSES", ("held",)), Webhook("DOWN", ("held",))]
    found = [Notification("held", f"img{i}", "1.0", None, "") for i in range(3)]
    warnings = deliver(
        hooks,
        found,
        {"REFUSES": "https://refuses.example/s3cret", "DOWN": "https://down.example/s3cret"},
        run="r1",
        post=post,
        sleep=sleeps.append,
    )
    assert calls.count("https://refuses.example/s3cret") == 1
    assert calls.count("https://down.example/s3cret") == ATTEMPTS
    assert sleeps == [1.0, 2.0]
    assert warnings == [
        "webhook REFUSES (settings.yaml): answered HTTP 404 (not retried: the request itself was "
        "refused); giving up on it for this run, 3 event(s) not delivered",
        "webhook DOWN (settings.yaml): could not be reached (ConnectionError) after 3 attempts; "
        "giving up on it for this run, 3 event(s) not delivered",
    ]
    assert not any("s3cret" in w for w in warnings)
