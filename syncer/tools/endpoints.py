"""How the pipeline reaches each registry named in settings: upstream sources, the target, replicas.

One ``Endpoint`` describes a registry once, so that the HTTP client (discovery, signatures,
deletes) and skopeo (copies) always agree on address, TLS and credentials.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from syncer.core import redact
from syncer.core.model import Auth, Settings
from syncer.errors import UsageError
from syncer.tools.registry import (
    DEADLINE_DEFAULT,
    DEFAULT_CONCURRENCY,
    Credentials,
    RegistryClient,
    credentials_from_env,
)

# Seconds to connect, and between two reads of an answer, at most: a registry silent for
# this long is not answering, whatever the deadline for the whole answer.
READ_TIMEOUT_MAX = 30.0


@dataclass(frozen=True)
class Endpoint:
    name: str  # the registry as references name it: docker.io, registry.example.com
    address: str  # host[:port] actually contacted
    tls_verify: bool = True
    ca_dir: str | None = None
    credentials: Credentials | None = field(default=None, repr=False)
    concurrency: int = DEFAULT_CONCURRENCY  # requests in flight to it

    @property
    def ca_file(self) -> str | None:
        return os.path.join(self.ca_dir, "ca.crt") if self.ca_dir else None

    def client(self, deadline: float = DEADLINE_DEFAULT) -> RegistryClient:
        """``deadline``: seconds for one answer of the registry, body included."""
        return RegistryClient(
            self.name,
            endpoint=self.address if self.address != self.name else None,
            tls_verify=self.tls_verify,
            ca_file=self.ca_file,
            credentials=self.credentials,
            timeout=min(READ_TIMEOUT_MAX, deadline),
            deadline=deadline,
            concurrency=self.concurrency,
        )

    def docker_ref(self, repository: str, *, tag: str | None = None, digest: str | None = None) -> str:
        """A skopeo ``docker://`` reference at the contacted address."""
        ref = f"docker://{self.address}/{repository}"
        if digest:
            return f"{ref}@{digest}"
        return f"{ref}:{tag}" if tag else ref

    def ref(self, repository: str, *, digest: str) -> str:
        """A plain reference (for Trivy) at the contacted address, always by digest."""
        return f"{self.address}/{repository}@{digest}"


def source_endpoint(settings: Settings, host: str, *, anonymous_if_unset: bool = False) -> Endpoint:
    """``anonymous_if_unset``: when none of the source's credential variables is set, ask
    anonymously instead of failing. For read-only planning, which pull-request checks run
    without secrets; a half-set pair is still an error, since it is surely a mistake."""
    src = settings.sources.get(host)
    if src is None:
        return Endpoint(name=host, address=host)
    names = [n for n in (src.auth.username_env, src.auth.password_env) if n]
    if anonymous_if_unset and names and not any(os.environ.get(n) for n in names):
        credentials = None
    else:
        credentials = credentials_from_env(src.auth, f"sources.{host}.auth")
    return Endpoint(
        name=host,
        address=src.endpoint or host,
        tls_verify=src.tls_verify,
        ca_dir=src.ca_dir,
        credentials=credentials,
        concurrency=src.concurrency or DEFAULT_CONCURRENCY,
    )


def target_endpoint(settings: Settings) -> Endpoint:
    t = settings.target
    return Endpoint(
        name=t.registry,
        address=t.registry,
        tls_verify=t.tls_verify,
        ca_dir=t.ca_dir,
        credentials=credentials_from_env(t.auth, "target.auth"),
    )


def replica_endpoint(settings: Settings, index: int) -> Endpoint:
    r = settings.replicas[index]
    return Endpoint(
        name=r.registry,
        address=r.registry,
        tls_verify=r.tls_verify,
        ca_dir=r.ca_dir,
        credentials=credentials_from_env(r.auth, f"replicas[{index}].auth"),
    )


def remember_secrets(settings: Settings) -> None:
    """Every password the catalog names, as far as it is set, is redacted from messages
    from now on, also one of a registry this run does not read credentials for (a plan
    reads none for the target): an answer may echo any secret the process environment has."""
    blocks: list[Auth] = [settings.target.auth, *(s.auth for s in settings.sources.values()),
                          *(r.auth for r in settings.replicas)]
    for auth in blocks:
        password = os.environ.get(auth.password_env or "")
        if password:
            redact.remember_credentials(os.environ.get(auth.username_env or "", ""), password)


def replica_endpoints(settings: Settings) -> list[Endpoint]:
    return [replica_endpoint(settings, i) for i in range(len(settings.replicas))]


def endpoint_for(settings: Settings, registry: str) -> Endpoint:
    """How to reach ``registry``, the target or one replica; only its own credentials are read."""
    if registry == settings.target.registry:
        return target_endpoint(settings)
    for i, replica in enumerate(settings.replicas):
        if replica.registry == registry:
            return replica_endpoint(settings, i)
    raise UsageError(f"registry {registry} is neither target.registry nor under replicas: in "
                     "settings.yaml")
