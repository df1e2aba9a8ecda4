"""Promotion and demotion in the trusted registry.

Promotion copies the quarantined digest (never a tag) to ``approved/<name>:<tag>`` inside the
same registry; demotion deletes that digest's manifest from ``approved/<name>``.
"""

from __future__ import annotations

from syncer.endpoints import Endpoint
from syncer.mirror import copy_endpoints
from syncer.registry import RegistryClient


def promote(target: Endpoint, quarantine_repo: str, approved_repo: str, digest: str, tag: str) -> None:
    copy_endpoints(
        target,
        target,
        target.docker_ref(quarantine_repo, digest=digest),
        target.docker_ref(approved_repo, tag=tag),
    )


def demote(client: RegistryClient, approved_repo: str, digest: str) -> None:
    # Distribution deletes manifests by digest only; the tag goes with it.
    client.delete_manifest(approved_repo, digest)
