"""What the pipeline needs of the tools it drives, as ``Protocol``s, beside the real ones.

``Pipeline`` is handed a copier, a scanner, a signer and a factory of registry clients; by
default the real ones (skopeo and blob mounts, Trivy, the pipeline key, ``Endpoint.client``).
So its decisions (promoted, held, flagged, demoted, failed, resumed) can be tested with
in-memory fakes (``tests/unit/test_pipeline_decisions.py``), and the tools end to end
(``tests/e2e/``).

A registry client passes through the pipeline untouched: the one the factory made for the
target or a replica goes to the copier, scanner or signer, which make their own requests with
it. The pipeline itself, through discovery, asks upstream clients only for ``expect_pulls``,
``list_tags``, ``head_manifest`` and ``ratelimit``: all that a fake client must answer when the
other three seams are fakes too.
"""

from __future__ import annotations

from typing import Protocol

from syncer.core.model import ScanResult
from syncer.stages import promote as promote_mod
from syncer.stages import signatures
from syncer.stages.mirror import copy_endpoints, mirror
from syncer.stages.scan import ScanCache, ScanSettings, scan_digest
from syncer.tools.endpoints import Endpoint
from syncer.tools.registry import RegistryClient


class ClientFactory(Protocol):
    """The HTTP client of one registry, each answer within ``deadline`` seconds."""

    def __call__(self, endpoint: Endpoint, deadline: float, /) -> RegistryClient: ...


class Copier(Protocol):
    """Every copy and delete of image data the stages make, one method per stage function."""

    def mirror(
        self,
        source: Endpoint,
        source_path: str,
        digest: str,
        target: Endpoint,
        quarantine_repo: str,
        tag: str,
    ) -> None:
        """Upstream ``source_path@digest`` (all platforms) to ``quarantine_repo:tag``."""

    def copy_in_target(
        self, target: Endpoint, client: RegistryClient, src_repo: str, dst_repo: str, digest: str, tag: str
    ) -> None:
        """``src_repo@digest`` to ``dst_repo:tag`` in the target (a re-tag in quarantine)."""

    def promote(
        self,
        target: Endpoint,
        client: RegistryClient,
        quarantine_repo: str,
        approved_repo: str,
        digest: str,
        tag: str,
    ) -> None:
        """The quarantined digest to ``approved_repo:tag``; it is signed already."""

    def to_replica(
        self, source: Endpoint, replica: Endpoint, approved_repo: str, digest: str, tag: str
    ) -> None:
        """``approved_repo@digest`` from the target to the same repository on ``replica``."""

    def demote(self, client: RegistryClient, approved_repo: str, digest: str) -> list[str]:
        """Deletes ``approved_repo@digest`` and its signatures and attestations (the tags
        returned) from the registry ``client`` talks to."""

    def copy_signatures(
        self,
        source: RegistryClient,
        destination: RegistryClient,
        repository: str,
        digest: str,
        identity: str,
        signers: dict[str, str],
    ) -> list[str]:
        """Copies the signatures of ``repository@digest`` that ``signers`` (name -> PEM) made
        as ``identity`` from one registry to another, unchanged; the names of those copied."""


class Scanner(Protocol):
    def scan(
        self,
        target: Endpoint,
        client: RegistryClient,
        repository: str,
        digest: str,
        platforms: tuple[str, ...],
        cache: ScanCache,
    ) -> ScanResult:
        """Scans ``repository@digest`` in the target for an entry requiring ``platforms``.
        Raises ``LayerError`` when its layers must not be analysed (the tag is held), another
        ``SyncerError`` when the scan fails (the tag fails)."""


class Signer(Protocol):
    """What the pipeline needs of ``syncer.stages.signer.Signer``."""

    name: str

    def sign(self, client: RegistryClient, repository: str, digest: str, identity: str) -> None:
        """Attach a signature of ``digest`` under ``identity``; a ``SigningError`` if it cannot."""


class ToolCopier:
    """The stages' copies: skopeo, or blob mounts inside one registry, each copy stopped (and
    failed) after ``timeout`` seconds."""

    def __init__(self, timeout: float):
        self.timeout = timeout

    def mirror(
        self,
        source: Endpoint,
        source_path: str,
        digest: str,
        target: Endpoint,
        quarantine_repo: str,
        tag: str,
    ) -> None:
        mirror(source, source_path, digest, target, quarantine_repo, tag, timeout=self.timeout)

    def copy_in_target(
        self, target: Endpoint, client: RegistryClient, src_repo: str, dst_repo: str, digest: str, tag: str
    ) -> None:
        promote_mod.copy_in_target(target, client, src_repo, dst_repo, digest, tag, timeout=self.timeout)

    def promote(
        self,
        target: Endpoint,
        client: RegistryClient,
        quarantine_repo: str,
        approved_repo: str,
        digest: str,
        tag: str,
    ) -> None:
        promote_mod.promote(target, client, quarantine_repo, approved_repo, digest, tag, timeout=self.timeout)

    def to_replica(
        self, source: Endpoint, replica: Endpoint, approved_repo: str, digest: str, tag: str
    ) -> None:
        copy_endpoints(
            source,
            replica,
            source.docker_ref(approved_repo, digest=digest),
            replica.docker_ref(approved_repo, tag=tag),
            timeout=self.timeout,
        )

    def demote(self, client: RegistryClient, approved_repo: str, digest: str) -> list[str]:
        return promote_mod.demote(client, approved_repo, digest)

    def copy_signatures(
        self,
        source: RegistryClient,
        destination: RegistryClient,
        repository: str,
        digest: str,
        identity: str,
        signers: dict[str, str],
    ) -> list[str]:
        return signatures.copy_signatures(source, destination, repository, digest, identity, signers)


class TrivyScanner:
    """``syncer.stages.scan`` with this run's Trivy settings."""

    def __init__(self, settings: ScanSettings):
        self.settings = settings

    def scan(
        self,
        target: Endpoint,
        client: RegistryClient,
        repository: str,
        digest: str,
        platforms: tuple[str, ...],
        cache: ScanCache,
    ) -> ScanResult:
        return scan_digest(target, client, repository, digest, platforms, self.settings, cache)
