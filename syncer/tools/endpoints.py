"""How the pipeline reaches each registry named in settings: upstream sources, the target, replicas.

One ``Endpoint`` describes a registry once, so that the HTTP client (discovery, signatures,
deletes), skopeo (copies) and Trivy (scans) always agree on address, TLS and credentials.
Credentials come from the variables ``auth`` names in settings.yaml or, without an ``auth``
block, from the auth files and credential helpers skopeo, podman and docker use
(``syncer.tools.credentials``); the CAs from ``syncer.tools.trust``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from syncer.core import redact
from syncer.core.model import Auth, Settings
from syncer.errors import UsageError
from syncer.tools import credentials as auth_files
from syncer.tools.registry import (
    DEADLINE_DEFAULT,
    DEFAULT_CONCURRENCY,
    Credentials,
    RegistryClient,
    credentials_from_env,
)
from syncer.tools.trust import Trust, materialise
from syncer.tools.trust import resolve as resolve_trust

# Seconds to connect, and between two reads of an answer, at most: a registry silent for
# this long is not answering, whatever the deadline for the whole answer.
READ_TIMEOUT_MAX = 30.0


@dataclass(frozen=True)
class Endpoint:
    name: str  # the registry as references name it: docker.io, registry.example.com
    address: str  # host[:port] actually contacted
    tls_verify: bool = True
    trust: Trust = field(default_factory=Trust)
    credentials: Credentials | None = field(default=None, repr=False)
    concurrency: int = DEFAULT_CONCURRENCY  # requests in flight to it
    # Where the credentials were found when settings.yaml named none (an auth file or a
    # credential helper), for the run's output; "" otherwise.
    credentials_found: str = ""

    @property
    def ca_file(self) -> str | None:
        """The CA bundle for the HTTP client; None: requests' default."""
        return materialise(self.trust).bundle

    @property
    def cert_dir(self) -> str | None:
        """skopeo's ``--cert-dir``: the extra CAs and the client certificate."""
        return materialise(self.trust).cert_dir

    @property
    def ca_dir(self) -> str | None:
        """The extra CAs only, for Trivy's SSL_CERT_DIR."""
        return materialise(self.trust).ca_dir

    def client(self, deadline: float = DEADLINE_DEFAULT) -> RegistryClient:
        """``deadline``: seconds for one answer of the registry, body included."""
        return RegistryClient(
            self.name,
            endpoint=self.address if self.address != self.name else None,
            tls_verify=self.tls_verify,
            ca_file=self.ca_file,
            client_cert=self.trust.client,
            credentials=self.credentials,
            timeout=min(READ_TIMEOUT_MAX, deadline),
            deadline=deadline,
            concurrency=self.concurrency,
        )

    @property
    def credentials_note(self) -> str:
        """A line for the run's output when the credentials came from outside settings.yaml:
        an operator sees which login is used, never the secret."""
        if not self.credentials_found:
            return ""
        return f"note: credentials for {self.address} from {self.credentials_found}"

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
        return _endpoint(host, host, True, None, Auth(), f"sources.{host}")
    names = [n for n in (src.auth.username_env, src.auth.password_env) if n]
    anonymous = anonymous_if_unset and bool(names) and not any(os.environ.get(n) for n in names)
    return _endpoint(
        host,
        src.endpoint or host,
        src.tls_verify,
        src.ca_dir,
        src.auth,
        f"sources.{host}",
        anonymous=anonymous,
        concurrency=src.concurrency or DEFAULT_CONCURRENCY,
    )


def target_endpoint(settings: Settings) -> Endpoint:
    t = settings.target
    return _endpoint(t.registry, t.registry, t.tls_verify, t.ca_dir, t.auth, "target")


def replica_endpoint(settings: Settings, index: int) -> Endpoint:
    r = settings.replicas[index]
    return _endpoint(r.registry, r.registry, r.tls_verify, r.ca_dir, r.auth, f"replicas[{index}]")


def _endpoint(
    name: str,
    address: str,
    tls_verify: bool,
    ca_dir: str | None,
    auth: Auth,
    what: str,
    *,
    anonymous: bool = False,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> Endpoint:
    """``what``: the settings entry, for messages. Credentials are looked up under the
    address contacted, as skopeo would for a reference naming it."""
    credentials, found = None, ""
    if auth.username_env or auth.password_env:
        if not anonymous:
            credentials = credentials_from_env(auth, f"{what}.auth")
    else:
        lookup = auth_files.lookup(address)
        if lookup is not None:
            credentials, found = lookup.credentials, lookup.source
    return Endpoint(
        name=name,
        address=address,
        tls_verify=tls_verify,
        trust=resolve_trust(address, ca_dir, what),
        credentials=credentials,
        concurrency=concurrency,
        credentials_found=found,
    )


def remember_secrets(settings: Settings) -> None:
    """Every password and webhook URL the catalog names, as far as it is set, is redacted from messages
    from now on, also one of a registry this run does not read credentials for (a plan
    reads none for the target): an answer may echo any secret the process environment has."""
    blocks: list[Auth] = [
        settings.target.auth,
        *(s.auth for s in settings.sources.values()),
        *(r.auth for r in settings.replicas),
    ]
    for auth in blocks:
        password = os.environ.get(auth.password_env or "")
        if password:
            redact.remember_credentials(os.environ.get(auth.username_env or "", ""), password)
    for hook in settings.webhooks:  # a webhook's URL is its credential
        redact.remember(os.environ.get(hook.url_env, ""))


def replica_endpoints(settings: Settings) -> list[Endpoint]:
    return [replica_endpoint(settings, i) for i in range(len(settings.replicas))]


def endpoint_for(settings: Settings, registry: str) -> Endpoint:
    """How to reach ``registry``, the target or one replica; only its own credentials are read."""
    if registry == settings.target.registry:
        return target_endpoint(settings)
    for i, replica in enumerate(settings.replicas):
        if replica.registry == registry:
            return replica_endpoint(settings, i)
    raise UsageError(f"registry {registry} is neither target.registry nor under replicas: in settings.yaml")
