"""Trivy's databases built from planted advisories and artifacts, so Trivy scans offline.

Trivy 0.76 reads ``<cache>/db/trivy.db`` (a bbolt v1.5 file, DB schema 2) and
``<cache>/db/metadata.json``. This module writes both in pure Python: a minimal bbolt writer
(``encode_bbolt``) and a builder that lays out Trivy's buckets (``write_trivy_db``). The bucket
layout is trivy-db's (github.com/aquasecurity/trivy-db, pkg/db and pkg/types: one top-level
bucket per advisory source, then package name, then vulnerability id; ``vulnerability`` holds
the details by id); the page layout follows go.etcd.io/bbolt (internal/common/page.go,
meta.go, inode.go). tests/e2e/test_trivydb.py reads the files back with Trivy itself.

Java archives are identified with a second database, ``<cache>/java-db/trivy-java.db`` (SQLite,
schema 1 of github.com/aquasecurity/trivy-java-db pkg/db) and its ``metadata.json``, written
by ``write_java_db``. Trivy opens it for any image holding a .jar/.war/.ear/.par, even when
the jar's own pom.properties names it; a jar without one is looked up by its SHA-1.

The fixture ``trivy_db`` gives each test its own cache directory holding a small default DB
(``DEFAULT_ADVISORIES``, over the packages of tests.harness.images' base content) and an empty
Java DB, as a seeded cache has both; ``TrivyDB.write`` rewrites the first, e.g. newer and with
more advisories, to exercise re-scans, ``TrivyDB.write_java`` the second.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import struct
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from syncer.core.model import Severity
from syncer.demo.images import MEDIA_TYPES, Blob, Image, Platform, gzip_bytes, tar_layer

# --- bbolt -----------------------------------------------------------------------------------

PAGE_SIZE = 4096
_MAGIC = 0xED0CDAED
_VERSION = 2
_BRANCH, _LEAF, _META, _FREELIST = 0x01, 0x02, 0x04, 0x10
_BUCKET_LEAF_FLAG = 0x01
_HEADER = struct.Struct("<QHHI")  # page id, flags, count, overflow
_LEAF_ELEMENT = struct.Struct("<IIII")  # flags, pos, ksize, vsize; pos counts from the element
_BRANCH_ELEMENT = struct.Struct("<IIQ")  # pos, ksize, child page id
_BUCKET_HEADER = struct.Struct("<QQ")  # root page id, sequence
_META_BODY = struct.Struct("<IIIIQQQQQ")  # magic … txid: the 56 bytes the checksum covers
# Nodes are split near one page so they stay far below count's 16-bit limit.
_FILL = PAGE_SIZE - _HEADER.size

# A bucket maps keys to values or to nested buckets.
Bucket = dict[bytes, "bytes | Bucket"]


def _fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


class _PageWriter:
    """Appends nodes as pages, numbering them; pages 0-2 are the metas and the freelist."""

    def __init__(self) -> None:
        self.pages: list[bytes] = []
        self.next_id = 3

    def add(self, flags: int, count: int, body: bytes) -> int:
        pgid = self.next_id
        size = _HEADER.size + len(body)
        npages = -(-size // PAGE_SIZE)
        page = _HEADER.pack(pgid, flags, count, npages - 1) + body
        self.pages.append(page.ljust(npages * PAGE_SIZE, b"\0"))
        self.next_id += npages
        return pgid


def _node_body(
    element: struct.Struct, items: Sequence[tuple[tuple[int, ...], bytes, bytes]], leaf: bool
) -> bytes:
    """Element array followed by the keys and values, each element pointing at its data."""
    heads, data = [], b""
    for i, (extra, key, value) in enumerate(items):
        pos = (len(items) - i) * element.size + len(data)
        if leaf:
            heads.append(element.pack(extra[0], pos, len(key), len(value)))
        else:
            heads.append(element.pack(pos, len(key), extra[0]))
        data += key + value
    return b"".join(heads) + data


def _chunks(sizes: list[int]) -> list[slice]:
    """Consecutive runs whose sizes add up to about one page (at least one item each)."""
    runs, start, used = [], 0, 0
    for i, size in enumerate(sizes):
        if i > start and used + size > _FILL:
            runs.append(slice(start, i))
            start, used = i, 0
        used += size
    runs.append(slice(start, len(sizes)))
    return runs


def _write_bucket(writer: _PageWriter, bucket: Bucket) -> int:
    """Writes a bucket's subtree (children first) and returns its root page id."""
    leaf_items: list[tuple[tuple[int, ...], bytes, bytes]] = []
    for key in sorted(bucket):  # bbolt binary-searches: unsorted keys silently find nothing
        if not key:
            raise ValueError("bbolt keys must not be empty")
        value = bucket[key]
        if isinstance(value, dict):
            root = _write_bucket(writer, value)
            leaf_items.append(((_BUCKET_LEAF_FLAG,), key, _BUCKET_HEADER.pack(root, 0)))
        else:
            leaf_items.append(((0,), key, value))
    sizes = [_LEAF_ELEMENT.size + len(k) + len(v) for _, k, v in leaf_items]
    level = []  # (first key, page id) of each node of the level just written
    for run in _chunks(sizes) if leaf_items else [slice(0, 0)]:
        items = leaf_items[run]
        pgid = writer.add(_LEAF, len(items), _node_body(_LEAF_ELEMENT, items, leaf=True))
        level.append((items[0][1] if items else b"", pgid))
    while len(level) > 1:
        sizes = [_BRANCH_ELEMENT.size + len(k) for k, _ in level]
        upper = []
        for run in _chunks(sizes):
            items = [((pgid,), key, b"") for key, pgid in level[run]]
            pgid = writer.add(_BRANCH, len(items), _node_body(_BRANCH_ELEMENT, items, leaf=False))
            upper.append((items[0][1], pgid))
        level = upper
    return level[0][1]


