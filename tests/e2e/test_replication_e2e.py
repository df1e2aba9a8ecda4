"""Replication to further registries: promoted digests reach every replica from the trusted
registry (never upstream), signed under each replica's identity; a replica that is down lags
and catches up; demotion removes everywhere."""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest

from syncer.core.model import State
from syncer.stages import signatures
from syncer.tools.registry import RegistryClient
from tests.harness.images import alpine_files, build_image
from tests.harness.trivydb import Advisory

CLEAN = (("musl", "1.2.5-r0", "musl"), ("busybox", "1.36.1-r29", "busybox"))
# What a later re-scan finds in the promoted image.
CRITICAL = Advisory("CVE-2099-7777", "alpine 3.20", "busybox", "CRITICAL", "1.36.2-r0")


@pytest.fixture
def rworld(world, registry_factory):
    world.replicas = [registry_factory(delete=True), registry_factory(delete=True)]
    world.write_settings()
    world.db.write(())
    world.digest = world.push("library/alpine:3.20", build_image(alpine_files(CLEAN)))
    world.images("""
        images:
          - source: alpine
            tags: ["3.20"]
    """)
    return world


def _client(reg):
    return RegistryClient(reg.host, tls_verify=False)


def _verify(world, reg, identity_host):
    pub = (world.catalog / "signers" / "ci.pub").read_text()
    return signatures.verify_signers(
        _client(reg), "approved/alpine", world.digest, f"{identity_host}/approved/alpine", {"ci": pub}
    )


def test_promotion_reaches_every_replica_signed_under_its_identity(rworld):
    world = rworld
    hub_gets = world.hub.count("GET", "/manifests/")
    world.run()
    assert world.hub.count("GET", "/manifests/") == hub_gets + 1, "one upstream pull: the mirror copy"
    rec = world.record("alpine", "3.20")
    assert rec.state is State.PROMOTED
    assert [(r.registry, r.digest, r.lagging) for r in rec.replicas] == sorted(
        (r.host, world.digest, False) for r in world.replicas
    )
    for reg in world.replicas:
        assert world.digest_at(reg, "approved/alpine", "3.20") == world.digest
        assert _verify(world, reg, reg.host).signed_by == ["ci"]
        # The primary's identity is not what a node pulling from the replica checks.
        assert _verify(world, reg, world.target.host).missing == ["ci"]


def test_a_signature_copied_from_the_primary_does_not_verify_on_a_replica(rworld, registry_factory):
    world = rworld
    world.run()
    elsewhere = registry_factory()
    primary, other = _client(world.target), _client(elsewhere)
    sig_tag = signatures.signature_tag(world.digest)
    manifest = primary.get_manifest("approved/alpine", sig_tag)
    for layer in [manifest.json["config"], *manifest.json["layers"]]:
        other.put_blob("approved/alpine", primary.get_blob("approved/alpine", layer["digest"]))
    other.put_manifest("approved/alpine", sig_tag, manifest.raw, manifest.media_type)
    result = _verify(world, elsewhere, elsewhere.host)
    assert result.missing == ["ci"] and result.problems, result


def test_a_replica_that_is_down_lags_and_catches_up(rworld):
    world = rworld
    down = world.replicas[1]
    down.stop()
    proc = world.run(expect=1)
    rec = world.record("alpine", "3.20")
    assert rec.state is State.PROMOTED
    states = {r.registry: r for r in rec.replicas}
    assert states[down.host].lagging and states[down.host].digest is None
    assert states[world.replicas[0].host].digest == world.digest
    assert "lagging" in proc.stdout + proc.stderr

    plan = world.syncer("plan")
    assert "Replicas lagging" in plan.stdout and down.host in plan.stdout

    down.start()
    hub_gets = world.hub.count("GET", "/manifests/")
    world.run()
    assert world.hub.count("GET", "/manifests/") == hub_gets, "catching up never pulls from upstream"
    rec = world.record("alpine", "3.20")
    assert all(r.digest == world.digest and not r.lagging for r in rec.replicas)
    assert world.digest_at(down, "approved/alpine", "3.20") == world.digest
    assert _verify(world, down, down.host).signed_by == ["ci"]


def _demote_on_regression(world) -> None:
    world.policy(
        "default",
        textwrap.dedent("""
        vulnerabilities:
          max: {critical: 0, high: 0}
        signers: [ci]
        on_regression: demote
    """),
    )


def test_demotion_removes_the_tag_from_every_replica(rworld):
    world = rworld
    _demote_on_regression(world)
    world.run()
    world.db.write([CRITICAL])
    world.run()
    rec = world.record("alpine", "3.20")
    assert rec.state is State.DEMOTED
    for reg in (world.target, *world.replicas):
        assert world.digest_at(reg, "approved/alpine", "3.20") is None
    assert all(r.digest is None for r in rec.replicas)
    assert [e.event for e in rec.events].count("unreplicated") == 2


def _push_back(world, reg) -> None:
    """What a careless operator (or an attacker with push rights) does after a demotion: copy
    the demoted digest, still in quarantine, back under its approved tag with skopeo."""
    source = f"docker://{world.target.host}/quarantine/alpine@{world.digest}"
    dest = f"docker://{reg.host}/approved/alpine:3.20"
    done = subprocess.run(
        [
            "skopeo",
            "--insecure-policy",
            "copy",
            "--quiet",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            source,
            dest,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert world.digest_at(reg, "approved/alpine", "3.20") == world.digest


def test_demotion_removes_signatures_so_a_pushed_back_digest_does_not_verify(rworld):
    world = rworld
    _demote_on_regression(world)
    world.run()
    sig = signatures.signature_tag(world.digest)
    att = sig.removesuffix(".sig") + ".att"
    # An attestation next to the signature (cosign attest stores it under .att): the .sig
    # manifest's shape, made distinct so that it is a manifest of its own.
    primary = _client(world.target)
    manifest = primary.get_manifest("approved/alpine", sig)
    attestation = {**manifest.json, "annotations": {"test": "attestation"}}
    primary.put_manifest("approved/alpine", att, json.dumps(attestation).encode(), manifest.media_type)
    for reg in (world.target, *world.replicas):
        assert sig in world.tags(reg, "approved/alpine")
        ref = f"{reg.host}/approved/alpine:3.20"
        assert world.syncer("verify", ref).returncode == 0

    world.db.write([CRITICAL])
    world.run()
    rec = world.record("alpine", "3.20")
    assert rec.state is State.DEMOTED
    for reg in (world.target, *world.replicas):
        assert world.tags(reg, "approved/alpine") == [], reg.host
    demoted = next(e for e in rec.events if e.event == "demoted")
    assert sig in demoted.detail and att in demoted.detail
    removed = [e.detail for e in rec.events if e.event == "unreplicated"]
    assert len(removed) == 2 and all(sig in detail for detail in removed)

    for reg in (world.target, *world.replicas):
        _push_back(world, reg)
        proc = world.syncer("verify", f"{reg.host}/approved/alpine:3.20")
        assert proc.returncode == 1, f"{reg.host}: {proc.stdout}{proc.stderr}"
        assert "ci" in proc.stdout + proc.stderr
