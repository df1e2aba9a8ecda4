"""Webhooks: after a run has saved its records, one JSON document per event is POSTed to each
webhook of ``settings.yaml`` that asked for that kind of event.

The document carries a Slack-compatible ``text`` (so a Slack or Mattermost incoming webhook
shows it as it is) and the event's fields for anything else (Harbor and DTR users wire these to
their own receivers). Delivery never fails the run: a webhook that is down, slow or refusing
costs at most ``ATTEMPTS`` tries of one event, with backoff, and is then given up for the rest
of the run; what was not delivered is a warning. The URL is a secret (a Slack webhook's path is
its key): it comes from the environment variable the catalog names, is redacted from every
message (``syncer.tools.endpoints.remember_secrets``), and no message here is made from an exception's
text, which would quote it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import requests

from syncer.core.model import Record, Webhook
from syncer.core.redact import redact

ATTEMPTS = 3
BACKOFF = 1.0  # seconds before the second attempt, doubled before each later one
TIMEOUT = (5.0, 10.0)  # connect, read
MAX_TEXT = 3000  # Slack truncates a message's text near 4,000 characters

# The record events a run makes, as the webhook events they are ("cleared": promoted again;
# "lagging": a replica that could not be brought in step, which fails the run).
_EVENTS = {
    "promoted": "promoted",
    "cleared": "promoted",
    "held": "held",
    "flagged": "flagged",
    "demoted": "demoted",
    "failed": "failed",
    "lagging": "failed",
}


@dataclass(frozen=True)
class Notification:
    event: str  # one of model.WEBHOOK_EVENTS
    image: str
    tag: str | None  # None for a failure of the whole catalog entry
    digest: str | None
    detail: str

    def payload(self, run: str, run_url: str, reports: str = "reports") -> dict[str, object]:
        subject = f"{self.image}:{self.tag}" if self.tag else self.image
        text = _slack(f"syncer: {subject} {self.event}" + (f": {self.detail}" if self.detail else ""))
        return {
            "text": text[:MAX_TEXT],
            "event": self.event,
            "image": self.image,
            "tag": self.tag,
            "digest": self.digest,
            "detail": self.detail,
            "run": run,
            "run_url": run_url or None,
            "report": f"{reports}/images/{self.image}.md",
        }


def _slack(value: str) -> str:
    # The three characters Slack's mrkdwn reads as control sequences (<url|label>, entities).
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def notifications(
    records: Iterable[Record], since: str, entry_failures: Iterable[tuple[str, str]] = ()
) -> list[Notification]:
    """The run's events: every record event at or after ``since`` (the run's start, in the
    events' own format) that a webhook can ask for, in order, and each entry that failed."""
    out = []
    for rec in records:
        for e in rec.events:
            if e.at >= since and e.event in _EVENTS:
                out.append(Notification(_EVENTS[e.event], rec.name, rec.tag, rec.digest, e.detail))
    out += [Notification("failed", name, None, None, message) for name, message in entry_failures]
    return out


Post = Callable[[str, dict[str, object]], int]


def _post(url: str, document: dict[str, object]) -> int:
    response = requests.post(url, json=document, timeout=TIMEOUT, allow_redirects=False)
    response.close()
    return response.status_code


def deliver(
    hooks: Iterable[Webhook],
    found: list[Notification],
    environ: Mapping[str, str],
    *,
    run: str,
    run_url: str = "",
    reports: str = "reports",
    post: Post = _post,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """POSTs each notification to each webhook that wants its event; returns warnings."""
    warnings = []
    for hook in hooks:
        wanted = [n for n in found if n.event in hook.events]
        if not wanted:
            continue
        name = f"webhook {hook.url_env} ({hook.location or 'settings.yaml'})"
        url = environ.get(hook.url_env, "")
        if not url:
            warnings.append(
                f"{name}: environment variable {hook.url_env} is not set; {len(wanted)} event(s) not sent"
            )
            continue
        for sent, n in enumerate(wanted):
            problem = _send(url, n.payload(run, run_url, reports), post, sleep)
            if problem:
                warnings.append(
                    redact(
                        f"{name}: {problem}; giving up on it for this run, "
                        f"{len(wanted) - sent} event(s) not delivered"
                    )
                )
                break
    return warnings


def _send(url: str, document: dict[str, object], post: Post, sleep: Callable[[float], None]) -> str:
    """'' when delivered, else why not. Retried: network errors, 429 and 5xx."""
    problem = ""
    for attempt in range(ATTEMPTS):
        if attempt:
            sleep(BACKOFF * 2 ** (attempt - 1))
        try:
            status = post(url, document)
        except requests.Timeout:
            problem = "no answer in time"
            continue
        except requests.RequestException as err:
            # The exception's text holds the URL: only its kind is said.
            problem = f"could not be reached ({type(err).__name__})"
            continue
        if 200 <= status < 300:
            return ""
        problem = f"answered HTTP {status}"
        if status != 429 and status < 500:
            return problem + " (not retried: the request itself was refused)"
    return f"{problem} after {ATTEMPTS} attempts"
