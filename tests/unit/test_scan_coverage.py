"""What a scan must cover and what counts as assessed: the pure parts of ``syncer.stages.scan``, the
policy's holds for them, and the bbolt reader that tells which advisory sources a DB holds."""

from __future__ import annotations

import json
from datetime import date

import pytest

from syncer.core.model import Finding, LicenseFinding, PlatformScan, Policy, ScanResult, Severity
from syncer.core.policy import evaluate
from syncer.stages.scan import (
    ManifestScan,
    PlatformError,
    ScanSettings,
    combine,
    image_children,
    required_children,
    split_result,
    unassessed,
)
from syncer.tools import bbolt
from syncer.tools.registry import Manifest
from tests.harness.trivydb import DEFAULT_ADVISORIES, TrivyDB, encode_bbolt

A, B, C, D = ("sha256:" + c * 64 for c in "abcd")
INDEX = "application/vnd.oci.image.index.v1+json"
IMAGE = "application/vnd.oci.image.manifest.v1+json"
SOURCES = frozenset({"debian 12", "alpine 3.20", "pip::GitHub Security Advisory pip", "vulnerability"})


def index(*entries: dict) -> Manifest:
    doc = {"schemaVersion": 2, "mediaType": INDEX, "manifests": list(entries)}
    return Manifest(digest=D, media_type=INDEX, raw=json.dumps(doc).encode(), json=doc)


def child(digest: str, platform: str | None, **extra: object) -> dict:
    entry: dict = {"mediaType": IMAGE, "digest": digest, "size": 100, **extra}
    if platform:
        os_, arch = platform.split("/")
        entry["platform"] = {"os": os_, "architecture": arch}
    return entry


def test_children_keep_unplatformed_and_duplicate_entries_and_drop_attestations():
    attestation = child(
        C, "unknown/unknown", annotations={"vnd.docker.reference.type": "attestation-manifest"}
    )
    found = image_children(
        index(
            child(A, "linux/amd64"),
            child(B, None),
            attestation,
            child(C, "linux/arm64"),
            child(D, "linux/arm64"),
        )
    )
    assert [(c.digest, c.platform, c.label) for c in found] == [
        (A, "linux/amd64", "linux/amd64"),
        (B, "", B),
        (C, "linux/arm64", f"linux/arm64@{C}"),
        (D, "linux/arm64", f"linux/arm64@{D}"),
    ]


def test_an_unknown_platform_without_the_attestation_annotation_is_an_image_to_scan():
    assert [c.digest for c in image_children(index(child(A, "unknown/unknown")))] == [A]


def test_required_children_are_the_named_platforms_or_all():
    children = image_children(index(child(A, "linux/amd64"), child(B, None), child(C, "linux/arm64")))
    assert [c.digest for c in required_children(children, (), "ref")] == [A, B, C]
    assert [c.digest for c in required_children(children, ("linux/arm64",), "ref")] == [C]
    with pytest.raises(PlatformError, match=r"has no linux/s390x \(it has: linux/amd64, linux/arm64\)"):
        required_children(children, ("linux/s390x",), "ref")


@pytest.mark.parametrize(
    "os_,types,expected",
    [
        ("debian 12.8", ("debian",), ()),
        ("alpine 3.20.3", ("alpine",), ()),
        (
            "debian 99.1",
            ("debian",),
            ("debian 99.1: the vulnerability database has no advisories for this OS release",),
        ),
        (
            "alpine 3.2",
            ("alpine",),
            ("alpine 3.2: the vulnerability database has no advisories for this OS release",),
        ),
        (
            "none",
            (),
            (
                "OS packages without an OS release (no etc/os-release Trivy recognises): "
                "their advisories cannot be matched",
            ),
        ),
        ("", ("python-pkg",), ()),
        ("", ("jar",), ("jar packages: the vulnerability database has no maven advisories",)),
        ("", ("wordpress",), ("wordpress packages: syncer knows no advisory source for this package type",)),
        ("", (), ()),
    ],
)
def test_unassessed_names_what_the_database_cannot_match(os_, types, expected):
    assert unassessed(os_, types, SOURCES) == expected


def test_a_package_database_trivy_did_not_report_is_unassessed():
    assert unassessed("", (), SOURCES, {"var/lib/dpkg/status"}) == (
        "OS package database in the layers (var/lib/dpkg/status) but Trivy reported no OS "
        "packages: they were not matched",
    )
    assert unassessed("debian 12.8", ("debian",), SOURCES, {"var/lib/dpkg/status"}) == ()


def test_without_the_database_sources_only_what_trivy_says_counts():
    assert unassessed("debian 99", ("debian",), None) == ()
    assert unassessed("none", (), None) != ()


def test_families_spelled_otherwise_in_the_database():
    sources = frozenset({"amazon linux 2", "Red Hat", "wolfi"})
    assert unassessed("amazon 2 (Karoo)", ("amazon",), sources) == ()
    assert unassessed("redhat 9.4", ("redhat",), sources) == ()
    assert unassessed("wolfi 20230201", ("wolfi",), sources) == ()


def finding(vid: str, platform: str = "") -> Finding:
    return Finding(vid, "openssl", "1", "2", Severity.CRITICAL, platform=platform)