def encode_bbolt(root: Bucket) -> bytes:
    """A complete bbolt file whose top-level buckets are ``root``'s (all values must be buckets)."""
    if any(not isinstance(v, dict) for v in root.values()):
        raise ValueError("bbolt's top level holds buckets only")
    writer = _PageWriter()
    root_pgid = _write_bucket(writer, root)
    metas = []
    for txid in (0, 1):
        body = _META_BODY.pack(_MAGIC, _VERSION, PAGE_SIZE, 0, root_pgid, 0, 2, writer.next_id, txid)
        meta = _HEADER.pack(txid, _META, 0, 0) + body + struct.pack("<Q", _fnv1a64(body))
        metas.append(meta.ljust(PAGE_SIZE, b"\0"))
    freelist = _HEADER.pack(2, _FREELIST, 0, 0).ljust(PAGE_SIZE, b"\0")
    return b"".join(metas) + freelist + b"".join(writer.pages)


# --- Trivy's buckets -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ecosystem:
    bucket: str  # platform bucket name in trivy.db
    source_id: str  # data source id, the key of VendorSeverity
    source_name: str
    url: str


ECOSYSTEMS = {
    "debian 12": _Ecosystem(
        "debian 12",
        "debian",
        "Debian Security Tracker",
        "https://salsa.debian.org/security-tracker-team/security-tracker",
    ),
    "alpine 3.20": _Ecosystem("alpine 3.20", "alpine", "Alpine Secdb", "https://secdb.alpinelinux.org/"),
    "pip": _Ecosystem(
        "pip::GitHub Security Advisory pip",
        "ghsa",
        "GitHub Security Advisory pip",
        "https://github.com/advisories?query=type%3Areviewed+ecosystem%3Apip",
    ),
    "maven": _Ecosystem(
        "maven::GitHub Security Advisory Maven",
        "ghsa",
        "GitHub Security Advisory Maven",
        "https://github.com/advisories?query=type%3Areviewed+ecosystem%3Amaven",
    ),
}
# Language ecosystems: advisories carry version constraints rather than one fixed version.
_RANGED = ("pip", "maven")


