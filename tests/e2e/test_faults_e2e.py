"""Fault tolerance of ``syncer run`` end to end: each test injects one fault into real parts
(registry processes, skopeo, Trivy, the syncer process itself), then checks SPEC.md's
invariants — nothing in approved/ without a record naming that digest and a valid signature of
the pipeline's key; fail closed; one image's failure does not stop the others — and that a
rerun converges to the right final state."""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from pathlib import Path

import requests

from syncer.core.model import State
from syncer.stages.signatures import read_signatures, verify_signers
from syncer.tools.registry import RegistryClient
from syncer.trail.ledger import Ledger
from tests.harness.faultproxy import INJECTED, MALFORMED_DIGESTS, FaultProxy
from tests.harness.images import alpine_files, build_image

CLEAN_ALPINE = (("musl", "1.2.5-r0", "musl"), ("busybox", "1.36.1-r29", "busybox"))
OTHER_ALPINE = (("musl", "1.2.4-r2", "musl"), ("busybox", "1.36.1-r15", "busybox"))
THIRD_ALPINE = (("musl", "1.2.5-r1", "musl"),)
REAL_TRIVY = Path(sys.executable).parent / "trivy"
ATTACHMENT_TAG = re.compile(r"sha256-[0-9a-f]{64}\.(?:sig|att|sbom)")


def assert_invariants(world, registry_name: str | None = None) -> dict[tuple[str, str], str]:
    """SPEC.md's promotion invariants over the real target registry and the ledger; returns
    what approved/ holds as {(name, tag): digest}.

    ``registry_name`` is the target as settings.yaml names it (signatures are made for that
    name); by default the target itself.
    """
    name_in_refs = registry_name or world.target.host
    public = (world.catalog / "signers" / "ci.pub").read_text()
    ledger = Ledger(str(world.reports))
    catalog = requests.get(f"{world.target.url}/v2/_catalog", timeout=10).json()
    approved: dict[tuple[str, str], str] = {}
    with RegistryClient(world.target.host, tls_verify=False) as client:
        for repo in catalog.get("repositories") or []:
            if not repo.startswith("approved/"):
                continue
            name = repo.removeprefix("approved/")
            for tag in world.tags(world.target, repo):
                if ATTACHMENT_TAG.fullmatch(tag):
                    continue
                digest = world.digest_at(world.target, repo, tag)
                approved[(name, tag)] = digest
                rec = ledger.load(name, tag)
                assert rec is not None, f"{repo}:{tag} is in approved/ without a record"
                assert rec.promoted_digest == digest, (
                    f"{repo}:{tag} holds {digest} but its record says {rec.promoted_digest}"
                )
                assert "ci" in rec.signatures, rec
                verdict = verify_signers(client, repo, digest, f"{name_in_refs}/{repo}", {"ci": public})
                assert verdict.ok and not verdict.problems, f"{repo}@{digest}: {verdict}"
    for rec in ledger.all():
        # Fail closed, the other way round: no record claims a promotion approved/ lacks.
        assert approved.get((rec.name, rec.tag)) == rec.promoted_digest, (
            f"record {rec.name}:{rec.tag} says {rec.promoted_digest}, approved/ holds "
            f"{approved.get((rec.name, rec.tag))}"
        )
    return approved


def _trivy_wrapper(world, name: str, on_scan: str) -> Path:
    """A Trivy stand-in: ``on_scan`` (shell) runs for image scans, whose reference is "$ref";
    everything else, and any scan ``on_scan`` lets through, is real Trivy."""
    script = world.root / name
    script.write_text(f"""#!/bin/sh
if [ "$1" = image ]; then
  for ref; do :; done
{on_scan}
fi
exec {REAL_TRIVY} "$@"
""")
    script.chmod(0o755)
    return script


def _events(world, name: str, tag: str) -> list[str]:
    return [e.event for e in world.record(name, tag).events]


