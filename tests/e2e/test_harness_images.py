"""The image builder: deterministic bytes, digests kept by a real push, content Trivy sees."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.harness.images import (
    MEDIA_TYPES,
    PushError,
    alpine_files,
    build_image,
    build_index,
    debian_files,
    python_package_files,
    tar_layer,
)
from tests.harness.registry import Registry

TRIVY = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "trivy"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def raw_manifest(registry: Registry, reference: str) -> bytes:
    result = subprocess.run(
        ["skopeo", "inspect", "--raw", *registry.skopeo_flags(), f"docker://{registry.host}/{reference}"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def trivy_packages(registry: Registry, reference: str, cache: Path, platform: str = "") -> dict:
    """Trivy's package inventory of a pushed image, offline: listing packages (and licenses)
    needs no vulnerability database, unlike ``--scanners vuln``."""
    command = [
        str(TRIVY),
        "image",
        "--quiet",
        "--insecure",
        "--image-src",
        "remote",
        "--cache-dir",
        str(cache),
        "--skip-db-update",
        "--skip-version-check",
        "--offline-scan",
        "--scanners",
        "license",
        "--list-all-pkgs",
        "--format",
        "json",
        *(["--platform", platform] if platform else []),
        f"{registry.host}/{reference}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def packages_by_type(report: dict) -> dict[str, set[tuple[str, str, str]]]:
    """{"debian": {(name, version, source name)}, "python-pkg": {...}}, versions as installed."""
    out: dict[str, set[tuple[str, str, str]]] = {}
    for result in report.get("Results", []):
        for pkg in result.get("Packages", []):
            version = pkg["Version"] + (f"-{pkg['Release']}" if pkg.get("Release") else "")
            out.setdefault(result["Type"], set()).add((pkg["Name"], version, pkg.get("SrcName", "")))
    return out


# --- pure building -------------------------------------------------------------------------


def test_same_input_gives_same_digest_and_created_changes_it() -> None:
    files = {**debian_files(), **python_package_files("requests", "2.30.0")}

    first, again = build_image(files), build_image(dict(reversed(list(files.items()))))
    later = build_image(files, created="2025-06-01T00:00:00Z")

    assert first.digest == again.digest
    assert first.manifest.data == again.manifest.data
    assert later.digest != first.digest
    assert later.layers == first.layers  # only the config differs


def test_layer_is_a_sorted_tar_with_fixed_metadata() -> None:
    image = build_image({"b/file": "two", "a/deep/file": b"one"})
    layer = image.layers[0].data

    assert layer[4:8] == b"\x00\x00\x00\x00"  # gzip header mtime
    tar_bytes = gzip.decompress(layer)
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["a", "a/deep", "a/deep/file", "b", "b/file"]
        assert {(m.uid, m.gid, m.mtime) for m in members} == {(0, 0, 1704067200)}
        assert tar.extractfile("b/file").read() == b"two"
    config = json.loads(image.config.data)
    assert config["rootfs"]["diff_ids"] == [sha256(tar_bytes)]
    assert (config["os"], config["architecture"], config["created"]) == (
        "linux",
        "amd64",
        "2024-01-01T00:00:00Z",
    )


def test_layer_refuses_paths_that_leave_the_root() -> None:
    with pytest.raises(ValueError, match=r"without '..'"):
        tar_layer({"etc/../../escape": "x"})


def test_index_lists_each_platform_with_its_own_content() -> None:
    index = build_index(
        {
            "linux/amd64": alpine_files(arch="x86_64"),
            "linux/arm64/v8": alpine_files(arch="aarch64"),
        }
    )
    doc = json.loads(index.index.data)

    assert doc["mediaType"] == MEDIA_TYPES["oci"]["index"]
    assert [m["platform"] for m in doc["manifests"]] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux", "variant": "v8"},
    ]
    assert [m["digest"] for m in doc["manifests"]] == [i.digest for i in index.images]
    assert [str(i.platform) for i in index.images] == ["linux/amd64", "linux/arm64/v8"]
    assert index.images[0].layers != index.images[1].layers


# --- pushed with skopeo --------------------------------------------------------------------


@pytest.mark.e2e
def test_pushed_image_keeps_its_digest(registry: Registry, push_image) -> None:
    image = build_image(debian_files())

    digest = push_image(registry, "library/debian:12", image)

    raw = raw_manifest(registry, "library/debian:12")
    assert digest == image.digest == sha256(raw)
    assert raw == image.manifest.data


@pytest.mark.e2e
@pytest.mark.parametrize("media_types", ["oci", "docker"])
def test_pushed_index_keeps_its_digest_and_platforms(
    registry: Registry, push_image, media_types: str
) -> None:
    index = build_index(
        {"linux/amd64": alpine_files(arch="x86_64"), "linux/arm64": alpine_files(arch="aarch64")},
        media_types=media_types,
    )

    digest = push_image(registry, "library/alpine:3.20", index)

    raw = raw_manifest(registry, "library/alpine:3.20")
    assert digest == index.digest == sha256(raw)
    assert json.loads(raw)["mediaType"] == MEDIA_TYPES[media_types]["index"]
    for image in index.images:
        assert sha256(raw_manifest(registry, f"library/alpine@{image.digest}")) == image.digest


@pytest.mark.e2e
def test_failed_push_says_where_without_the_password(auth_registry: Registry, push_image) -> None:
    auth_registry.stop()

    with pytest.raises(PushError) as info:
        push_image(auth_registry, "team/app:1", debian_files())

    assert f"{auth_registry.host}/team/app:1" in str(info.value)
    assert auth_registry.password not in str(info.value)


# --- what Trivy sees -----------------------------------------------------------------------


@pytest.mark.e2e
def test_trivy_detects_debian_and_python_packages(registry: Registry, push_image, tmp_path: Path) -> None:
    files = {
        **debian_files([("libc6", "2.36-9+deb12u9", "glibc"), ("openssl", "3.0.15-1~deb12u1", "openssl")]),
        **python_package_files("requests", "2.30.0"),
    }
    push_image(registry, "library/python:3.11", files)

    report = trivy_packages(registry, "library/python:3.11", tmp_path / "cache")

    assert report["Metadata"]["OS"] == {"Family": "debian", "Name": "12.8"}
    found = packages_by_type(report)
    assert found["debian"] == {
        ("libc6", "2.36-9+deb12u9", "glibc"),
        ("openssl", "3.0.15-1~deb12u1", "openssl"),
    }
    assert found["python-pkg"] == {("requests", "2.30.0", "")}


@pytest.mark.e2e
def test_trivy_detects_alpine_packages_per_platform(registry: Registry, push_image, tmp_path: Path) -> None:
    index = build_index(
        {
            "linux/amd64": alpine_files([("musl", "1.2.5-r0", "musl")], arch="x86_64"),
            "linux/arm64": alpine_files(
                [("musl", "1.2.5-r0", "musl"), ("libcrypto3", "3.3.2-r0", "openssl")], arch="aarch64"
            ),
        }
    )
    push_image(registry, "library/alpine:3.20", index)

    amd64 = trivy_packages(registry, "library/alpine:3.20", tmp_path / "cache", "linux/amd64")
    arm64 = trivy_packages(registry, "library/alpine:3.20", tmp_path / "cache", "linux/arm64")

    assert amd64["Metadata"]["OS"] == {"Family": "alpine", "Name": "3.20.3"}
    assert packages_by_type(amd64) == {"alpine": {("musl", "1.2.5-r0", "musl")}}
    assert packages_by_type(arm64) == {
        "alpine": {("musl", "1.2.5-r0", "musl"), ("libcrypto3", "3.3.2-r0", "openssl")}
    }
