"""syncer run end to end through a real registry playing Hub, a real trusted registry,
real skopeo, real Trivy with a generated database, and our cosign-format signatures."""

from __future__ import annotations

import textwrap

from syncer.core import markdown
from syncer.core.model import State
from tests.harness.images import alpine_files, build_image, debian_files, python_package_files
from tests.harness.trivydb import Advisory

CLEAN_ALPINE = (("musl", "1.2.5-r0", "musl"), ("busybox", "1.36.1-r29", "busybox"))
VULNERABLE_DEBIAN = (("base-files", "12.4+deb12u8", "base-files"), ("libssl3", "3.0.11-1", "openssl"))
ADVISORIES = (
    Advisory("CVE-2099-1001", "debian 12", "openssl", "CRITICAL", "3.0.15-1", title="openssl: planted"),
    Advisory("CVE-2099-1002", "alpine 3.20", "busybox", "LOW", "1.36.2-r0", title="busybox: low"),
)


def test_clean_image_promoted_vulnerable_held_and_rerun_is_noop(world):
    world.db.write(ADVISORIES)
    alpine = world.push("library/alpine:3.20", build_image(alpine_files(CLEAN_ALPINE)))
    nginx = world.push("library/nginx:1.27.3", build_image(debian_files(VULNERABLE_DEBIAN)))
    world.images("""
        images:
          - source: alpine
            tags: ["3.20"]
          - source: docker.io/library/nginx
            tags: ["1.27.3"]
    """)
    proc = world.run()

    alp = world.record("alpine", "3.20")
    assert alp.state is State.PROMOTED, proc.stderr
    assert alp.digest == alpine and alp.promoted_digest == alpine
    assert alp.signatures == ["ci"]
    assert world.digest_at(world.target, "approved/alpine", "3.20") == alpine
    assert world.digest_at(world.target, "quarantine/alpine", "3.20") == alpine

    ngx = world.record("nginx", "1.27.3")
    assert ngx.state is State.HELD
    assert any("CVE-2099-1001" in r and "critical" in r for r in ngx.reasons), ngx.reasons
    assert world.digest_at(world.target, "approved/nginx", "1.27.3") is None
    assert world.digest_at(world.target, "quarantine/nginx", "1.27.3") == nginx
    assert [e.event for e in ngx.events] == ["discovered", "mirrored", "scanned", "held"]

    index = (world.reports / "README.md").read_text()
    assert "alpine" in index and "nginx" in index

    before = world.tree()
    again = world.run()
    assert world.tree() == before, "a run with nothing new must write nothing"
    assert "Nothing changed" in again.stdout


def _nginx_world(world, policy_extra: str = ""):
    world.db.write(ADVISORIES)
    digest = world.push("library/nginx:1.27.3", build_image(debian_files(VULNERABLE_DEBIAN)))
    world.images("""
        images:
          - source: nginx
            tags: ["1.27.3"]
    """)
    if policy_extra:
        world.policy(
            "default",
            textwrap.dedent("""
            vulnerabilities:
              max: {critical: 0, high: 0}
              ignore_unfixed: true
            signers: [ci]
        """)
            + policy_extra,
        )
    return digest


def test_exception_lets_a_held_image_through_without_a_new_upstream_copy(world):
    digest = _nginx_world(world)
    world.write(
        "exceptions/old.yaml",
        """
        exceptions:
          - vulnerability: CVE-2099-1001
            images: ["ngin*"]
            expires: 2020-01-31
            reason: "expired long ago"
    """,
    )
    world.run()
    rec = world.record("nginx", "1.27.3")
    assert rec.state is State.HELD
    assert any("expired on 2020-01-31" in r for r in rec.reasons), rec.reasons

    upstream_gets = world.hub.count("GET", "/manifests/")
    world.write(
        "exceptions/old.yaml",
        """
        exceptions:
          - vulnerability: CVE-2099-1001
            images: ["ngin*"]
            expires: 2099-01-31
            reason: "not reachable in our use"
    """,
    )
    world.run()
    rec = world.record("nginx", "1.27.3")
    assert rec.state is State.PROMOTED, rec.reasons
    assert world.digest_at(world.target, "approved/nginx", "1.27.3") == digest
    assert world.hub.count("GET", "/manifests/") == upstream_gets, "re-evaluation must not pull from upstream"


