"""Scanning stage: Trivy over the quarantined digest, every required platform.

The digest scanned is the digest promoted: the reference handed to Trivy is always
``<target>/<quarantine>/<name>@sha256:…``. For an index, each platform the catalog entry
names (default: every real platform in the index) is scanned and the findings are merged,
each labelled with its platform.
"""

from __future__ import annotations

from dataclasses import dataclass

from syncer import trivy
from syncer.endpoints import Endpoint
from syncer.errors import SyncerError
from syncer.ledger import now_iso
from syncer.model import ScanResult
from syncer.registry import RegistryClient, list_platforms

class PlatformError(SyncerError):
    """The catalog asks for a platform the image does not have."""


@dataclass(frozen=True)
class ScanSettings:
    cache_dir: str
    db_updated_at: str
    timeout: float = 600.0
    licenses: bool = False
    server: str | None = None  # a `trivy server` URL: its DB is the one db_updated_at names


def choose_platforms(available: list[str], wanted: tuple[str, ...], ref: str) -> list[str]:
    if not wanted:
        return available
    missing = [p for p in wanted if p not in available]
    if missing:
        raise PlatformError(
            f"{ref} has no {', '.join(missing)} (it has: {', '.join(available) or 'none'}); "
            "fix `platforms` in the catalog entry"
        )
    return list(wanted)


def scan_digest(target: Endpoint, client: RegistryClient, repository: str, digest: str,
                wanted_platforms: tuple[str, ...], settings: ScanSettings) -> ScanResult:
    ref = target.ref(repository, digest=digest)
    # Our own registry: a manifest GET here costs no upstream pull.
    manifest = client.get_manifest(repository, digest)
    if manifest.is_index:
        available = list(dict.fromkeys(p.platform for p in list_platforms(manifest)))
        platforms = choose_platforms(available, wanted_platforms, ref)
    else:
        platforms = []
    findings, licenses, created = [], [], []
    creds = target.credentials
    for platform in platforms or [None]:
        result = trivy.scan_image(
            ref,
            cache_dir=settings.cache_dir,
            platform=platform,
            insecure=not target.tls_verify,
            credentials=(creds.username, creds.password) if creds else None,
            timeout=settings.timeout,
            licenses=settings.licenses,
            ca_dir=target.ca_dir,
            server=settings.server,
        )
        findings.extend(result.findings)
        licenses.extend(result.licenses)
        if result.created is not None:
            created.append(result.created)
    return ScanResult(
        digest=digest,
        scanner=trivy.scanner(settings.server),  # asked once per process, at the first scan
        db_updated_at=settings.db_updated_at,
        scanned_at=now_iso(),
        findings=tuple(findings),
        licenses=tuple(licenses),
        created=min(created) if created else None,
        platforms=tuple(platforms),
    )
