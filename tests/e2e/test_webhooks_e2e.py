"""Webhooks through the real CLI: a run POSTs one JSON document per event to a receiver on
127.0.0.1, retries one that answers 500, gives up on one that is not there, and neither fails
the run nor shows a webhook URL anywhere."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler

from syncer.core.model import State
from tests.harness.images import alpine_files, build_image, debian_files
from tests.harness.localserver import LocalServer
from tests.harness.trivydb import Advisory

CLEAN_ALPINE = (("musl", "1.2.5-r0", "musl"), ("busybox", "1.36.1-r29", "busybox"))
VULNERABLE_DEBIAN = (("base-files", "12.4+deb12u8", "base-files"), ("libssl3", "3.0.11-1", "openssl"))
CRITICAL = Advisory("CVE-2099-1001", "debian 12", "openssl", "CRITICAL", "3.0.15-1", title="openssl: planted")
SECRET = "T0KEN-in-the-path-4f1c"


def receiver(status: int):
    """A webhook receiver answering ``status``; returns (server, the documents it got)."""
    got: list[tuple[str, dict]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                got.append((self.path, json.loads(body)))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    return LocalServer(Handler), got


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_posts_each_event_retries_and_survives_dead_webhooks(world):
    world.db.write((CRITICAL,))
    world.push("library/alpine:3.20", build_image(alpine_files(CLEAN_ALPINE)))
    nginx = world.push("library/nginx:1.27.3", build_image(debian_files(VULNERABLE_DEBIAN)))
    world.images("""
        images:
          - source: alpine
            tags: ["3.20"]
          - source: nginx
            tags: ["1.27.3"]
    """)
    world.write_settings(
        extra="""
        webhooks:
          - url_env: HOOK_OK
            events: [held, promoted, failed]
          - url_env: HOOK_DEAD
            events: [held]
          - url_env: HOOK_BROKEN
            events: [promoted]
    """
    )
    ok, got = receiver(200)
    broken, tried = receiver(500)
    dead = f"http://127.0.0.1:{closed_port()}/hooks/{SECRET}-dead"
    world.env.update(
        HOOK_OK=f"{ok.url}/hooks/{SECRET}", HOOK_DEAD=dead, HOOK_BROKEN=f"{broken.url}/hooks/{SECRET}-broken"
    )
    with ok, broken:
        proc = world.run()  # exit 0: webhooks never fail the run
        assert world.record("nginx", "1.27.3").state is State.HELD

        documents = sorted((doc for _, doc in got), key=lambda d: d["image"])
        assert [(d["event"], d["image"], d["tag"]) for d in documents] == [
            ("promoted", "alpine", "3.20"),
            ("held", "nginx", "1.27.3"),
        ]
        held = documents[1]
        assert held["digest"] == nginx
        assert held["report"] == "reports/images/nginx.md"
        assert "CVE-2099-1001" in held["detail"] and "1 critical vulnerability (max 0)" in held["detail"]
        assert held["text"] == f"syncer: nginx:1.27.3 held: {held['detail']}"
        assert {path for path, _ in got} == {f"/hooks/{SECRET}"}

        assert len(tried) == 3, "a 500 is retried, a bounded number of times"
        assert "webhook HOOK_BROKEN" in proc.stderr and "answered HTTP 500 after 3 attempts" in proc.stderr
        assert "webhook HOOK_DEAD" in proc.stderr and "could not be reached" in proc.stderr
        everything = (
            proc.stdout
            + proc.stderr
            + "".join(p.read_text() for p in world.reports.rglob("*") if p.is_file())
        )
        assert SECRET not in everything and dead not in everything, "a webhook URL is a secret"
        assert "127.0.0.1" not in proc.stderr
        assert SECRET not in json.dumps([doc for _, doc in got]), "nor is it in a document"

        # Nothing new: nobody is told again.
        before = len(got)
        world.run()
        assert len(got) == before and len(tried) == 3


def test_an_unset_webhook_variable_is_a_warning(world):
    world.db.write(())
    world.push("library/alpine:3.20", build_image(alpine_files(CLEAN_ALPINE)))
    world.images("""
        images:
          - source: alpine
            tags: ["3.20"]
    """)
    world.write_settings(
        extra="""
        webhooks:
          - url_env: HOOK_UNSET
            events: [promoted]
    """
    )
    proc = world.run()
    assert "environment variable HOOK_UNSET is not set; 1 event(s) not sent" in proc.stderr
    assert world.record("alpine", "3.20").state is State.PROMOTED
