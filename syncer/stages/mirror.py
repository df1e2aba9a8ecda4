"""Mirroring stage: copy one upstream digest, all platforms, into quarantine.

Always from the digest resolved at discovery, never the tag, so that a tag moving upstream
between discovery and copy cannot smuggle in content that was not planned.
"""

from __future__ import annotations

from syncer.tools import skopeo
from syncer.tools.endpoints import Endpoint


def copy_endpoints(
    src: Endpoint, dst: Endpoint, src_ref: str, dst_ref: str, *, timeout: float = skopeo.COPY_TIMEOUT
) -> None:
    """One ``skopeo copy --all --preserve-digests`` between two endpoints, stopped (and failed)
    after ``timeout`` seconds."""
    skopeo.copy(
        src_ref,
        dst_ref,
        src_tls_verify=src.tls_verify,
        dst_tls_verify=dst.tls_verify,
        src_creds=src.credentials,
        dst_creds=dst.credentials,
        src_cert_dir=src.cert_dir,
        dst_cert_dir=dst.cert_dir,
        timeout=timeout,
    )


def mirror(
    source: Endpoint,
    source_path: str,
    digest: str,
    target: Endpoint,
    quarantine_repo: str,
    tag: str,
    *,
    timeout: float = skopeo.COPY_TIMEOUT,
) -> None:
    copy_endpoints(
        source,
        target,
        source.docker_ref(source_path, digest=digest),
        target.docker_ref(quarantine_repo, tag=tag),
        timeout=timeout,
    )
