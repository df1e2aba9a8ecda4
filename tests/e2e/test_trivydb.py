"""The generated Trivy DB: a valid bbolt file, and real Trivy reports exactly what was planted."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from syncer.core.model import Severity
from tests.harness.images import (
    alpine_files,
    build_image,
    debian_files,
    java_archive,
    python_package_files,
)
from tests.harness.trivydb import (
    DEFAULT_ADVISORIES,
    DEFAULT_UPDATED_AT,
    PAGE_SIZE,
    Advisory,
    JavaArtifact,
    encode_bbolt,
    write_java_db,
    write_trivy_db,
)

TRIVY = str(Path(sys.executable).parent / "trivy")
OFFLINE = [
    "--skip-db-update",
    "--skip-java-db-update",
    "--quiet",
    "--disable-telemetry",
    "--skip-version-check",
    "--offline-scan",
    "--format",
    "json",
]


# --- an independent bbolt reader, to check the layout without Trivy --------------------------


def _page(data: bytes, pgid: int) -> tuple[int, int, int]:
    page_id, flags, count, _ = struct.unpack_from("<QHHI", data, pgid * PAGE_SIZE)
    assert page_id == pgid, f"page {pgid} says it is page {page_id}"
    return flags, count, pgid * PAGE_SIZE + 16


def _read_bucket(data: bytes, pgid: int, stats: dict) -> dict:
    flags, count, base = _page(data, pgid)
    out: dict = {}
    keys = []
    for i in range(count):
        at = base + 16 * i
        if flags == 0x01:  # branch
            stats["branch"] += 1
            pos, ksize, child = struct.unpack_from("<IIQ", data, at)
            key = data[at + pos : at + pos + ksize]
            sub = _read_bucket(data, child, stats)
            assert min(sub) == key, "a branch key must be its child's first key"
            out.update(sub)
            keys.append(key)
        else:
            assert flags == 0x02, f"page {pgid} has flags {flags:#x}"
            eflags, pos, ksize, vsize = struct.unpack_from("<IIII", data, at)
            key = data[at + pos : at + pos + ksize]
            value = data[at + pos + ksize : at + pos + ksize + vsize]
            if eflags & 1:
                root, _sequence = struct.unpack("<QQ", value)
                value = _read_bucket(data, root, stats)
            out[key] = value
            keys.append(key)
    assert keys == sorted(keys), f"keys of page {pgid} are not sorted"
    return out


def read_bbolt(data: bytes) -> tuple[dict, dict]:
    stats = {"branch": 0}
    metas = []
    for pgid in (0, 1):
        flags, _, base = _page(data, pgid)
        assert flags == 0x04
        body = data[base : base + 56]
        (checksum,) = struct.unpack_from("<Q", data, base + 56)
        h = 0xCBF29CE484222325
        for byte in body:
            h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
        assert checksum == h, f"meta {pgid} checksum"
        metas.append(struct.unpack("<IIIIQQQQQ", body))
    magic, version, page_size, _, root, _, freelist, high_water, txid = metas[1]
    assert (magic, version, page_size, txid) == (0xED0CDAED, 2, PAGE_SIZE, 1)
    assert len(data) == high_water * PAGE_SIZE
    assert _page(data, freelist)[:2] == (0x10, 0)
    return _read_bucket(data, root, stats), stats


def test_bbolt_file_holds_every_key_with_branch_and_overflow_pages():
    many = {f"key-{i:06d}".encode(): f"value {i}".encode() for i in range(70_000)}
    tree = {
        b"many": many,  # more keys than a page's 16-bit count could hold in one node
        b"nested": {b"inner": {b"k": b"v"}, b"empty": {}, b"big": b"x" * (3 * PAGE_SIZE)},
        b"a-first": {b"z": b"1", b"a": b"2"},  # given unsorted
    }
    read, stats = read_bbolt(encode_bbolt(tree))
    assert read == tree
    assert stats["branch"] > 100


def test_bbolt_rejects_values_at_top_level_and_empty_keys():
    with pytest.raises(ValueError):
        encode_bbolt({b"k": b"v"})
    with pytest.raises(ValueError):
        encode_bbolt({b"b": {b"": b"v"}})


# --- real Trivy over a root filesystem -------------------------------------------------------


def write_files(root: Path, files: dict) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def trivy_rootfs(cache: Path, root: Path, *extra: str) -> set[tuple]:
    result = subprocess.run(
        [TRIVY, "rootfs", "--cache-dir", str(cache), *OFFLINE, *extra, str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    return {
        (
            v["VulnerabilityID"],
            v["PkgName"],
            v["InstalledVersion"],
            v.get("FixedVersion"),
            v["Severity"],
            v["Status"],
            v["Title"],
        )
        for r in report.get("Results") or []
        for v in r.get("Vulnerabilities") or []
    }


def test_trivy_reports_exactly_the_planted_debian_and_pip_vulnerabilities(tmp_path):
    write_trivy_db(tmp_path / "cache", DEFAULT_ADVISORIES)
    root = write_files(tmp_path / "root", {**debian_files(), **python_package_files("requests", "2.31.0")})
    assert trivy_rootfs(tmp_path / "cache", root) == {
        (
            "CVE-2099-0001",
            "libssl3",
            "3.0.15-1~deb12u1",
            "3.0.99-1",
            "CRITICAL",
            "fixed",
            "openssl: planted critical",
        ),
        ("CVE-2099-0002", "libc6", "2.36-9+deb12u9", None, "HIGH", "affected", "glibc: planted unfixed high"),
        (
            "CVE-2099-0003",
            "base-files",
            "12.4+deb12u8",
            "12.4+deb12u99",
            "LOW",
            "fixed",
            "base-files: planted low",
        ),
        (
            "GHSA-0000-0000-0001",
            "requests",
            "2.31.0",
            "2.99.0",
            "MEDIUM",
            "fixed",
            "requests: planted medium",
        ),
    }  # CVE-2099-0004 is fixed in the installed openssl: not reported


def test_trivy_reports_exactly_the_planted_alpine_vulnerabilities(tmp_path):
    write_trivy_db(tmp_path / "cache", DEFAULT_ADVISORIES)
    root = write_files(tmp_path / "root", alpine_files())
    assert trivy_rootfs(tmp_path / "cache", root) == {
        ("CVE-2099-0101", "busybox", "1.36.1-r29", "1.36.99-r0", "HIGH", "fixed", "busybox: planted high"),
        (
            "CVE-2099-0102",
            "libcrypto3",
            "3.3.2-r0",
            "3.3.99-r0",
            "MEDIUM",
            "fixed",
            "openssl: planted medium",
        ),
    }  # CVE-2099-0103 is fixed in the installed musl: not reported


def test_pip_vulnerable_ranges_and_name_normalisation(tmp_path):
    write_trivy_db(
        tmp_path / "cache",
        [
            Advisory(
                "GHSA-aaaa-0000-0001", "pip", "Typing_Extensions", "LOW", vulnerable_versions=(">=4.0, <4.5",)
            ),
            Advisory(
                "GHSA-aaaa-0000-0002",
                "pip",
                "typing-extensions",
                "HIGH",
                "4.9.0",
                vulnerable_versions=(">=4.8, <4.9",),
            ),
        ],
    )
    root = write_files(
        tmp_path / "root", {**debian_files(()), **python_package_files("typing_extensions", "4.4.0")}
    )
    found = trivy_rootfs(tmp_path / "cache", root)
    # Without PatchedVersions Trivy offers the range's upper bound as the fixed version.
    assert {(f[0], f[3], f[4]) for f in found} == {("GHSA-aaaa-0000-0001", "4.5", "LOW")}


def test_java_db_identifies_jars_by_pom_properties_and_by_sha1(tmp_path):
    """Maven advisories match a jar named by its pom.properties and one known only by its
    SHA-1 in the generated Java DB; a jar the Java DB does not know is not reported."""
    write_trivy_db(
        tmp_path / "cache",
        [
            Advisory(
                "GHSA-jjjj-0000-0001",
                "maven",
                "org.example:named",
                "CRITICAL",
                "2.0.0",
                vulnerable_versions=(">=1.0, <2.0.0",),
            ),
            Advisory("GHSA-jjjj-0000-0002", "maven", "org.example:bare", "HIGH", "1.10"),
            Advisory("GHSA-jjjj-0000-0003", "maven", "org.example:unknown", "HIGH", "9.0"),
        ],
    )
    bare = java_archive("org.example", "bare", "1.9", pom_properties=False)
    write_java_db(tmp_path / "cache", [JavaArtifact.of(bare, "org.example", "bare", "1.9")])
    root = write_files(
        tmp_path / "root",
        {
            **debian_files(()),
            "app/named.jar": java_archive("org.example", "named", "1.4.2"),
            "app/bare.jar": bare,
            "app/unknown.jar": java_archive("org.example", "unknown", "1.0", pom_properties=False),
        },
    )
    assert {(f[0], f[1], f[2], f[3], f[4]) for f in trivy_rootfs(tmp_path / "cache", root)} == {
        ("GHSA-jjjj-0000-0001", "org.example:named", "1.4.2", "2.0.0", "CRITICAL"),
        ("GHSA-jjjj-0000-0002", "org.example:bare", "1.9", "1.10", "HIGH"),
    }
    meta = json.loads((tmp_path / "cache/java-db/metadata.json").read_text())
    assert meta["Version"] == 1 and datetime.fromisoformat(meta["NextUpdate"]) > datetime.now(UTC)


def test_java_artifacts_need_a_hex_sha1_and_maven_names_a_group():
    with pytest.raises(ValueError, match="sha1"):
        JavaArtifact("g", "a", "1", "not-hex")
    with pytest.raises(ValueError, match="groupId:artifactId"):
        Advisory("GHSA-x", "maven", "artifact-only", "HIGH", "1.0")


def test_thousands_of_advisories_use_branch_pages_and_still_scan_fast(tmp_path):
    started = time.monotonic()
    bulk = [Advisory(f"CVE-2098-{i:05d}", "debian 12", "openssl", "MEDIUM", "3.0.99-1") for i in range(3000)]
    bulk += [Advisory(f"CVE-2097-{i:05d}", "debian 12", f"other{i % 300}", "LOW", "1.0") for i in range(3000)]
    write_trivy_db(tmp_path / "cache", [*DEFAULT_ADVISORIES, *bulk])
    _, stats = read_bbolt((tmp_path / "cache/db/trivy.db").read_bytes())
    assert stats["branch"] > 0
    root = write_files(tmp_path / "root", debian_files())
    ids = {f[0] for f in trivy_rootfs(tmp_path / "cache", root)}
    elapsed = time.monotonic() - started
    assert ids == {"CVE-2099-0001", "CVE-2099-0002", "CVE-2099-0003"} | {
        f"CVE-2098-{i:05d}" for i in range(3000)
    }
    assert elapsed < 10, f"generating and scanning took {elapsed:.1f}s"


def test_fixture_rebuilds_a_newer_db_with_more_advisories(trivy_db, tmp_path):
    meta = json.loads((trivy_db.cache_dir / "db/metadata.json").read_text())
    assert meta["Version"] == 2 and meta["UpdatedAt"] == "2025-01-01T00:00:00Z"
    root = write_files(tmp_path / "root", debian_files())
    assert "CVE-2099-0900" not in {f[0] for f in trivy_rootfs(trivy_db.cache_dir, root)}

    trivy_db.add(Advisory("CVE-2099-0900", "debian 12", "glibc", Severity.CRITICAL, "2.36-9+deb12u10"))
    meta = json.loads((trivy_db.cache_dir / "db/metadata.json").read_text())
    assert meta["UpdatedAt"] == "2025-01-02T00:00:00Z"
    assert datetime.fromisoformat(meta["NextUpdate"]) > datetime.now(UTC)
    found = {(f[0], f[1], f[4]) for f in trivy_rootfs(trivy_db.cache_dir, root)}
    assert ("CVE-2099-0900", "libc6", "CRITICAL") in found
    assert trivy_db.updated_at == DEFAULT_UPDATED_AT.replace(day=2)


@pytest.mark.e2e
def test_trivy_image_from_a_real_registry_finds_the_planted_ids(trivy_db, registry, push_image):
    digest = push_image(
        registry, "team/app:1", build_image({**debian_files(), **python_package_files("requests", "2.31.0")})
    )
    result = subprocess.run(
        [
            TRIVY,
            "image",
            "--cache-dir",
            str(trivy_db.cache_dir),
            *OFFLINE,
            "--image-src",
            "remote",
            "--insecure",
            f"{registry.host}/team/app@{digest}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    ids = {
        v["VulnerabilityID"]
        for r in json.loads(result.stdout)["Results"]
        for v in r.get("Vulnerabilities") or []
    }
    assert ids == {"CVE-2099-0001", "CVE-2099-0002", "CVE-2099-0003", "GHSA-0000-0000-0001"}
