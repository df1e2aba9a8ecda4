"""Scanning stage: Trivy over the quarantined digest, every required image manifest.

The digest scanned is the digest promoted: every reference handed to Trivy is
``<target>/<quarantine>/<name>@sha256:…``. For an index, each image manifest the catalog entry
requires is scanned by its own digest, and the result records which manifests it covered:
a scan of one platform never stands in for another. "Every platform" (no ``platforms:``)
means every image of the index, a child without a ``platform`` field included, since
containers/image may pick such a child on any architecture.

What Trivy could not assess is said, not dropped: an OS release or package type the
vulnerability database has no advisories for, OS packages without an OS release, a manifest
that is not a container image. ``syncer.core.policy`` decides what follows.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from syncer.core.model import Finding, LicenseFinding, PlatformScan, ScanResult
from syncer.errors import SyncerError
from syncer.stages import layers
from syncer.tools import trivy
from syncer.tools.endpoints import Endpoint
from syncer.tools.registry import IMAGE_TYPES, INDEX_TYPES, Manifest, RegistryClient, descriptor_digest
from syncer.trail.ledger import now_iso

# Config media types of container images; any other config makes an OCI artifact (a Helm
# chart, a WASM module, an SBOM) that Trivy cannot scan as an image.
IMAGE_CONFIG_TYPES = frozenset(
    {
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.docker.container.image.v1+json",
    }
)


class PlatformError(SyncerError):
    """The catalog asks for a platform the image does not have."""


@dataclass(frozen=True)
class ScanSettings:
    cache_dir: str
    db_updated_at: str
    timeout: float = 600.0
    licenses: bool = False
    server: str | None = None  # a `trivy server` URL: its DB is the one db_updated_at names
    # A run's one layer analysis per layer (``SharedLayers``); None outside a run.
    shared: SharedLayers | None = field(default=None, compare=False)


class SharedLayers:
    """One analysis per layer for the scans of a run.

    The run's own Trivy server (``trivy.RunServer``, unless scans use a server of the user's)
    holds one layer cache for every scan. Scans that would analyse one layer at the same time
    take turns: the first analyses it, the others find it in the cache. A scan waits only
    for layers this run has not analysed yet, and only after its image's diff_ids were held
    to the bytes (``syncer.stages.layers``): the cached analysis a scan trusts is of a checked layer.
    """

    def __init__(self, cache_dir: str, *, own_server: bool = True):
        self.server = trivy.RunServer(cache_dir) if own_server else None
        self._guard = threading.Lock()
        self._turns: dict[str, threading.Lock] = {}
        self._done: set[str] = set()

    @contextmanager
    def turn(self, diff_ids: Iterable[str]) -> Iterator[None]:
        """Held while a scan analyses ``diff_ids``; the layers count as analysed if it succeeds."""
        wanted = sorted(set(diff_ids))
        with self._guard:
            # Sorted, so that two scans never each hold a layer the other waits for.
            locks = [self._turns.setdefault(d, threading.Lock()) for d in wanted if d not in self._done]
        held = []
        try:
            for lock in locks:
                lock.acquire()
                held.append(lock)
            yield
            with self._guard:
                self._done.update(wanted)
        finally:
            for lock in reversed(held):
                lock.release()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


# --- which manifests a scan must cover (pure) ----------------------------------------------


@dataclass(frozen=True)
class Child:
    """One entry of an index that is (or claims to be) an image."""

    digest: str
    platform: str  # os/arch[/variant] as the index says; "" when it has no platform field
    label: str  # what its findings are labelled with: unique within the index
    media_type: str


def _mapping(value: object) -> dict[str, Any]:
    """A JSON object of a manifest, or an empty one for anything else there."""
    return value if isinstance(value, dict) else {}


def _is_attestation(entry: dict[str, Any]) -> bool:
    # BuildKit's provenance and SBOM manifests: unknown/unknown, annotated, never run.
    plat = _mapping(entry.get("platform"))
    annotations = _mapping(entry.get("annotations"))
    return (
        plat.get("os") == "unknown"
        and plat.get("architecture") == "unknown"
        and annotations.get("vnd.docker.reference.type") == "attestation-manifest"
    )


def image_children(index: Manifest) -> list[Child]:
    """The entries of ``index`` a runtime may run: all but BuildKit's attestations. Entries
    without a platform are kept (labelled by digest), duplicates of one platform too."""
    raw = []
    for n, entry in enumerate(index.json.get("manifests") or [], 1):
        if not isinstance(entry, dict) or _is_attestation(entry):
            continue
        digest = descriptor_digest(entry.get("digest"), f"entry {n} of index {index.digest}")
        plat = _mapping(entry.get("platform"))
        name = "/".join(str(plat[k]) for k in ("os", "architecture", "variant") if plat.get(k))
        raw.append((digest, name, str(entry.get("mediaType", ""))))
    seen: dict[str, int] = {}
    for _, name, _ in raw:
        seen[name] = seen.get(name, 0) + 1
    return [
        Child(
            digest,
            name,
            name if name and seen[name] == 1 else (f"{name}@{digest}" if name else digest),
            media_type,
        )
        for digest, name, media_type in raw
    ]


def required_children(children: list[Child], wanted: tuple[str, ...], ref: str) -> list[Child]:
    """The children an entry requires: those of its ``platforms``, else all of them."""
    if not wanted:
        return children
    available = list(dict.fromkeys(c.platform for c in children if c.platform))
    missing = [p for p in wanted if p not in available]
    if missing:
        raise PlatformError(
            f"{ref} has no {', '.join(missing)} (it has: {', '.join(available) or 'none'}); "
            "fix `platforms` in the catalog entry"
        )
    return [c for c in children if c.platform in wanted]


# Trivy's language package types, by the ecosystem prefix of the DB buckets that match them.
_ECOSYSTEMS = {
    "pip": ("python-pkg", "pip", "pipenv", "poetry", "uv"),
    "npm": ("node-pkg", "npm", "yarn", "pnpm", "bun"),
    "go": ("gobinary", "gomod"),
    "maven": ("jar", "pom", "gradle", "sbt"),
    "cargo": ("cargo", "rust-binary"),
    "composer": ("composer", "composer-vendor"),
    "rubygems": ("gemspec", "bundler"),
    "nuget": ("nuget", "dotnet-core", "packages-props"),
    "conan": ("conan",),
    "pub": ("pub",),
    "swift": ("swift",),
    "cocoapods": ("cocoapods",),
    "erlang": ("hex",),
    "julia": ("julia",),
    "bitnami": ("bitnami",),
}
_ECOSYSTEM_OF = {t: eco for eco, types in _ECOSYSTEMS.items() for t in types}
# How Trivy's OS families are spelled in the DB's bucket names, where not as the family.
_OS_BUCKETS = {
    "redhat": ("red hat",),
    "centos": ("red hat",),
    "amazon": ("amazon linux",),
    "oracle": ("oracle linux",),
    "opensuse-leap": ("opensuse leap",),
    "opensuse.leap": ("opensuse leap",),
    "opensuse-tumbleweed": ("opensuse tumbleweed",),
    "opensuse.tumbleweed": ("opensuse tumbleweed",),
    "sles": ("suse linux enterprise",),
    "photon": ("photon os",),
    "azurelinux": ("azure linux",),
}


def _covers_os(sources: frozenset[str], family: str, release: str) -> bool:
    """A DB bucket for this OS release: ``debian 12`` covers 12.8, ``alpine 3.20`` 3.20.3;
    families Trivy tracks in one bucket (``wolfi``, ``red hat``) are covered by it."""
    lowered = {s.casefold() for s in sources}
    for spelling in _OS_BUCKETS.get(family.casefold(), (family.casefold(),)):
        if spelling in lowered:
            return True
        for source in lowered:
            if source.startswith(spelling + " "):
                version = source[len(spelling) + 1 :]
                if release.casefold() == version or release.casefold().startswith(
                    tuple(version + sep for sep in ". -")
                ):
                    return True
    return False


def unassessed(
    os_: str, package_types: Iterable[str], sources: frozenset[str] | None, package_dbs: Iterable[str] = ()
) -> tuple[str, ...]:
    """What of one image's package data the vulnerability database cannot match (pure).

    ``os_`` is Trivy's ``"<family> <release>"``, ``"none"`` when it found OS packages but no
    OS release; ``sources`` the DB's advisory buckets (None: unknown, e.g. a Trivy server's);
    ``package_dbs`` the OS package databases syncer itself saw in the layers (syncer.stages.layers),
    a cross-check on a Trivy that reports no OS at all.
    """
    found = []
    family, _, release = os_.partition(" ")
    os_types = {family}
    dbs = sorted(set(package_dbs))
    if not os_ and dbs:
        found.append(
            f"OS package database in the layers ({', '.join(dbs[:3])}) but Trivy "
            "reported no OS packages: they were not matched"
        )
    if os_ == "none":
        found.append(
            "OS packages without an OS release (no etc/os-release Trivy recognises): "
            "their advisories cannot be matched"
        )
    elif os_ and sources is not None and not _covers_os(sources, family, release):
        found.append(f"{os_}: the vulnerability database has no advisories for this OS release")
    for kind in sorted(set(package_types) - os_types):
        eco = _ECOSYSTEM_OF.get(kind)
        if eco is None:
            found.append(f"{kind} packages: syncer knows no advisory source for this package type")
        elif sources is not None and not any(s.startswith(eco + "::") for s in sources):
            found.append(f"{kind} packages: the vulnerability database has no {eco} advisories")
    return tuple(found)


# --- one image manifest --------------------------------------------------------------------


@dataclass(frozen=True)
class ManifestScan:
    """One image manifest's scan, unlabelled: the same for every index and tag holding it."""

    digest: str
    findings: tuple[Finding, ...] = ()
    licenses: tuple[LicenseFinding, ...] = ()
    created: datetime | None = None
    os: str = ""
    packages: tuple[str, ...] = ()
    unassessed: tuple[str, ...] = ()
    problem: str = ""

    def labelled(self, label: str) -> PlatformScan:
        return PlatformScan(
            digest=self.digest,
            platform=label,
            created=self.created,
            os=self.os,
            packages=self.packages,
            unassessed=self.unassessed,
            problem=self.problem,
        )