@dataclass(frozen=True)
class Advisory:
    """One planted vulnerability of one package.

    ``package`` is the *source* package for Debian (dpkg ``Source:``) and the origin for Alpine;
    Trivy reports it against every binary package built from it. Alpine advisories need a
    ``fixed_version`` (Trivy skips unfixed Alpine entries). For pip, ``vulnerable_versions``
    are PEP 440 constraints and default to ``<fixed_version``; for maven, ``package`` is
    ``groupId:artifactId`` and the constraints are Maven versions.
    """

    id: str
    ecosystem: str
    package: str
    severity: Severity | str
    fixed_version: str | None = None
    vulnerable_versions: tuple[str, ...] | None = None
    title: str = ""

    def __post_init__(self) -> None:
        if self.ecosystem not in ECOSYSTEMS:
            raise ValueError(f"ecosystem {self.ecosystem!r} is not one of {sorted(ECOSYSTEMS)}")
        if isinstance(self.severity, str):
            object.__setattr__(self, "severity", Severity.parse(self.severity))
        if self.ecosystem == "alpine 3.20" and not self.fixed_version:
            raise ValueError(f"{self.id}: Alpine advisories need a fixed_version")
        if self.ecosystem in _RANGED and not (self.fixed_version or self.vulnerable_versions):
            raise ValueError(
                f"{self.id}: {self.ecosystem} advisories need fixed_version or vulnerable_versions"
            )
        if self.ecosystem == "maven" and self.package.count(":") != 1:
            raise ValueError(f"{self.id}: a maven package is groupId:artifactId, not {self.package!r}")


def _pip_name(name: str) -> str:
    # Trivy looks pip packages up by their PEP 503 normalised name.
    return re.sub(r"[-_.]+", "-", name).lower()


def _advisory_value(adv: Advisory) -> dict:
    if adv.ecosystem not in _RANGED:
        return {"FixedVersion": adv.fixed_version} if adv.fixed_version else {}
    vulnerable = adv.vulnerable_versions or (f"<{adv.fixed_version}",)
    value: dict = {"VulnerableVersions": list(vulnerable)}
    if adv.fixed_version:
        value["PatchedVersions"] = [adv.fixed_version]
    return value


def _json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def trivy_buckets(advisories: list[Advisory] | tuple[Advisory, ...]) -> Bucket:
    """Trivy's bucket tree for the advisories: platform buckets, ``vulnerability``, ``data-source``."""
    # Every ecosystem's bucket exists, empty or not, as in Trivy's real DB: a bucket is how
    # syncer tells an OS release the DB knows (no advisories: clean) from one it does not
    # (nothing matched: unassessed).
    platforms: dict[bytes, Bucket] = {eco.bucket.encode(): {} for eco in ECOSYSTEMS.values()}
    sources: Bucket = {
        eco.bucket.encode(): _json({"ID": eco.source_id, "Name": eco.source_name, "URL": eco.url})
        for eco in ECOSYSTEMS.values()
    }
    details: dict[str, dict[str, Any]] = {}
    for adv in advisories:
        eco = ECOSYSTEMS[adv.ecosystem]
        package = _pip_name(adv.package) if adv.ecosystem == "pip" else adv.package
        advisories_of = platforms.setdefault(eco.bucket.encode(), {}).setdefault(package.encode(), {})
        assert isinstance(advisories_of, dict)  # a package's bucket, never a value
        assert isinstance(adv.severity, Severity)  # __post_init__ parsed a name
        advisories_of[adv.id.encode()] = _json(_advisory_value(adv))
        detail = details.setdefault(
            adv.id,
            {
                "Title": adv.title or f"{adv.id} in {package}",
                "Severity": adv.severity.name,
                "VendorSeverity": {},
            },
        )
        detail["VendorSeverity"][eco.source_id] = int(adv.severity)
    return {
        **platforms,
        b"data-source": sources,
        b"vulnerability": {k.encode(): _json(v) for k, v in details.items()},
    }


def _go_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_trivy_db(
    cache_dir: str | os.PathLike[str], advisories: Iterable[Advisory], *, updated_at: datetime | None = None
) -> Path:
    """Writes ``<cache_dir>/db/trivy.db`` and ``metadata.json``; returns the db directory.

    Both files are replaced atomically, so a rebuilt DB never appears half-written. NextUpdate
    lies a day in the future so that even a run without ``--skip-db-update`` downloads nothing.
    """
    db_dir = Path(cache_dir) / "db"
    _replace(
        db_dir,
        {
            "trivy.db": encode_bbolt(trivy_buckets(list(advisories))),
            "metadata.json": _metadata(2, updated_at),
        },
    )
    return db_dir


