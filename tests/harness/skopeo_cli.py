"""skopeo commands the tests use to look at and change a registry, through the adapter's own
command runner (``syncer.tools.skopeo._run``): the same private auth files, policy, error
classification and retries as the copies syncer makes, without syncer carrying commands only
its tests need."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from syncer.tools import skopeo
from syncer.tools.registry import Credentials


def inspect_raw(
    ref: str,
    *,
    tls_verify: bool = True,
    creds: Credentials | None = None,
    cert_dir: str | None = None,
    retries: int = 2,
    timeout: float = 120,
    sleep: Callable[[float], None] = time.sleep,
) -> bytes:
    """The manifest (or index) at ``ref`` exactly as the registry serves it."""
    side = skopeo._side(ref, tls_verify, creds, cert_dir, "")
    return skopeo._run("inspect", ["--raw"], (side,), retries=retries, timeout=timeout, sleep=sleep)


def delete(
    ref: str,
    *,
    tls_verify: bool = True,
    creds: Credentials | None = None,
    cert_dir: str | None = None,
    retries: int = 2,
    timeout: float = 120,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Deletes the manifest ``ref`` points to (by tag: the digest the tag resolves to)."""
    side = skopeo._side(ref, tls_verify, creds, cert_dir, "")
    skopeo._run("delete", [], (side,), retries=retries, timeout=timeout, sleep=sleep)


def copy_under_policy(policy: Path, registries_d: Path, ref: str, dest: Path) -> subprocess.CompletedProcess:
    """``skopeo copy docker://REF dir:DEST`` (plain HTTP) under a node's containers policy and
    registries.d, as a node pulling would be judged: the outcome (accepted, "rejected by
    policy", "invalid policy", "sigstore disabled") is in the return code and stderr."""
    return subprocess.run(
        [
            "skopeo",
            "--policy",
            str(policy),
            "--registries.d",
            str(registries_d),
            "copy",
            "--src-tls-verify=false",
            f"docker://{ref}",
            f"dir:{dest}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