def artifact_type(manifest: Manifest) -> str:
    """The config media type of an image manifest that is not a container image, else ""."""
    config = manifest.json.get("config")
    kind = config.get("mediaType", "") if isinstance(config, dict) else ""
    if manifest.json.get("artifactType") or kind not in IMAGE_CONFIG_TYPES:
        return str(manifest.json.get("artifactType") or kind or "no config")
    return ""


def scan_manifest(
    target: Endpoint,
    client: RegistryClient,
    repository: str,
    digest: str,
    settings: ScanSettings,
    manifest: Manifest | None = None,
) -> ManifestScan:
    """Trivy over one image manifest of quarantine, by its digest."""
    ref = target.ref(repository, digest=digest)
    manifest = manifest or client.get_manifest(repository, digest)
    if manifest.media_type in INDEX_TYPES:
        return ManifestScan(digest, problem="a nested index, which syncer does not scan")
    if manifest.media_type not in IMAGE_TYPES:
        return ManifestScan(
            digest, problem=f"a {manifest.media_type or 'manifest without media type'}, not an image manifest"
        )
    if kind := artifact_type(manifest):
        return ManifestScan(digest, problem=f"an OCI artifact ({kind}), not a container image")
    # Trivy keys its layer cache by the diff_ids the config claims: hold them to the bytes
    # first (syncer.stages.layers), so that no layer's analysis stands in for another's.
    checked = layers.check_image(client, repository, digest, settings.cache_dir, manifest)
    creds = target.credentials
    shared = settings.shared
    with shared.turn(layer.diff_id for layer in checked.verified) if shared else nullcontext():
        result = trivy.scan_image(
            ref,
            cache_dir=settings.cache_dir,
            insecure=not target.tls_verify,
            credentials=(creds.username, creds.password) if creds else None,
            timeout=settings.timeout,
            licenses=settings.licenses,
            ca_dir=target.ca_dir,
            server=settings.server,
            run_server=shared.server if shared else None,
        )
    os_ = ""
    if result.os is not None:
        os_ = "none" if result.os.family in ("", "none") else f"{result.os.family} {result.os.name}".strip()
    return ManifestScan(
        digest=digest,
        findings=result.findings,
        licenses=result.licenses,
        created=result.created,
        os=os_,
        packages=result.package_types,
        # A server's database is not on this machine: only what the report says is checked.
        unassessed=unassessed(
            os_,
            result.package_types,
            None if settings.server else trivy.db_sources(settings.cache_dir),
            checked.package_dbs,
        ),
    )