def _push_two(world) -> tuple[str, str]:
    world.db.write(())
    alpine = world.push("library/alpine:3.20", build_image(alpine_files(CLEAN_ALPINE)))
    nginx = world.push("library/nginx:1.27.3", build_image(alpine_files(OTHER_ALPINE)))
    world.images("""
        images:
          - source: alpine
            tags: ["3.20"]
          - source: nginx
            tags: ["1.27.3"]
    """)
    return alpine, nginx


def test_upstream_going_away_mid_run_fails_the_rest_and_the_next_run_completes_them(world):
    alpine, nginx = _push_two(world)
    scanning, go = world.root / "scanning", world.root / "go"
    # The first scan (alpine's, after its copy) pauses until the test has stopped the Hub
    # stand-in; with --jobs 1, nginx's copy comes after it and finds upstream gone.
    world.env["SYNCER_TRIVY"] = str(
        _trivy_wrapper(
            world,
            "trivy-pause",
            f"""
  if [ ! -e {scanning} ]; then
    touch {scanning}
    i=0; while [ ! -e {go} ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done
  fi""",
        )
    )

    def stop_upstream() -> None:
        deadline = time.monotonic() + 60
        while not scanning.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        world.hub.stop()
        go.touch()

    watcher = threading.Thread(target=stop_upstream, daemon=True)
    watcher.start()
    proc = world.run("--jobs", "1", expect=1)
    watcher.join(timeout=60)
    assert go.exists(), "the run never scanned"

    assert world.record("alpine", "3.20").state is State.PROMOTED, proc.stderr
    rec = world.record("nginx", "1.27.3")
    assert rec.state is State.FAILED
    assert any("unreachable" in r and world.hub.host in r for r in rec.reasons), rec.reasons
    assert world.digest_at(world.target, "quarantine/nginx", "1.27.3") is None
    assert assert_invariants(world) == {("alpine", "3.20"): alpine}

    world.hub.start()
    alpine_events = _events(world, "alpine", "3.20")
    world.run()
    rec = world.record("nginx", "1.27.3")
    assert rec.state is State.PROMOTED and rec.reasons == []
    assert [e for e in _events(world, "nginx", "1.27.3") if e != "failed"] == [
        "discovered",
        "mirrored",
        "scanned",
        "promoted",
    ]
    assert _events(world, "alpine", "3.20") == alpine_events, "a finished tag is left alone"
    assert assert_invariants(world) == {("alpine", "3.20"): alpine, ("nginx", "1.27.3"): nginx}

    # Upstream down from the start: nothing can be discovered, so nothing is touched.
    world.hub.stop()
    before = world.tree()
    proc = world.run(expect=1)
    assert world.tree() == before, "an unreachable upstream must not churn the records"
    assert "error in nginx" in proc.stdout and "could not be reached" in proc.stdout, proc.stdout
    assert assert_invariants(world) == {("alpine", "3.20"): alpine, ("nginx", "1.27.3"): nginx}


def test_rate_limits_and_server_errors_upstream_are_retried(world):
    alpine, nginx = _push_two(world)
    with FaultProxy(world.hub.url) as proxy:
        world.route(world.hub.host, proxy.host)
        proxy.inject(429, headers={"Retry-After": "1"}, method="HEAD", path="/manifests/", times=2)
        proxy.inject(503, method="HEAD", path="/manifests/", times=1)
        proxy.inject(502, method="GET", path=r"/v2/library/\w+/manifests/sha256:", times=1)
        proc = world.run()
        assert proxy.injected == 4
        retried = [s for s in proxy.seen if s.injected]
    assert {(s.method, s.status) for s in retried} == {("HEAD", 429), ("HEAD", 503), ("GET", 502)}
    assert world.record("alpine", "3.20").state is State.PROMOTED, proc.stderr
    assert world.record("nginx", "1.27.3").state is State.PROMOTED, proc.stderr
    assert all(
        _events(world, n, t) == ["discovered", "mirrored", "scanned", "promoted"]
        for n, t in (("alpine", "3.20"), ("nginx", "1.27.3"))
    )
    assert assert_invariants(world) == {("alpine", "3.20"): alpine, ("nginx", "1.27.3"): nginx}


