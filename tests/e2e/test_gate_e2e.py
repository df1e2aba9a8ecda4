"""The gate, played by an attacker who controls the upstream image, through a real registry
playing Hub, a real trusted registry, real skopeo and real Trivy with a generated database:
a scan counts only for the manifests it covered, and what Trivy could not assess is not clean.
"""

from __future__ import annotations

import json

import pytest

from syncer.core.model import State
from tests.harness.images import (
    Blob,
    Image,
    ImageIndex,
    Platform,
    build_image,
    debian_files,
    gzip_bytes,
    index_of,
    sha256_digest,
    tar_layer,
)
from tests.harness.trivydb import Advisory
from tests.harness.world import World

CLEAN = (("base-files", "12.4+deb12u8", "base-files"), ("libssl3", "3.0.15-1", "openssl"))
VULNERABLE = (("base-files", "12.4+deb12u8", "base-files"), ("libssl3", "3.0.11-1", "openssl"))
CRITICAL = Advisory(
    "CVE-2099-3001", "debian 12", "openssl", "CRITICAL", "3.0.15-1", title="openssl: planted critical"
)

ENTRY_WIDE = """
  - source: library/app
    name: app-all
    tags: ["1.0"]
"""
ENTRY_NARROW = """
  - source: library/app
    name: app-amd64
    tags: ["1.0"]
    platforms: [linux/amd64]
"""


@pytest.fixture
def gate(world: World) -> World:
    world.db.write((CRITICAL,))
    return world


def amd64_clean_arm64_vulnerable() -> ImageIndex:
    return index_of(
        [
            build_image(debian_files(CLEAN), platform="linux/amd64"),
            build_image(debian_files(VULNERABLE, arch="arm64"), platform="linux/arm64"),
        ]
    )


def assert_split_decision(world: World, digest: str) -> None:
    narrow, wide = world.record("app-amd64", "1.0"), world.record("app-all", "1.0")
    assert narrow.state is State.PROMOTED, narrow.reasons
    assert {f.platform for f in narrow.scan.findings} == set()  # arm64's findings are not its
    assert narrow.scan.platforms == ("linux/amd64",)
    assert world.digest_at(world.target, "approved/app-amd64", "1.0") == digest

    assert wide.state is State.HELD, wide.reasons
    assert {(f.id, f.platform) for f in wide.scan.findings} == {("CVE-2099-3001", "linux/arm64")}
    assert wide.scan.platforms == ("linux/amd64", "linux/arm64")
    assert world.digest_at(world.target, "approved/app-all", "1.0") is None


@pytest.mark.e2e
@pytest.mark.parametrize(
    "order", [(ENTRY_NARROW, ENTRY_WIDE), (ENTRY_WIDE, ENTRY_NARROW)], ids=["narrow-first", "wide-first"]
)
def test_two_entries_of_one_index_each_get_the_platforms_they_require(gate, order):
    digest = gate.push("library/app:1.0", amd64_clean_arm64_vulnerable())
    gate.images("images:" + "".join(order))
    gate.run("--jobs", "1")
    assert_split_decision(gate, digest)


@pytest.mark.e2e
@pytest.mark.parametrize(
    "first,second",
    [(ENTRY_NARROW, ENTRY_WIDE), (ENTRY_WIDE, ENTRY_NARROW)],
    ids=["narrow-then-wide", "wide-then-narrow"],
)
def test_an_entry_added_later_does_not_reuse_a_scan_of_other_platforms(gate, first, second):
    digest = gate.push("library/app:1.0", amd64_clean_arm64_vulnerable())
    gate.images("images:" + first)
    gate.run()
    gate.images("images:" + first + second)
    gate.run()
    assert_split_decision(gate, digest)


@pytest.mark.e2e
def test_narrowing_platforms_rescans_and_drops_the_other_platforms_findings(gate):
    digest = gate.push("library/app:1.0", amd64_clean_arm64_vulnerable())
    gate.images("images:" + ENTRY_WIDE)
    gate.run()
    assert gate.record("app-all", "1.0").state is State.HELD
    gate.images("images:" + ENTRY_WIDE.rstrip() + "\n    platforms: [linux/amd64]\n")
    gate.run()
    rec = gate.record("app-all", "1.0")
    assert rec.state is State.PROMOTED, rec.reasons
    assert rec.scan.selection == ("linux/amd64",) and rec.scan.findings == ()
    assert gate.digest_at(gate.target, "approved/app-all", "1.0") == digest


def with_unplatformed_child(good: Image, hidden: Image) -> ImageIndex:
    """An index listing ``good`` with its platform and ``hidden`` with no platform field."""
    index = Blob(
        "application/vnd.oci.image.index.v1+json",
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [
                    good.manifest.descriptor(platform=good.platform.as_json()),
                    hidden.manifest.descriptor(),
                ],
            },
            separators=(",", ":"),
        ).encode(),
    )
    return ImageIndex(index=index, images=(good, hidden))