class ScanCache:
    """One scan per (image manifest, database) in a run, shared by every tag, entry and index
    that holds the manifest. Keyed by the manifest's digest, which is what a result covers:
    never by an index, whose platforms differ between entries.

    ``stored(digest)`` gives the results stored by earlier runs for a digest scanned (an index
    or an image); ``fill`` asks it once per digest, when that digest is first scanned, so that
    a manifest scanned in an earlier run against the same database is not scanned again while
    no run reads every stored result up front."""

    def __init__(self, stored: Callable[[str], Iterable[ScanResult]] = lambda digest: ()):
        self._lock = threading.Lock()
        self._keys: dict[tuple[str, str], threading.Lock] = {}
        self._results: dict[tuple[str, str], ManifestScan] = {}
        self._stored = stored
        self._filled: dict[str, threading.Lock] = {}
        self._done: set[str] = set()

    def fill(self, digest: str) -> None:
        """The stored results of ``digest``, once: later calls wait for the first."""
        with self._lock:
            turn = self._filled.setdefault(digest, threading.Lock())
        with turn:
            if digest in self._done:
                return
            for result in self._stored(digest):
                for part in split_result(result):
                    with self._lock:
                        self._results.setdefault((part.digest, result.db_updated_at), part)
            self._done.add(digest)

    def get(self, digest: str, db: str, scan: Callable[[], ManifestScan]) -> ManifestScan:
        key = (digest, db)
        with self._lock:
            key_lock = self._keys.setdefault(key, threading.Lock())
        with key_lock:
            cached = self._results.get(key)
            if cached is None:
                cached = self._results[key] = scan()
            return cached


