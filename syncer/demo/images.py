"""OCI images built in pure Python, written as an OCI layout and pushed with real skopeo.

Everything is deterministic (sorted tar entries, fixed mtimes and owners, a gzip header
without time or name, compact JSON), so the same input always gives the same digest and a
test can compute the digest it expects before pushing.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import subprocess
import tarfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import zstandard

from syncer.demo.registry import HARNESS_AGENT, Registry

Files = Mapping[str, "str | bytes"]

# Docker Hub serves both families; "docker" gives a schema 2 manifest / manifest list.
MEDIA_TYPES: dict[str, dict[str, str]] = {
    "oci": {
        "index": "application/vnd.oci.image.index.v1+json",
        "manifest": "application/vnd.oci.image.manifest.v1+json",
        "config": "application/vnd.oci.image.config.v1+json",
        "layer": "application/vnd.oci.image.layer.v1.tar+gzip",
    },
    "docker": {
        "index": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifest": "application/vnd.docker.distribution.manifest.v2+json",
        "config": "application/vnd.docker.container.image.v1+json",
        "layer": "application/vnd.docker.image.rootfs.diff.tar.gzip",
    },
}

DEFAULT_CREATED = "2024-01-01T00:00:00Z"
# Tar mtimes: fixed, and not 0, which some tools read as "unset".
_FILE_MTIME = 1704067200  # 2024-01-01T00:00:00Z
_SKOPEO_TIMEOUT = 120


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json_bytes(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return sha256_digest(self.data)

    def descriptor(self, **extra: object) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data), **extra}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"platform {text!r} is not os/arch[/variant], e.g. linux/arm64")
        return cls(*parts)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def as_json(self) -> dict[str, str]:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out


@dataclass(frozen=True)
class Image:
    """One platform's image: a manifest, its config and its layers."""

    manifest: Blob
    config: Blob
    layers: tuple[Blob, ...]
    platform: Platform

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @property
    def blobs(self) -> tuple[Blob, ...]:
        return (self.manifest, self.config, *self.layers)


@dataclass(frozen=True)
class ImageIndex:
    """A multi-platform image: an index (or Docker manifest list) over ``images``."""

    index: Blob
    images: tuple[Image, ...]

    @property
    def manifest(self) -> Blob:
        return self.index

    @property
    def digest(self) -> str:
        return self.index.digest

    @property
    def blobs(self) -> tuple[Blob, ...]:
        return (self.index, *(b for image in self.images for b in image.blobs))


Artifact = Image | ImageIndex


def tar_layer(files: Files) -> bytes:
    """An uncompressed tar of ``files`` with their parent directories, in sorted order."""
    entries: dict[str, bytes | None] = {}
    for raw_path, content in files.items():
        path = PurePosixPath(raw_path.lstrip("/"))
        if ".." in path.parts or not path.parts:
            raise ValueError(f"layer path {raw_path!r} must be relative, without '..'")
        for parent in reversed(path.parents[:-1]):
            entries.setdefault(str(parent), None)
        entries[str(path)] = content.encode() if isinstance(content, str) else bytes(content)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in sorted(entries):
            data = entries[name]
            info = tarfile.TarInfo(name)
            info.mtime = _FILE_MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    out = io.BytesIO()
    # No file name and mtime 0 in the header: the compressed bytes depend on content only.
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as gz:
        gz.write(data)
    return out.getvalue()


# OCI layer media types by compression; Docker's schema 2 has gzip only.
_OCI_LAYERS = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "none": "application/vnd.oci.image.layer.v1.tar",
}


def compress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip_bytes(data)
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(data)
    if compression == "none":
        return data
    raise ValueError(f"compression {compression!r} is not one of {', '.join(_OCI_LAYERS)}")


def build_image(
    files: Files | Sequence[Files],
    *,
    platform: str = "linux/amd64",
    created: str = DEFAULT_CREATED,
    media_types: str = "oci",
    compression: str = "gzip",
    diff_ids: Sequence[str] | None = None,
) -> Image:
    """An image of ``files`` (one layer), or of a sequence of them (one layer each, bottom
    first), for ``platform``; ``created`` is the config's time.

    ``compression`` (gzip, zstd, none) needs OCI media types. ``diff_ids`` replaces what the
    config claims the layers' uncompressed digests are: an upstream image that lies.
    """
    types = MEDIA_TYPES[media_types]
    if compression != "gzip" and media_types != "oci":
        raise ValueError(f"{media_types} media types have gzip layers only")
    plat = Platform.parse(platform)
    tars = [tar_layer(files)] if isinstance(files, Mapping) else [tar_layer(f) for f in files]
    layer_type = _OCI_LAYERS[compression] if media_types == "oci" else types["layer"]
    layers = tuple(Blob(layer_type, compress(t, compression)) for t in tars)
    config_doc: dict[str, object] = {
        **plat.as_json(),
        "created": created,
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {
            "type": "layers",
            "diff_ids": list(diff_ids) if diff_ids is not None else [sha256_digest(t) for t in tars],
        },
        "history": [{"created": created, "created_by": "syncer test harness"} for _ in tars],
    }
    config = Blob(types["config"], _json_bytes(config_doc))
    manifest = Blob(
        types["manifest"],
        _json_bytes(
            {
                "schemaVersion": 2,
                "mediaType": types["manifest"],
                "config": config.descriptor(),
                "layers": [layer.descriptor() for layer in layers],
            }
        ),
    )
    return Image(manifest=manifest, config=config, layers=layers, platform=plat)