@pytest.mark.e2e
def test_an_index_child_without_a_platform_is_scanned_and_holds_the_index(gate):
    hidden = build_image(debian_files(VULNERABLE, arch="arm64"), platform="linux/arm64")
    digest = gate.push("library/app:1.0", with_unplatformed_child(build_image(debian_files(CLEAN)), hidden))
    gate.images("images:" + ENTRY_WIDE + ENTRY_NARROW)
    gate.run()

    wide = gate.record("app-all", "1.0")
    assert wide.state is State.HELD, wide.reasons
    assert {(f.id, f.platform) for f in wide.scan.findings} == {("CVE-2099-3001", hidden.digest)}
    assert hidden.digest in {c.digest for c in wide.scan.covered}
    assert gate.digest_at(gate.target, "approved/app-all", "1.0") is None
    # Naming the platforms it needs is how an entry leaves such a child out.
    narrow = gate.record("app-amd64", "1.0")
    assert narrow.state is State.PROMOTED, narrow.reasons
    assert gate.digest_at(gate.target, "approved/app-amd64", "1.0") == digest


# --- what Trivy could not assess ----------------------------------------------------------------

DEBIAN_99 = {
    **debian_files(VULNERABLE, point_release="99.1"),
    "etc/os-release": 'PRETTY_NAME="Debian GNU/Linux 99"\nID=debian\nVERSION_ID="99"\n',
}


@pytest.mark.e2e
def test_an_os_release_the_database_does_not_know_is_held_as_unassessed(gate):
    gate.push("library/app:1.0", build_image(DEBIAN_99))
    gate.images("images:" + ENTRY_WIDE)
    gate.run()
    rec = gate.record("app-all", "1.0")
    assert rec.state is State.HELD
    assert rec.scan.findings == ()  # Trivy found nothing: it had nothing to match against
    assert rec.scan.covered[0].os == "debian 99.1"
    assert any("not assessed" in r and "debian 99.1" in r and "no advisories" in r for r in rec.reasons), (
        rec.reasons
    )
    assert gate.digest_at(gate.target, "approved/app-all", "1.0") is None
    # What the scan saw is in the digest's stored result, which the record names.
    text = (gate.reports / "scans" / "app-all" / (rec.digest.replace(":", "-") + ".yaml")).read_text()
    assert "os: debian 99.1" in text and "unassessed:" in text


@pytest.mark.e2e
def test_unassessed_allow_promotes_and_keeps_the_note(gate):
    gate.policy(
        "default",
        """
        vulnerabilities:
          max: {critical: 0, high: 0}
        unassessed: allow
        signers: [ci]
    """,
    )
    digest = gate.push("library/app:1.0", build_image(DEBIAN_99))
    gate.images("images:" + ENTRY_WIDE)
    gate.run()
    rec = gate.record("app-all", "1.0")
    assert rec.state is State.PROMOTED, rec.reasons
    assert any(r.startswith("allowed unassessed") for r in rec.reasons), rec.reasons
    assert gate.digest_at(gate.target, "approved/app-all", "1.0") == digest


@pytest.mark.e2e
def test_os_packages_without_an_os_release_are_held(gate):
    files = {"var/lib/dpkg/status": debian_files(VULNERABLE)["var/lib/dpkg/status"]}
    gate.push("library/app:1.0", build_image(files))
    gate.images("images:" + ENTRY_WIDE)
    gate.run()
    rec = gate.record("app-all", "1.0")
    assert rec.state is State.HELD
    assert rec.scan.covered[0].os == "none"
    assert any("OS packages without an OS release" in r for r in rec.reasons), rec.reasons


@pytest.mark.e2e
def test_an_image_without_packages_is_clean_not_unassessed(gate):
    digest = gate.push("library/app:1.0", build_image({"app/hello.txt": "static content\n"}))
    gate.images("images:" + ENTRY_WIDE)
    gate.run()
    rec = gate.record("app-all", "1.0")
    assert rec.state is State.PROMOTED, rec.reasons
    assert gate.digest_at(gate.target, "approved/app-all", "1.0") == digest


def helm_chart() -> Image:
    """An OCI artifact as `helm push` makes one: Helm's config and chart media types."""
    chart = Blob(
        "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
        gzip_bytes(tar_layer({"app/Chart.yaml": "apiVersion: v2\nname: app\nversion: 1.0.0\n"})),
    )
    config = Blob(
        "application/vnd.cncf.helm.config.v1+json", b'{"apiVersion":"v2","name":"app","version":"1.0.0"}'
    )
    manifest = Blob(
        "application/vnd.oci.image.manifest.v1+json",
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config.descriptor(),
                "layers": [chart.descriptor()],
            },
            separators=(",", ":"),
        ).encode(),
    )
    return Image(manifest=manifest, config=config, layers=(chart,), platform=Platform("linux", "amd64"))


@pytest.mark.e2e
def test_a_helm_chart_is_held_with_a_reason_not_failed_on_every_run(gate):
    chart = helm_chart()
    assert sha256_digest(chart.manifest.data) == chart.digest
    gate.push("library/app:1.0", chart)
    gate.images("images:" + ENTRY_WIDE)
    gate.run()  # exit 0: held is not a failure
    rec = gate.record("app-all", "1.0")
    assert rec.state is State.HELD, rec.reasons
    assert rec.scan.artifact == "application/vnd.cncf.helm.config.v1+json"
    assert any("not a container image" in r for r in rec.reasons), rec.reasons
    assert gate.digest_at(gate.target, "approved/app-all", "1.0") is None

    before = gate.tree()
    proc = gate.run()
    assert gate.tree() == before, "a second run over the same chart changed the audit trail"
    assert "failed" not in proc.stderr