def test_manual_approval_holds_until_the_digest_is_approved(world):
    digest = _nginx_world(world, "approval: manual\n")
    world.db.write(())  # nothing vulnerable: only the approval is missing
    world.run()
    rec = world.record("nginx", "1.27.3")
    assert rec.state is State.HELD
    assert any("manual approval required" in r for r in rec.reasons), rec.reasons

    world.write(
        "approvals/web.yaml",
        f"""
        approvals:
          - image: nginx
            digest: "sha256:{"0" * 64}"
            by: "@alice"
            reason: "some other digest"
    """,
    )
    world.run()
    assert world.record("nginx", "1.27.3").state is State.HELD

    world.write(
        "approvals/web.yaml",
        f"""
        approvals:
          - image: nginx
            digest: "{digest}"
            by: "@alice"
            reason: "reviewed"
    """,
    )
    world.run()
    rec = world.record("nginx", "1.27.3")
    assert rec.state is State.PROMOTED
    assert world.digest_at(world.target, "approved/nginx", "1.27.3") == digest
    # The approver is part of the record: who let the digest in, where, and why.
    approval = "@alice (catalog/approvals/web.yaml): reviewed"
    assert [e.detail for e in rec.events if e.event == "promoted"] == [
        f"{digest} to {world.target.host}/approved/nginx:1.27.3, signed by ci; approved by {approval}"
    ]
    page = (world.reports / "images" / "nginx.md").read_text()
    assert f"- Approved by: {markdown.text(approval)}\n" in page, page  # "@" kept from mentioning


def _promote_clean_then_update_db(world, on_regression: str):
    world.db.write(())
    digest = _nginx_world(world, f"on_regression: {on_regression}\n")
    world.db.write(())
    world.run()
    assert world.record("nginx", "1.27.3").state is State.PROMOTED
    world.db.write(ADVISORIES)  # newer database, now with a critical for openssl
    world.run()
    return digest, world.record("nginx", "1.27.3")


def test_database_update_flags_a_promoted_image(world):
    digest, rec = _promote_clean_then_update_db(world, "flag")
    assert rec.state is State.FLAGGED
    assert any("CVE-2099-1001" in r for r in rec.reasons)
    assert rec.scan.db_updated_at > "2025-01-02"
    assert world.digest_at(world.target, "approved/nginx", "1.27.3") == digest  # flag keeps it
    assert [e.event for e in rec.events][-2:] == ["scanned", "flagged"]


def test_database_update_demotes_a_promoted_image(world):
    digest, rec = _promote_clean_then_update_db(world, "demote")
    assert rec.state is State.DEMOTED
    assert rec.promoted_digest is None
    assert world.digest_at(world.target, "approved/nginx", "1.27.3") is None
    assert world.digest_at(world.target, "quarantine/nginx", "1.27.3") == digest
    assert "demoted" in [e.event for e in rec.events]


def test_unchanged_upstream_and_database_scans_nothing(world, tmp_path):
    _nginx_world(world)
    world.run()
    broken = tmp_path / "trivy-must-not-run"
    broken.write_text("#!/bin/sh\necho 'trivy was run' >&2\nexit 3\n")
    broken.chmod(0o755)
    world.env["SYNCER_TRIVY"] = str(broken)
    before = world.tree()
    proc = world.run()
    assert world.tree() == before, proc.stderr


def test_broken_trivy_promotes_nothing_and_the_next_run_recovers(world, tmp_path):
    world.db.write(())
    digest = world.push("library/alpine:3.20", build_image(alpine_files(CLEAN_ALPINE)))
    world.images("""
        images:
          - source: alpine
            tags: ["3.20"]
    """)
    broken = tmp_path / "trivy"
    broken.write_text("#!/bin/sh\necho 'FATAL: simulated scanner crash' >&2\nexit 1\n")
    broken.chmod(0o755)
    world.env["SYNCER_TRIVY"] = str(broken)
    proc = world.run(expect=1)
    rec = world.record("alpine", "3.20")
    assert rec.state is State.FAILED
    assert any("simulated scanner crash" in r for r in rec.reasons), (rec.reasons, proc.stderr)
    assert world.digest_at(world.target, "approved/alpine", "3.20") is None

    del world.env["SYNCER_TRIVY"]
    world.run()
    rec = world.record("alpine", "3.20")
    assert rec.state is State.PROMOTED
    assert world.digest_at(world.target, "approved/alpine", "3.20") == digest
    assert [e.event for e in rec.events].count("mirrored") == 1, "the quarantined copy is reused"


