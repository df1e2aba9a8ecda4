"""Replication: approved content, signed, in every further registry that needs it.

Always from the trusted registry (never again from upstream), always by digest, and signed
on each replica under the replica's own identity, so a node pulling from a replica verifies
the image against the policy exported for that replica. People's signatures, made once in the
trusted registry, are copied as they are (they keep naming the trusted registry, which that
policy accepts for them). A replica that is down or refuses a
push lags; the next run catches it up from the record.
"""

from __future__ import annotations

from syncer.core.model import Record, ReplicaState
from syncer.stages.ports import Copier, Signer
from syncer.tools.endpoints import Endpoint
from syncer.tools.registry import RegistryClient


def replica_state(rec: Record, registry: str) -> ReplicaState:
    """The record's entry for ``registry``, created (empty) when the record has none yet."""
    for state in rec.replicas:
        if state.registry == registry:
            return state
    state = ReplicaState(registry=registry)
    rec.replicas.append(state)
    rec.replicas.sort(key=lambda s: s.registry)
    return state


def needs_copy(rec: Record, registry: str) -> bool:
    """Whether ``registry`` lacks the digest ``approved/`` holds for this tag."""
    if not rec.promoted_digest:
        return False
    state = next((s for s in rec.replicas if s.registry == registry), None)
    return state is None or state.lagging or state.digest != rec.promoted_digest


def people(rec: Record, pipeline_signer: str) -> list[str]:
    """Who signed the approved digest besides the pipeline: people, who sign in the trusted
    registry only; the pipeline copies their signatures to every replica, unchanged."""
    return [name for name in rec.signatures if name != pipeline_signer]


def push_to_replica(
    source: Endpoint,
    replica: Endpoint,
    replica_client: RegistryClient,
    signer: Signer,
    copier: Copier,
    approved_repo: str,
    digest: str,
    tag: str,
) -> None:
    """Sign on the replica under its identity, then copy the digest there from the trusted registry.

    Signing first, as at promotion: a replica never serves the tag without its signature.
    """
    signer.sign(replica_client, approved_repo, digest, f"{replica.name}/{approved_repo}")
    copier.to_replica(source, replica, approved_repo, digest, tag)