def build_index(
    platforms: Mapping[str, Files],
    *,
    created: str = DEFAULT_CREATED,
    media_types: str = "oci",
) -> ImageIndex:
    """A multi-platform image: ``{"linux/amd64": files, "linux/arm64": other_files}``."""
    images = tuple(
        build_image(files, platform=platform, created=created, media_types=media_types)
        for platform, files in platforms.items()
    )
    return index_of(images, media_types=media_types)


def index_of(images: Sequence[Image], *, media_types: str = "oci") -> ImageIndex:
    """An index over images built separately (e.g. with different ``created`` times)."""
    types = MEDIA_TYPES[media_types]
    index = Blob(
        types["index"],
        _json_bytes(
            {
                "schemaVersion": 2,
                "mediaType": types["index"],
                "manifests": [i.manifest.descriptor(platform=i.platform.as_json()) for i in images],
            }
        ),
    )
    return ImageIndex(index=index, images=tuple(images))


def write_layout(artifact: Artifact, directory: Path, tag: str) -> Path:
    """Writes (or adds to) an OCI image layout; ``oci:DIRECTORY:TAG`` then names ``artifact``."""
    blobs_dir = directory / "blobs" / "sha256"
    blobs_dir.mkdir(parents=True, exist_ok=True)
    (directory / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    for blob in artifact.blobs:
        (blobs_dir / blob.digest.removeprefix("sha256:")).write_bytes(blob.data)
    index_file = directory / "index.json"
    index: dict[str, Any] = (
        json.loads(index_file.read_text()) if index_file.exists() else {"schemaVersion": 2, "manifests": []}
    )
    ref_key = "org.opencontainers.image.ref.name"
    index["manifests"] = [m for m in index["manifests"] if m.get("annotations", {}).get(ref_key) != tag] + [
        artifact.manifest.descriptor(annotations={ref_key: tag})
    ]
    index_file.write_text(json.dumps(index, indent=2))
    return directory


def write_dir(artifact: Artifact, directory: Path) -> Path:
    """Writes containers/image's ``dir:`` layout, the way skopeo pushes Docker media types:
    its ``oci:`` transport only accepts OCI ones."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "version").write_text("Directory Transport Version: 1.1\n")
    (directory / "manifest.json").write_bytes(artifact.manifest.data)
    images = artifact.images if isinstance(artifact, ImageIndex) else ()
    for image in images:
        (directory / f"{image.digest.removeprefix('sha256:')}.manifest.json").write_bytes(image.manifest.data)
    manifests = {artifact.digest, *(image.digest for image in images)}
    for blob in artifact.blobs:
        if blob.digest not in manifests:
            (directory / blob.digest.removeprefix("sha256:")).write_bytes(blob.data)
    return directory


class PushError(RuntimeError):
    """skopeo could not push, or the registry holds a different digest than we built."""


def split_reference(reference: str) -> tuple[str, str]:
    """``"library/nginx:1.27"`` -> (``library/nginx``, ``1.27``); the registry is not part of it."""
    match = re.fullmatch(r"([a-z0-9]+(?:[._/-][a-z0-9]+)*):([\w][\w.-]{0,127})", reference)
    if not match:
        raise ValueError(f"{reference!r} is not repository:tag (without the registry host)")
    return match[1], match[2]


def push(artifact: Artifact, registry: Registry, reference: str, workdir: Path) -> str:
    """Pushes ``artifact`` as ``registry/reference`` with skopeo; returns its digest.

    The digest is computed from the bytes we built; the push fails unless the registry
    serves exactly that digest for the tag afterwards.
    """
    repository, tag = split_reference(reference)
    if artifact.manifest.media_type in MEDIA_TYPES["oci"].values():
        source = f"oci:{write_layout(artifact, workdir, tag)}:{tag}"
    else:
        source = f"dir:{write_dir(artifact, workdir)}"
    # --insecure-policy: the source is what we just built, whatever the machine's policy.json.
    command = [
        "skopeo",
        "--insecure-policy",
        "copy",
        "--all",
        "--preserve-digests",
        "--quiet",
        *registry.skopeo_flags("dest"),
        source,
        f"docker://{registry.host}/{repository}:{tag}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=_SKOPEO_TIMEOUT, check=False)
    if result.returncode != 0:
        raise PushError(f"skopeo copy to {registry.host}/{reference} failed: {result.stderr.strip()}")
    with registry.session() as session:
        response = session.head(
            f"{registry.url}/v2/{repository}/manifests/{tag}",
            headers={"Accept": artifact.manifest.media_type, "User-Agent": HARNESS_AGENT},
            timeout=10,
        )
    served = response.headers.get("Docker-Content-Digest")
    if served != artifact.digest:
        raise PushError(
            f"{registry.host}/{reference} serves {served} (HTTP {response.status_code}), "
            f"but the pushed bytes hash to {artifact.digest}"
        )
    return artifact.digest


# --- realistic content ----------------------------------------------------------------------

DEBIAN_BASE: tuple[tuple[str, str, str], ...] = (
    ("base-files", "12.4+deb12u8", "base-files"),
    ("libc6", "2.36-9+deb12u9", "glibc"),
    ("libssl3", "3.0.15-1~deb12u1", "openssl"),
)

ALPINE_BASE: tuple[tuple[str, str, str], ...] = (
    ("musl", "1.2.5-r0", "musl"),
    ("busybox", "1.36.1-r29", "busybox"),
    ("libcrypto3", "3.3.2-r0", "openssl"),
)


def debian_files(
    packages: Sequence[tuple[str, str, str]] = DEBIAN_BASE,
    *,
    arch: str = "amd64",
    point_release: str = "12.8",
) -> dict[str, str]:
    """Debian 12 (bookworm): ``etc/os-release``, ``etc/debian_version`` and a dpkg status
    database listing ``packages`` as (name, version, source package name)."""
    stanzas = []
    for name, version, source in packages:
        lines = [
            f"Package: {name}",
            "Status: install ok installed",
            "Priority: optional",
            "Section: libs",
            "Installed-Size: 100",
            "Maintainer: Debian Maintainers <debian@example.invalid>",
            f"Architecture: {arch}",
        ]
        if source != name:
            lines.append(f"Source: {source}")
        lines += [f"Version: {version}", f"Description: {name} (syncer test package)"]
        stanzas.append("\n".join(lines) + "\n")
    return {
        "etc/os-release": (
            'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n'
            'NAME="Debian GNU/Linux"\n'
            'VERSION_ID="12"\n'
            'VERSION="12 (bookworm)"\n'
            "VERSION_CODENAME=bookworm\n"
            "ID=debian\n"
            'HOME_URL="https://www.debian.org/"\n'
        ),
        # Trivy identifies Debian, and its point release, from this file.
        "etc/debian_version": f"{point_release}\n",
        "var/lib/dpkg/status": "\n".join(stanzas),
    }


def alpine_files(
    packages: Sequence[tuple[str, str, str]] = ALPINE_BASE,
    *,
    arch: str = "x86_64",
    release: str = "3.20.3",
) -> dict[str, str]:
    """Alpine 3.20: ``etc/os-release``, ``etc/alpine-release`` and an apk database listing
    ``packages`` as (name, version, origin)."""
    entries = [
        "\n".join(
            [
                f"P:{name}",
                f"V:{version}",
                f"A:{arch}",
                "S:1000",
                "I:4096",
                f"T:{name} (syncer test package)",
                "U:https://alpinelinux.org",
                "L:MIT",
                f"o:{origin}",
                "m:Syncer Tests <tests@example.invalid>",
                "t:1704067200",
            ]
        )
        + "\n"
        for name, version, origin in packages
    ]
    return {
        "etc/os-release": (
            'NAME="Alpine Linux"\n'
            "ID=alpine\n"
            f"VERSION_ID={release}\n"
            f'PRETTY_NAME="Alpine Linux v{release.rsplit(".", 1)[0]}"\n'
            'HOME_URL="https://alpinelinux.org/"\n'
        ),
        "etc/alpine-release": f"{release}\n",
        "lib/apk/db/installed": "\n".join(entries),
    }


def python_package_files(
    name: str,
    version: str,
    *,
    license: str = "Apache-2.0",  # noqa: A002 - the METADATA field it fills
    site_packages: str = "usr/lib/python3.11/site-packages",
) -> dict[str, str]:
    """A wheel-installed Python distribution: its ``*.dist-info/METADATA``."""
    dist_dir = f"{re.sub(r'[-_.]+', '_', name)}-{version}.dist-info"
    metadata = (
        "Metadata-Version: 2.1\n"
        f"Name: {name}\n"
        f"Version: {version}\n"
        f"Summary: {name} (syncer test package)\n"
        f"License: {license}\n"
        "\n"
    )
    return {f"{site_packages}/{dist_dir}/METADATA": metadata}


def java_archive(group_id: str, artifact_id: str, version: str, *, pom_properties: bool = True) -> bytes:
    """A deterministic jar: MANIFEST.MF, one class file and, when ``pom_properties``, Maven's
    ``META-INF/maven/<group>/<artifact>/pom.properties`` naming it. Without that file Trivy
    can identify the jar only by its SHA-1 in the Java DB."""
    entries: dict[str, str | bytes] = {
        "META-INF/MANIFEST.MF": "Manifest-Version: 1.0\nCreated-By: syncer test harness\n",
        f"{artifact_id.replace('-', '/')}/Main.class": b"\xca\xfe\xba\xbe",
    }
    if pom_properties:
        entries[f"META-INF/maven/{group_id}/{artifact_id}/pom.properties"] = (
            f"groupId={group_id}\nartifactId={artifact_id}\nversion={version}\n"
        )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as jar:
        for name, content in entries.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            jar.writestr(info, content)
    return out.getvalue()