def test_a_recorded_result_splits_back_into_its_manifests():
    parts = [
        ("linux/amd64", ManifestScan(A, findings=(finding("CVE-1"),), os="debian 12.8")),
        (
            "linux/arm64",
            ManifestScan(B, findings=(finding("CVE-2"),), licenses=(LicenseFinding("GPL-3.0-only", "bash"),)),
        ),
    ]
    scan = combine(D, parts, (), ScanSettings("/nonexistent", "2026-01-01T00:00:00Z"))
    assert {(f.id, f.platform) for f in scan.findings} == {("CVE-1", "linux/amd64"), ("CVE-2", "linux/arm64")}
    assert split_result(scan) == [p for _, p in parts]


def scan_of(*covered: PlatformScan, artifact: str = "") -> ScanResult:
    return ScanResult(
        digest=D, scanner="trivy", db_updated_at="x", scanned_at="y", covered=covered, artifact=artifact
    )


def decide(scan: ScanResult, **policy: object):
    return evaluate(
        name="app",
        digest=D,
        scan=scan,
        policy=Policy("p", **policy),
        exceptions=(),
        approvals=(),
        today=date(2026, 12, 1),
    )


def test_policy_holds_unscannable_children_artifacts_and_unassessed_data():
    held = decide(scan_of(PlatformScan(A, "linux/amd64"), PlatformScan(B, B, problem="a nested index")))
    assert not held.promote and "image " not in held.reasons[0]
    assert held.reasons[0].startswith(f"platform {B} could not be scanned: it is a nested index")
    chart = decide(scan_of(artifact="application/vnd.cncf.helm.config.v1+json"))
    assert not chart.promote and "not a container image" in chart.reasons[0]
    part = PlatformScan(A, "", unassessed=("debian 99: no advisories",))
    assert not decide(scan_of(part)).promote
    allowed = decide(scan_of(part), unassessed="allow")
    assert allowed.promote and allowed.reasons == (
        f"allowed unassessed (`unassessed: allow`): image {A}: debian 99: no advisories",
    )


def test_a_result_fits_only_its_digest_and_selection():
    scan = ScanResult(
        digest=D,
        scanner="t",
        db_updated_at="x",
        scanned_at="y",
        covered=(PlatformScan(A, "linux/amd64"),),
        selection=("linux/amd64",),
    )
    assert scan.fits(D, ("linux/amd64",))
    assert not scan.fits(D, ())
    assert not scan.fits(A, ("linux/amd64",))
    legacy = ScanResult(digest=D, scanner="t", db_updated_at="x", scanned_at="y")
    assert not legacy.fits(D, ())


# --- bbolt ---------------------------------------------------------------------------------------


def test_root_buckets_of_a_generated_trivy_db(tmp_path):
    db = TrivyDB(tmp_path, DEFAULT_ADVISORIES).write()
    assert bbolt.root_buckets(db.cache_dir / "db" / "trivy.db") >= {
        "debian 12",
        "alpine 3.20",
        "pip::GitHub Security Advisory pip",
        "vulnerability",
        "data-source",
    }


def test_root_buckets_across_branch_pages(tmp_path):
    names = {f"source {i:05d}" for i in range(3000)}
    path = tmp_path / "many.db"
    path.write_bytes(encode_bbolt({n.encode(): {b"k": b"v"} for n in names}))
    assert bbolt.root_buckets(path) == names


@pytest.mark.parametrize("damage", ["truncate", "magic", "root"])
def test_a_damaged_file_is_a_bbolt_error(tmp_path, damage):
    data = bytearray(encode_bbolt({b"debian 12": {b"k": b"v"}}))
    if damage == "truncate":
        data = data[:5000]
    elif damage == "magic":
        data[16:20] = data[4096 + 16 : 4096 + 20] = b"\0\0\0\0"
    else:  # point both metas' root past the end, and fix nothing else: the checksum then fails too
        data[16 + 16 : 16 + 24] = data[4096 + 32 : 4096 + 40] = (10**6).to_bytes(8, "little")
    path = tmp_path / "bad.db"
    path.write_bytes(bytes(data))
    with pytest.raises(bbolt.BboltError):
        bbolt.root_buckets(path)


# --- one analysis per layer in a run --------------------------------------------------------


def test_scans_sharing_a_layer_take_turns_and_analysed_layers_wait_for_nothing():
    import threading

    from syncer.stages.scan import SharedLayers

    shared = SharedLayers("/nonexistent", own_server=False)
    order: list[str] = []
    first_inside, release_first = threading.Event(), threading.Event()

    def first() -> None:
        with shared.turn(["sha256:x", "sha256:y"]):
            order.append("first in")
            first_inside.set()
            release_first.wait(10)
            order.append("first out")

    def second() -> None:
        with shared.turn(["sha256:z", "sha256:y"]):
            order.append("second in")

    a = threading.Thread(target=first)
    a.start()
    assert first_inside.wait(10)
    b = threading.Thread(target=second)
    b.start()
    b.join(0.3)
    assert b.is_alive()  # waits for the layer the first scan is analysing
    with shared.turn(["sha256:w"]):  # a scan of other layers does not wait
        pass
    release_first.set()
    a.join(10)
    b.join(10)
    assert order == ["first in", "first out", "second in"]
    # Analysed now: another scan of them takes no turn (its lock is free anyway, but unheld).
    with shared.turn(["sha256:x", "sha256:y", "sha256:z"]):
        assert shared._turns["sha256:x"].locked() is False


def test_a_failed_scan_leaves_its_layers_unanalysed():
    from syncer.stages.scan import SharedLayers

    shared = SharedLayers("/nonexistent", own_server=False)
    with pytest.raises(RuntimeError), shared.turn(["sha256:x"]):
        raise RuntimeError("trivy failed")
    with shared.turn(["sha256:x"]):
        assert shared._turns["sha256:x"].locked()  # a turn again: nobody analysed it