def test_trivy_hanging_or_crashing_promotes_nothing_and_real_trivy_recovers(world):
    alpine, nginx = _push_two(world)
    # Its own digest: scans are shared by digest, and this one must really run.
    busybox = world.push("library/busybox:1.36", build_image(alpine_files(THIRD_ALPINE)))
    world.images("""
        images:
          - source: alpine
            tags: ["3.20"]
          - source: nginx
            tags: ["1.27.3"]
          - source: busybox
            tags: ["1.36"]
    """)
    world.env["SYNCER_TRIVY"] = str(
        _trivy_wrapper(
            world,
            "trivy-faulty",
            """
  case "$ref" in
    */quarantine/alpine@*) sleep 60 ;;
    */quarantine/nginx@*) echo 'FATAL: simulated scanner crash' >&2; exit 2 ;;
  esac""",
        )
    )
    started = time.monotonic()
    world.run("--scan-timeout", "2", expect=1)
    assert time.monotonic() - started < 30, "the hung scan was not stopped at --scan-timeout"

    hung, crashed = world.record("alpine", "3.20"), world.record("nginx", "1.27.3")
    assert hung.state is State.FAILED and crashed.state is State.FAILED
    assert any("did not finish" in r and "within 2s" in r for r in hung.reasons), hung.reasons
    assert any("simulated scanner crash" in r for r in crashed.reasons), crashed.reasons
    assert hung.scan is None and crashed.scan is None
    assert world.record("busybox", "1.36").state is State.PROMOTED, "one image's failure stops no other"
    assert assert_invariants(world) == {("busybox", "1.36"): busybox}

    del world.env["SYNCER_TRIVY"]
    world.run()
    for name, tag in (("alpine", "3.20"), ("nginx", "1.27.3")):
        assert world.record(name, tag).state is State.PROMOTED
        assert _events(world, name, tag).count("mirrored") == 1, "the quarantined copy is reused"
    assert assert_invariants(world) == {
        ("alpine", "3.20"): alpine,
        ("nginx", "1.27.3"): nginx,
        ("busybox", "1.36"): busybox,
    }


def test_target_refusing_the_promotion_leaves_nothing_half_promoted(world):
    alpine, nginx = _push_two(world)
    with FaultProxy(world.target.url) as proxy:
        world.route(world.target.host, proxy.host)
        proxy.inject(
            403,
            method="PUT",
            path=r"^/v2/approved/alpine/manifests/3\.20$",
            times=1000,
            headers={"Content-Type": "application/json"},
            body=b'{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}',
        )
        world.run(expect=1)
        rec = world.record("alpine", "3.20")
        assert rec.state is State.FAILED and rec.promoted_digest is None
        assert any("denied" in r and "approved/alpine" in r for r in rec.reasons), rec.reasons
        assert world.digest_at(world.target, "approved/alpine", "3.20") is None
        assert world.record("nginx", "1.27.3").state is State.PROMOTED
        assert assert_invariants(world, proxy.host) == {("nginx", "1.27.3"): nginx}

        proxy.clear()
        world.run()
    rec = world.record("alpine", "3.20")
    assert rec.state is State.PROMOTED and rec.promoted_digest == alpine
    assert _events(world, "alpine", "3.20").count("scanned") == 1, "the scan of that digest still holds"
    assert assert_invariants(world, proxy.host) == {("alpine", "3.20"): alpine, ("nginx", "1.27.3"): nginx}
    with RegistryClient(world.target.host, tls_verify=False) as client:
        assert len(read_signatures(client, "approved/alpine", alpine)) == 1, "signed once, not per attempt"