def test_a_moved_tag_is_promoted_as_a_new_digest_and_old_signatures_do_not_carry_over(world):
    from syncer.trail.ledger import Ledger

    world.db.write(())
    first = world.push("library/alpine:3.20", build_image(alpine_files(CLEAN_ALPINE)))
    world.images("""
        images:
          - source: alpine
            tags: ["3.20"]
    """)
    world.run()
    ledger = Ledger(str(world.reports))
    rec = ledger.load("alpine", "3.20")
    rec.signatures = ["alice", "ci"]  # a content administrator approved the first digest
    ledger.save(rec)

    second = world.push("library/alpine:3.20", build_image(alpine_files(CLEAN_ALPINE[:1])))
    assert second != first
    world.run()
    rec = world.record("alpine", "3.20")
    assert rec.state is State.PROMOTED and rec.digest == rec.promoted_digest == second
    assert rec.signatures == ["ci"], "alice signed the old digest, not this one"
    assert world.digest_at(world.target, "approved/alpine", "3.20") == second
    moved = [e for e in rec.events if e.event == "moved"]
    assert len(moved) == 1 and first in moved[0].detail and second in moved[0].detail


def test_denied_license_and_image_age_hold_through_real_trivy(world):
    world.db.write(())
    world.push(
        "library/python:3.12",
        build_image(
            {
                **debian_files(VULNERABLE_DEBIAN),
                **python_package_files("copyleftlib", "1.0", license="AGPL-3.0-only"),
            },
            created="2026-10-01T00:00:00Z",
        ),
    )
    world.push(
        "library/debian:12", build_image(debian_files(VULNERABLE_DEBIAN), created="2020-01-01T00:00:00Z")
    )
    world.images("""
        images:
          - source: python
            tags: ["3.12"]
          - source: debian
            tags: ["12"]
    """)
    world.policy(
        "default",
        textwrap.dedent("""
        vulnerabilities:
          max: {critical: 0, high: 0}
        licenses:
          deny: [AGPL-3.0-only]
        max_age_days: 365
        signers: [ci]
    """),
    )
    world.run()
    python = world.record("python", "3.12")
    assert python.state is State.HELD
    assert (
        len(python.reasons) == 1
        and "AGPL-3.0-only" in python.reasons[0]
        and "copyleftlib" in python.reasons[0]
    ), python.reasons
    assert any(lic.license == "AGPL-3.0-only" for lic in python.scan.licenses)
    old = world.record("debian", "12")
    assert old.state is State.HELD
    assert len(old.reasons) == 1 and "2020-01-01" in old.reasons[0] and "max 365" in old.reasons[0], (
        old.reasons
    )


def test_tags_sharing_a_digest_are_pulled_from_upstream_once(world):
    world.db.write(())
    image = build_image(alpine_files(CLEAN_ALPINE))
    digest = world.push("library/alpine:3.20", image)
    world.images("""
        images:
          - source: alpine
            tags: ["3.20"]
    """)
    world.run()
    one_copy = world.hub.count("GET", "/manifests/")
    assert one_copy >= 1

    for tag in ("3", "latest"):
        world.push(f"library/alpine:{tag}", image)
    busybox = build_image(alpine_files(CLEAN_ALPINE[1:]))
    for tag in ("1.36", "stable"):
        world.push(f"library/busybox:{tag}", busybox)
    world.images("""
        images:
          - source: alpine
            tags: ["3.20", "3", "latest"]
          - source: busybox
            tags: ["1.36", "stable"]
    """)
    world.run("--jobs", "3")
    # alpine was already in quarantine; busybox's two new tags cost one upstream copy.
    assert world.hub.count("GET", "/manifests/") == 2 * one_copy
    assert world.record("busybox", "stable").state is State.PROMOTED
    for tag in ("3.20", "3", "latest"):
        rec = world.record("alpine", tag)
        assert rec.state is State.PROMOTED and rec.digest == digest
        assert world.digest_at(world.target, "approved/alpine", tag) == digest
