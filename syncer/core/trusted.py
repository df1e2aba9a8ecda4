"""A reference to an image of the trusted registry or a replica, as `syncer verify` and
`syncer sign` take it: parsed against settings, so that nothing outside approved/ and
quarantine/ of a known registry is ever verified or signed."""

from __future__ import annotations

from dataclasses import dataclass

from syncer.core import refs
from syncer.core.model import Settings
from syncer.errors import UsageError


@dataclass(frozen=True)
class TrustedRef:
    """A reference to an image of the trusted registry (or a replica), parsed and checked."""

    registry: str  # as written in REF, and as named in settings
    repository: str  # approved/nginx
    namespace: str  # the settings prefix the repository is under: approved or quarantine
    approved: bool  # under the approved prefix (the only one the pipeline signs)
    name: str  # the catalog name: the repository without the namespace
    tag: str | None
    digest: str | None

    @property
    def identity(self) -> str:
        """The ``docker-reference`` signatures of this image must carry."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        return str(refs.Reference(self.registry, self.repository, self.tag, self.digest))


def parse_trusted_ref(text: str, settings: Settings) -> TrustedRef:
    """Parses REF against the registries and namespaces named in settings; UsageError if it
    is not an image of the trusted registry or a replica, or has neither tag nor digest."""
    target = settings.target
    known = [target.registry, *(r.registry for r in settings.replicas)]
    namespaces = (target.approved, target.quarantine)
    first = text.partition("/")[0]
    if first in known:
        full = text
    elif any(text.startswith(f"{ns}/") for ns in namespaces):
        full = f"{target.registry}/{text}"
    else:
        raise UsageError(
            f"'{text}' is not an image of the trusted registry: write "
            f"{target.registry}/{target.approved}/NAME:TAG (or @sha256:…), or "
            f"{target.approved}/NAME:TAG; the registries named in settings are "
            f"{', '.join(known)}"
        )
    try:
        parsed = refs.parse_reference(full)
    except ValueError as err:
        raise UsageError(f"'{text}' is not a valid image reference: {err}") from None
    registry = full.partition("/")[0]
    namespace = next((ns for ns in namespaces if parsed.repository.startswith(f"{ns}/")), None)
    if parsed.registry != registry or namespace is None:
        raise UsageError(
            f"'{text}' is outside {target.approved}/ and {target.quarantine}/ of {registry}; "
            f"images of the trusted registry are {registry}/{target.approved}/NAME"
        )
    if parsed.tag is None and parsed.digest is None:
        raise UsageError(f"'{text}' has neither a tag nor a digest; add :TAG or @sha256:…")
    if parsed.digest is not None and not refs.is_sha256_digest(parsed.digest):
        raise UsageError(
            f"'{text}': signatures are stored per sha256 digest; give @sha256:<64 lower-case hex digits>"
        )
    return TrustedRef(
        registry=registry,
        repository=parsed.repository,
        namespace=namespace,
        approved=namespace == target.approved,
        name=parsed.repository[len(namespace) + 1 :],
        tag=parsed.tag,
        digest=parsed.digest,
    )


def signed_identity(settings: Settings, registry: str, repository: str, signer: str) -> str:
    """The ``docker-reference`` that ``signer``'s signature of ``registry``/``repository`` names.

    The pipeline signs in every registry under that registry's name. A person signs once, in
    the trusted registry, and the pipeline copies that signature unchanged to each replica,
    where it still names the trusted registry's repository: the remapping a mirror's
    containers policy expresses (docs/signing.md, "People's signatures on replicas").
    """
    if registry == settings.target.registry or signer == settings.signing.signer:
        return f"{registry}/{repository}"
    return f"{settings.target.registry}/{repository}"