def test_a_run_killed_between_mirror_and_promote_resumes_from_the_ledger(world):
    world.db.write(())
    alpine = world.push("library/alpine:3.20", build_image(alpine_files(CLEAN_ALPINE)))
    world.images("""
        images:
          - source: alpine
            tags: ["3.20"]
    """)
    # Trivy's parent is the syncer process: kill it outright, as a runner being shut down would.
    world.env["SYNCER_TRIVY"] = str(_trivy_wrapper(world, "trivy-kill", '  kill -KILL "$PPID"; exit 1'))
    proc = world.syncer("run")
    assert proc.returncode == -9, proc.stderr
    rec = world.record("alpine", "3.20")
    assert rec.state is State.MIRRORED and _events(world, "alpine", "3.20") == ["discovered", "mirrored"]
    assert world.digest_at(world.target, "quarantine/alpine", "3.20") == alpine
    assert assert_invariants(world) == {}

    del world.env["SYNCER_TRIVY"]
    copies = world.hub.count("GET", "/manifests/")
    world.run()  # the lock died with the killed process
    assert _events(world, "alpine", "3.20") == ["discovered", "mirrored", "scanned", "promoted"]
    assert world.hub.count("GET", "/manifests/") == copies, "resumed from quarantine, not copied again"
    assert assert_invariants(world) == {("alpine", "3.20"): alpine}


