"""Promotion and demotion in the trusted registry.

Promotion copies the quarantined digest (never a tag) to ``approved/<name>:<tag>`` inside the
same registry: by cross-repository blob mounts where the registry allows them (no image data
moves, see ``syncer.stages.mount``), else with skopeo. Demotion deletes that digest's signatures and
attestations, then its manifest, from ``approved/<name>``.
"""

from __future__ import annotations

import logging

from syncer.errors import NotFoundError
from syncer.stages import mount, signatures
from syncer.stages.mirror import copy_endpoints
from syncer.tools import skopeo
from syncer.tools.endpoints import Endpoint
from syncer.tools.registry import RegistryClient

log = logging.getLogger(__name__)


def copy_in_target(
    target: Endpoint,
    client: RegistryClient,
    src_repo: str,
    dst_repo: str,
    digest: str,
    tag: str,
    *,
    timeout: float = skopeo.COPY_TIMEOUT,
) -> None:
    """``src_repo@digest`` to ``dst_repo:tag``, both in the target registry."""
    if mount.copy_within(client, src_repo, dst_repo, digest, tag):
        return
    log.debug("%s declined a blob mount for %s@%s; copying with skopeo", client.where, src_repo, digest)
    copy_endpoints(
        target,
        target,
        target.docker_ref(src_repo, digest=digest),
        target.docker_ref(dst_repo, tag=tag),
        timeout=timeout,
    )


def promote(
    target: Endpoint,
    client: RegistryClient,
    quarantine_repo: str,
    approved_repo: str,
    digest: str,
    tag: str,
    *,
    timeout: float = skopeo.COPY_TIMEOUT,
) -> None:
    copy_in_target(target, client, quarantine_repo, approved_repo, digest, tag, timeout=timeout)


def demote(client: RegistryClient, approved_repo: str, digest: str) -> list[str]:
    """Deletes ``approved_repo@digest`` and its signatures and attestations (the tags returned),
    in the trusted registry or a replica.

    Signatures first: should the manifest's deletion fail, the image stays unsigned, which
    ``verify`` and every admission policy refuse, and the next run deletes it. A manifest
    already gone meets the goal.
    """
    removed = signatures.remove_attachments(client, approved_repo, digest)
    try:
        # Distribution deletes manifests by digest only; every tag pointing at it goes too.
        client.delete_manifest(approved_repo, digest)
    except NotFoundError:
        pass
    return removed