def _metadata(version: int, updated_at: datetime | None) -> bytes:
    """metadata.json of either DB; Trivy reads both with the same four fields."""
    now = datetime.now(UTC)
    updated_at = updated_at or now
    return json.dumps(
        {
            "Version": version,
            "NextUpdate": _go_time(max(now, updated_at) + timedelta(days=1)),
            "UpdatedAt": _go_time(updated_at),
            "DownloadedAt": _go_time(now),
        },
        indent=2,
    ).encode()


def _replace(directory: Path, files: dict[str, bytes]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        tmp = directory / f".{name}.tmp"
        tmp.write_bytes(content)
        os.replace(tmp, directory / name)


# --- the Java DB -----------------------------------------------------------------------------


@dataclass(frozen=True)
class JavaArtifact:
    """One indexed Maven artifact: what Trivy answers for a jar whose SHA-1 is ``sha1``."""

    group_id: str
    artifact_id: str
    version: str
    sha1: str  # hex, of the archive's bytes
    archive_type: str = "jar"  # or "aar"

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[0-9a-f]{40}", self.sha1):
            raise ValueError(
                f"{self.group_id}:{self.artifact_id}: sha1 must be 40 lowercase hex digits, not {self.sha1!r}"
            )

    @classmethod
    def of(cls, archive: bytes, group_id: str, artifact_id: str, version: str) -> JavaArtifact:
        return cls(group_id, artifact_id, version, hashlib.sha1(archive).hexdigest())


# trivy-java-db pkg/db DB.Init, verbatim: Trivy's queries join these tables by these names.
_JAVA_SCHEMA = (
    "CREATE TABLE artifacts(id INTEGER PRIMARY KEY, group_id TEXT, artifact_id TEXT)",
    "CREATE TABLE indices(artifact_id INTEGER, version TEXT, sha1 BLOB, archive_type TEXT, "
    "foreign key (artifact_id) references artifacts(id))",
    "CREATE UNIQUE INDEX artifacts_idx ON artifacts(artifact_id, group_id)",
    "CREATE INDEX indices_artifact_idx ON indices(artifact_id)",
    "CREATE UNIQUE INDEX indices_sha1_idx ON indices(sha1)",
)
JAVA_DB_SCHEMA_VERSION = 1  # metadata.json "Version"; any other makes Trivy download a new one


def java_db_bytes(artifacts: Iterable[JavaArtifact]) -> bytes:
    """The SQLite file trivy-java.db indexing ``artifacts``."""
    with tempfile.TemporaryDirectory(prefix="syncer-java-db-") as work:
        path = Path(work) / "trivy-java.db"
        db = sqlite3.connect(path)
        try:
            for statement in _JAVA_SCHEMA:
                db.execute(statement)
            for art in artifacts:
                db.execute(
                    "INSERT OR IGNORE INTO artifacts(group_id, artifact_id) VALUES (?, ?)",
                    (art.group_id, art.artifact_id),
                )
                # The sha1 is a BLOB: Trivy compares it with the decoded digest's bytes.
                db.execute(
                    "INSERT INTO indices(artifact_id, version, sha1, archive_type) VALUES "
                    "((SELECT id FROM artifacts WHERE group_id=? AND artifact_id=?), "
                    "?, ?, ?)",
                    (art.group_id, art.artifact_id, art.version, bytes.fromhex(art.sha1), art.archive_type),
                )
            db.commit()
        finally:
            db.close()
        return path.read_bytes()


def write_java_db(
    cache_dir: str | os.PathLike[str],
    artifacts: Iterable[JavaArtifact] = (),
    *,
    updated_at: datetime | None = None,
) -> Path:
    """Writes ``<cache_dir>/java-db/trivy-java.db`` and ``metadata.json``; returns the directory.

    Like ``write_trivy_db``: replaced atomically, NextUpdate a day ahead so nothing downloads.
    """
    java_dir = Path(cache_dir) / "java-db"
    _replace(
        java_dir,
        {
            "trivy-java.db": java_db_bytes(list(artifacts)),
            "metadata.json": _metadata(JAVA_DB_SCHEMA_VERSION, updated_at),
        },
    )
    return java_dir


# --- as Trivy downloads them ------------------------------------------------------------------

# What ghcr.io/aquasecurity/trivy-db:2 and trivy-java-db:1 serve: a one-layer OCI artifact whose
# layer is a .tar.gz of the DB directory, its file name in the title annotation (Trivy's
# pkg/oci and pkg/db, pkg/javadb).
_DB_ARTIFACTS = {
    "db": ("application/vnd.aquasec.trivy.db.layer.v1.tar+gzip", "db.tar.gz"),
    "java-db": ("application/vnd.aquasec.trivy.javadb.layer.v1.tar+gzip", "javadb.tar.gz"),
}
_DB_CONFIG = "application/vnd.aquasec.trivy.config.v1+json"


def db_artifact(cache_dir: str | os.PathLike, which: str) -> Image:
    """The OCI artifact of ``<cache_dir>/<which>`` (``db`` or ``java-db``), to push to a
    registry that a run then downloads that DB from (--db-repository, --java-db-repository)."""
    media_type, title = _DB_ARTIFACTS[which]
    directory = Path(cache_dir) / which
    layer = Blob(
        media_type,
        gzip_bytes(
            tar_layer(
                {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if not p.name.startswith(".")}
            )
        ),
    )
    config = Blob(_DB_CONFIG, b"{}")
    manifest = Blob(
        MEDIA_TYPES["oci"]["manifest"],
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_TYPES["oci"]["manifest"],
                "config": config.descriptor(),
                "layers": [layer.descriptor(annotations={"org.opencontainers.image.title": title})],
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode(),
    )
    return Image(manifest=manifest, config=config, layers=(layer,), platform=Platform.parse("linux/amd64"))


# --- fixture ---------------------------------------------------------------------------------

# A small set over the packages of tests.harness.images' DEBIAN_BASE, ALPINE_BASE and a
# python_package_files("requests", "2.31.0"): fixed and unfixed, several severities, and one
# advisory per OS that the installed version already fixes, which Trivy must not report.
DEFAULT_UPDATED_AT = datetime(2025, 1, 1, tzinfo=UTC)
DEFAULT_ADVISORIES: tuple[Advisory, ...] = (
    Advisory(
        "CVE-2099-0001", "debian 12", "openssl", "CRITICAL", "3.0.99-1", title="openssl: planted critical"
    ),
    Advisory("CVE-2099-0002", "debian 12", "glibc", "HIGH", title="glibc: planted unfixed high"),
    Advisory(
        "CVE-2099-0003", "debian 12", "base-files", "LOW", "12.4+deb12u99", title="base-files: planted low"
    ),
    Advisory(
        "CVE-2099-0004",
        "debian 12",
        "openssl",
        "HIGH",
        "3.0.15-1~deb12u1",
        title="openssl: fixed in the installed version",
    ),
    Advisory("CVE-2099-0101", "alpine 3.20", "busybox", "HIGH", "1.36.99-r0", title="busybox: planted high"),
    Advisory(
        "CVE-2099-0102", "alpine 3.20", "openssl", "MEDIUM", "3.3.99-r0", title="openssl: planted medium"
    ),
    Advisory(
        "CVE-2099-0103",
        "alpine 3.20",
        "musl",
        "CRITICAL",
        "1.2.5-r0",
        title="musl: fixed in the installed version",
    ),
    Advisory("GHSA-0000-0000-0001", "pip", "requests", "MEDIUM", "2.99.0", title="requests: planted medium"),
)


@dataclass
class TrivyDB:
    """A Trivy cache directory with a generated DB; ``write`` replaces the DB in place."""

    cache_dir: Path
    advisories: tuple[Advisory, ...] = ()
    updated_at: datetime = DEFAULT_UPDATED_AT

    def write(
        self, advisories: Iterable[Advisory] | None = None, *, updated_at: datetime | None = None
    ) -> TrivyDB:
        """Rebuilds the DB; by default with the same advisories, one day newer."""
        if advisories is not None:
            self.advisories = tuple(advisories)
        self.updated_at = updated_at or self.updated_at + timedelta(days=1)
        write_trivy_db(self.cache_dir, self.advisories, updated_at=self.updated_at)
        return self

    def add(self, *advisories: Advisory, updated_at: datetime | None = None) -> TrivyDB:
        """Rebuilds the DB with more advisories, newer (by default one day)."""
        return self.write(self.advisories + advisories, updated_at=updated_at)

    def write_java(self, *artifacts: JavaArtifact) -> TrivyDB:
        """Replaces the Java DB with one indexing ``artifacts`` (none: an empty, fresh one)."""
        write_java_db(self.cache_dir, artifacts, updated_at=self.updated_at)
        return self