def _kill_syncer(world) -> None:
    """SIGKILL the ``syncer`` process running on ``world``'s catalog, as a runner shut down would."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue  # exited meanwhile
        if b"syncer" in argv and str(world.catalog).encode() in argv:
            os.kill(int(cmdline.parent.name), 9)


def test_a_run_killed_right_after_the_promoting_copy_converges_on_the_next_run(world):
    world.db.write(())
    alpine = world.push("library/alpine:3.20", build_image(alpine_files(CLEAN_ALPINE)))
    world.images("""
        images:
          - source: alpine
            tags: ["3.20"]
    """)
    with FaultProxy(world.target.url) as proxy:
        world.route(world.target.host, proxy.host)
        # Killed once the target has stored the tag in approved/, before syncer hears so.
        proxy.inject(
            method="PUT",
            path=r"^/v2/approved/alpine/manifests/3\.20$",
            then=lambda status: status == 201 and _kill_syncer(world),
        )
        proc = world.syncer("run")
        assert proc.returncode == -9, proc.stderr
        # The crash window: approved/ already holds the digest, the record not yet. What is
        # there is the scanned digest of a record, and it is already signed (signing comes first).
        assert world.digest_at(world.target, "approved/alpine", "3.20") == alpine
        rec = world.record("alpine", "3.20")
        assert rec.digest == alpine and rec.state is State.SCANNED and rec.promoted_digest is None
        public = (world.catalog / "signers" / "ci.pub").read_text()
        with RegistryClient(world.target.host, tls_verify=False) as client:
            assert verify_signers(
                client, "approved/alpine", alpine, f"{proxy.host}/approved/alpine", {"ci": public}
            ).ok

        world.run()
        assert _events(world, "alpine", "3.20") == ["discovered", "mirrored", "scanned", "promoted"]
        assert assert_invariants(world, proxy.host) == {("alpine", "3.20"): alpine}
    with RegistryClient(world.target.host, tls_verify=False) as client:
        assert len(read_signatures(client, "approved/alpine", alpine)) == 1


def test_a_malformed_upstream_manifest_fails_that_tag_only(world):
    alpine, nginx = _push_two(world)
    with FaultProxy(world.hub.url) as proxy:
        world.route(world.hub.host, proxy.host)
        proxy.inject(
            200,
            method="GET",
            path=r"^/v2/library/nginx/manifests/",
            times=1000,
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
            body=b'{"schemaVersion": 2, "layers": [',
        )
        world.run(expect=1)
        rec = world.record("nginx", "1.27.3")
        assert rec.state is State.FAILED
        assert any("bad manifest" in r and "library/nginx" in r for r in rec.reasons), rec.reasons
        assert world.digest_at(world.target, "quarantine/nginx", "1.27.3") is None
        assert world.record("alpine", "3.20").state is State.PROMOTED
        assert assert_invariants(world) == {("alpine", "3.20"): alpine}

        proxy.clear()
        world.run()
    assert world.record("nginx", "1.27.3").state is State.PROMOTED
    assert assert_invariants(world) == {("alpine", "3.20"): alpine, ("nginx", "1.27.3"): nginx}


def test_malformed_digest_headers_upstream_fail_those_tags_and_are_never_recorded(world):
    world.db.write(())
    alpine = world.push("library/alpine:3.20", build_image(alpine_files(CLEAN_ALPINE)))
    lies = dict(zip(("nginx", "busybox", "redis"), MALFORMED_DIGESTS, strict=True))
    for name in lies:
        world.push(f"library/{name}:1", build_image(alpine_files(OTHER_ALPINE)))
    world.images(
        "images:\n"
        + "".join(
            f"  - source: {name}\n    tags: ['{tag}']\n"
            for name, tag in [("alpine", "3.20"), *((n, "1") for n in lies)]
        )
    )
    with FaultProxy(world.hub.url) as proxy:
        world.route(world.hub.host, proxy.host)
        for name, value in lies.items():
            proxy.inject(
                200,
                method="HEAD",
                path=f"^/v2/library/{name}/manifests/",
                times=1000,
                headers={
                    "Docker-Content-Digest": value,
                    "Content-Type": "application/vnd.oci.image.manifest.v1+json",
                },
            )
        proc = world.run(expect=1)
    for name in lies:
        assert Ledger(str(world.reports)).load(name, "1") is None, f"{name}: a lie was recorded"
        assert re.search(rf"malformed Docker-Content-Digest.*library/{name}", proc.stdout), proc.stdout
    recorded = "".join(p.read_text() for p in (world.reports / "records").rglob("*.yaml"))
    assert not [v for v in lies.values() if v in recorded]
    assert INJECTED not in "".join(p.read_text() for p in world.reports.rglob("*.md"))
    assert "Traceback" not in proc.stderr, proc.stderr
    assert world.record("alpine", "3.20").state is State.PROMOTED, "one tag's lie stops no other"
    assert assert_invariants(world) == {("alpine", "3.20"): alpine}


def test_a_failed_signature_promotes_nothing(world):
    """Signing comes first: a .sig the registry refuses leaves approved/ without the image."""
    alpine, nginx = _push_two(world)
    with FaultProxy(world.target.url) as proxy:
        world.route(world.target.host, proxy.host)
        proxy.inject(
            500, method="PUT", path=r"^/v2/approved/alpine/manifests/sha256-[0-9a-f]{64}\.sig$", times=1000
        )
        world.run(expect=1)
        rec = world.record("alpine", "3.20")
        assert rec.state is State.FAILED and rec.promoted_digest is None and rec.signatures == []
        assert world.digest_at(world.target, "approved/alpine", "3.20") is None
        assert world.record("nginx", "1.27.3").state is State.PROMOTED
        assert assert_invariants(world, proxy.host) == {("nginx", "1.27.3"): nginx}
        proxy.clear()
        world.run()
    assert world.record("alpine", "3.20").state is State.PROMOTED
    assert assert_invariants(world, proxy.host) == {("alpine", "3.20"): alpine, ("nginx", "1.27.3"): nginx}


def test_a_wrong_key_passphrase_promotes_nothing_and_says_why(world):
    alpine, _ = _push_two(world)
    world.env["SYNCER_SIGNING_PASSPHRASE"] = "not the passphrase"
    proc = world.run(expect=1)
    assert "wrong passphrase" in proc.stderr and "not the passphrase" not in proc.stdout + proc.stderr
    for name, tag in (("alpine", "3.20"), ("nginx", "1.27.3")):
        rec = world.record(name, tag)
        assert rec.state is State.FAILED and any("cannot sign" in r for r in rec.reasons), rec.reasons
    assert assert_invariants(world) == {}
    assert b"not the passphrase" not in b"".join(world.tree().values())
    del world.env["SYNCER_SIGNING_PASSPHRASE"]
    world.run()
    assert world.record("alpine", "3.20").promoted_digest == alpine