def split_result(scan: ScanResult) -> list[ManifestScan]:
    """A recorded result back into its manifests' results (the inverse of ``combine``)."""
    return [
        ManifestScan(
            digest=part.digest,
            findings=tuple(replace(f, platform="") for f in scan.findings if f.platform == part.platform),
            licenses=tuple(replace(x, platform="") for x in scan.licenses if x.platform == part.platform),
            created=part.created,
            os=part.os,
            packages=part.packages,
            unassessed=part.unassessed,
            problem=part.problem,
        )
        for part in scan.covered
    ]


def combine(
    digest: str, parts: list[tuple[str, ManifestScan]], selection: tuple[str, ...], settings: ScanSettings
) -> ScanResult:
    """One result of ``digest`` from its required manifests' results, each under its label."""
    created = [p.created for _, p in parts if p.created is not None]
    return ScanResult(
        digest=digest,
        scanner=trivy.scanner(settings.server),  # asked once per process, at the first scan
        db_updated_at=settings.db_updated_at,
        scanned_at=now_iso(),
        findings=tuple(replace(f, platform=label) for label, p in parts for f in p.findings),
        licenses=tuple(replace(x, platform=label) for label, p in parts for x in p.licenses),
        created=min(created) if created else None,
        covered=tuple(p.labelled(label) for label, p in parts),
        selection=selection,
    )


def scan_digest(
    target: Endpoint,
    client: RegistryClient,
    repository: str,
    digest: str,
    wanted_platforms: tuple[str, ...],
    settings: ScanSettings,
    cache: ScanCache | None = None,
) -> ScanResult:
    """Scans every image manifest of ``digest`` the entry requires (each once per database)."""
    cache = cache or ScanCache()
    cache.fill(digest)
    ref = target.ref(repository, digest=digest)
    # Our own registry: a manifest GET here costs no upstream pull.
    manifest = client.get_manifest(repository, digest)
    if not manifest.is_index:
        kind = artifact_type(manifest) if manifest.media_type in IMAGE_TYPES else ""
        if kind:
            return ScanResult(
                digest=digest,
                scanner=trivy.scanner(settings.server),
                db_updated_at=settings.db_updated_at,
                scanned_at=now_iso(),
                selection=wanted_platforms,
                artifact=kind,
            )
        part = cache.get(
            digest,
            settings.db_updated_at,
            lambda: scan_manifest(target, client, repository, digest, settings, manifest),
        )
        return combine(digest, [("", part)], wanted_platforms, settings)
    children = required_children(image_children(manifest), wanted_platforms, ref)
    if not children:
        return combine(
            digest,
            [("", ManifestScan(digest, problem="an index with no image in it"))],
            wanted_platforms,
            settings,
        )
    parts = [
        (
            child.label,
            cache.get(
                child.digest,
                settings.db_updated_at,
                functools.partial(scan_manifest, target, client, repository, child.digest, settings),
            ),
        )
        for child in children
    ]
    return combine(digest, parts, wanted_platforms, settings)
