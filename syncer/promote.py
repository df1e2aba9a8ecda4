"""Promotion and demotion in the trusted registry.

Promotion copies the quarantined digest (never a tag) to ``approved/<name>:<tag>`` inside the
same registry: by cross-repository blob mounts where the registry allows them (no image data
moves, see ``syncer.mount``), else with skopeo. Demotion deletes that digest's manifest from
``approved/<name>``.
"""

from __future__ import annotations

import logging

from syncer import mount, skopeo
from syncer.endpoints import Endpoint
from syncer.mirror import copy_endpoints
from syncer.registry import RegistryClient

log = logging.getLogger(__name__)


def copy_in_target(target: Endpoint, client: RegistryClient, src_repo: str, dst_repo: str,
                   digest: str, tag: str, *, timeout: float = skopeo.COPY_TIMEOUT) -> None:
    """``src_repo@digest`` to ``dst_repo:tag``, both in the target registry."""
    if mount.copy_within(client, src_repo, dst_repo, digest, tag):
        return
    log.debug("%s declined a blob mount for %s@%s; copying with skopeo", client.where, src_repo, digest)
    copy_endpoints(target, target, target.docker_ref(src_repo, digest=digest),
                   target.docker_ref(dst_repo, tag=tag), timeout=timeout)


def promote(target: Endpoint, client: RegistryClient, quarantine_repo: str, approved_repo: str,
            digest: str, tag: str, *, timeout: float = skopeo.COPY_TIMEOUT) -> None:
    copy_in_target(target, client, quarantine_repo, approved_repo, digest, tag, timeout=timeout)


def demote(client: RegistryClient, approved_repo: str, digest: str) -> None:
    # Distribution deletes manifests by digest only; the tag goes with it.
    client.delete_manifest(approved_repo, digest)
