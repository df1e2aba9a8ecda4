"""Deploy-time enforcement configs rendered from the catalog: pure functions, text out.

Each format requires on ``<registry>/<approved>/<name>`` the signatures of the signers that
image's policy names (its ``signers``; the pipeline's own signer when a policy names none,
since the pipeline signs every promotion):

- ``containers_policy``: containers-policy.json(5) for podman, CRI-O and skopeo. Everything
  is rejected by default; each catalog image's repository gets one ``sigstoreSigned``
  requirement per required signer (all of a scope's requirements must hold), and the
  quarantine namespace is rejected explicitly so that no later, broader scope can open it.
  ``Allow`` entries let a node's own images (a CRI-O pause image) through. Its companion
  ``registries_d`` is the containers-registries.d(5) file that makes those tools look for
  the signatures at all.
- ``kyverno_policy``: a Kyverno ``ClusterPolicy`` with one ``verifyImages`` rule per catalog
  image whose attestor set lists one public key per required signer and requires them all.
- ``kyverno_ivp``: Kyverno's successor to that, ``ImageValidatingPolicy`` documents, one per
  distinct set of required signers.

The output depends only on the catalog and the registry name, so the same catalog always
gives the same bytes (suitable for committing and diffing).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from dataclasses import dataclass

from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import LiteralScalarString

from syncer.core.model import Catalog, ImageEntry
from syncer.core.trusted import signed_identity

KYVERNO_POLICY_NAME = "syncer-approved-images"
# Kyverno rule names are limited to 63 characters; so are the ImageValidatingPolicy names
# syncer makes (Kubernetes allows 253, but they also end up in label values, limited to 63).
_RULE_NAME_MAX = 63
# The ImageValidatingPolicy version served by Kyverno 1.19 (tests/data/kyverno/README.md).
IVP_API_VERSION = "policies.kyverno.io/v1"
# syncer signs with plain keys and uploads nothing to a transparency log; without these
# Kyverno would look every signature up in the public Rekor and CT logs and refuse it.
_PUBLIC_REKOR = "https://rekor.sigstore.dev"


@dataclass(frozen=True)
class Requirement:
    """One image repository and the signers (name, PEM public key) it must carry."""

    name: str  # catalog name
    repository: str  # <registry>/<approved>/<name>
    signers: tuple[tuple[str, str], ...]


def required_signers(catalog: Catalog, entry: ImageEntry) -> tuple[str, ...]:
    """The signers an approved image of ``entry`` must carry to be deployable."""
    signers = catalog.policy_for(entry).signers
    return signers or (catalog.settings.signing.signer,)


def requirements(catalog: Catalog, registry: str) -> list[Requirement]:
    """Every catalog image's repository under ``registry``, sorted by name."""
    approved = catalog.settings.target.approved
    return [
        Requirement(
            name=entry.name,
            repository=f"{registry}/{approved}/{entry.name}",
            signers=tuple((s, catalog.signers[s]) for s in required_signers(catalog, entry)),
        )
        for entry in sorted(catalog.images, key=lambda e: e.name)
    ]


@dataclass(frozen=True)
class Allow:
    """A containers-policy scope outside the trusted registry that a node needs (its pause
    and system images): accepted as is, or only with a sigstore signature of ``key_pem``."""

    scope: str  # host[/namespace[/repository]], as containers-policy.json(5) scopes are written
    key_pem: str | None = None


def allow_problem(scope: str, registry: str) -> str | None:
    """Why ``scope`` cannot be an ``Allow`` in the policy for ``registry``; None if it can."""
    if not scope or any(c.isspace() for c in scope) or "://" in scope:
        return (
            f"--allow {scope!r} is not a containers-policy scope; write it as HOST, "
            "HOST/NAMESPACE or HOST/REPOSITORY, e.g. registry.k8s.io/pause"
        )
    host = scope.split("/", 1)[0]
    if host == registry:
        return (
            f"--allow {scope} is on {registry}, the registry this policy is for: its "
            "approved/ images need their signatures and quarantine/ stays rejected; "
            "add the image to the catalog instead"
        )
    return None


def containers_policy(catalog: Catalog, registry: str, allow: tuple[Allow, ...] = ()) -> str:
    scopes: dict[str, list[dict]] = {
        f"{registry}/{catalog.settings.target.quarantine}": [{"type": "reject"}],
    }
    for entry in sorted(allow, key=lambda a: a.scope):
        problem = allow_problem(entry.scope, registry)
        if problem:
            raise ValueError(problem)
        scopes[entry.scope] = [
            {"type": "insecureAcceptAnything"} if entry.key_pem is None else _sigstore_signed(entry.key_pem)
        ]
    approved = catalog.settings.target.approved
    for req in requirements(catalog, registry):
        named = {
            n: signed_identity(catalog.settings, registry, f"{approved}/{req.name}", n)
            for n, _ in req.signers
        }
        scopes[req.repository] = [
            _sigstore_signed(pem, named[n] if named[n] != req.repository else None) for n, pem in req.signers
        ]
    document = {"default": [{"type": "reject"}], "transports": {"docker": scopes}}
    return json.dumps(document, indent=2) + "\n"


def _sigstore_signed(pem: str, identity: str | None = None) -> dict:
    """A cosign signature by ``pem``'s key naming the image's own repository, or ``identity``
    (a person's signature on a replica names the trusted registry's repository).

    cosign signatures name a repository, never a tag, and containers/image matches such an
    identity only with ``matchRepository`` or ``exactRepository``; ``remapIdentity``, its
    remapping for mirrors, follows ``matchRepoDigestOrExact`` and refuses every identity without
    a tag (containers-policy.json(5); signature/policy_reference_match.go), so on a replica
    ``exactRepository`` names the repository the person signed."""
    signed: dict[str, str] = {"type": "matchRepository"}
    if identity is not None:
        signed = {"type": "exactRepository", "dockerRepository": identity}
    return {
        "type": "sigstoreSigned",
        "keyData": base64.b64encode(pem.encode()).decode(),
        "signedIdentity": signed,
    }


def registries_d(catalog: Catalog) -> str:
    """containers-registries.d(5): look for cosign signatures (``use-sigstore-attachments``)
    under approved/ of the target and of every replica, and nowhere else, so that pulls from
    other registries (a node's system images) are not sent looking for ``.sig`` tags."""
    approved = catalog.settings.target.approved
    hosts = [catalog.settings.target.registry, *(r.registry for r in catalog.settings.replicas)]
    document = {
        "docker": {f"{host}/{approved}": {"use-sigstore-attachments": True} for host in sorted(set(hosts))}
    }
    return _dump_yaml(document)


def kyverno_policy(catalog: Catalog, registry: str) -> str:
    rules = [_kyverno_rule(req) for req in requirements(catalog, registry)]
    document = {
        "apiVersion": "kyverno.io/v1",
        "kind": "ClusterPolicy",
        "metadata": {
            "name": KYVERNO_POLICY_NAME,
            "annotations": {
                "policies.kyverno.io/title": "Images from the trusted registry carry their required signatures",
                "policies.kyverno.io/description": (
                    f"Generated by 'syncer export-policy --format kyverno' from the catalog for "
                    f"{registry}; regenerate it instead of editing it."
                ),
            },
        },
        "spec": {
            # Image verification needs the admission request; background scans cannot do it.
            "background": False,
            # An error (a registry Kyverno cannot reach) refuses the Pod rather than admitting it.
            "webhookConfiguration": {"failurePolicy": "Fail"},
            "rules": rules,
        },
    }
    return _dump_yaml(document)


def kyverno_ivp(catalog: Catalog, registry: str) -> str:
    """ImageValidatingPolicy documents: images needing the same signers share one policy,
    whose validation requires every one of them on each matched image."""
    groups: dict[tuple[tuple[str, str], ...], list[Requirement]] = {}
    for req in requirements(catalog, registry):
        groups.setdefault(req.signers, []).append(req)
    documents = [
        _ivp_document(signers, reqs, registry)
        for signers, reqs in sorted(groups.items(), key=lambda g: [n for n, _ in g[0]])
    ]
    return "---\n".join(_dump_yaml(d) for d in documents)


def _ivp_document(signers: tuple[tuple[str, str], ...], reqs: list[Requirement], registry: str) -> dict:
    names = [name for name, _ in signers]
    attestors = ", ".join(f'attestors["{name}"]' for name in names)
    images = "images.containers + images.initContainers + images.ephemeralContainers"
    return {
        "apiVersion": IVP_API_VERSION,
        "kind": "ImageValidatingPolicy",
        "metadata": {
            "name": _k8s_name("syncer-approved-", "-".join(names)),
            "annotations": {
                "policies.kyverno.io/title": f"Images from the trusted registry signed by {', '.join(names)}",
                "policies.kyverno.io/description": (
                    f"Generated by 'syncer export-policy --format kyverno-ivp' from the catalog for "
                    f"{registry}; regenerate it instead of editing it."
                ),
            },
        },
        "spec": {
            "failurePolicy": "Fail",
            "validationActions": ["Deny"],
            "evaluation": {"background": {"enabled": False}},
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["pods"],
                    }
                ]
            },
            "matchImageReferences": [
                {"glob": glob} for req in reqs for glob in (f"{req.repository}:*", f"{req.repository}@*")
            ],
            "validationConfigurations": {"mutateDigest": True, "verifyDigest": True, "required": True},
            "attestors": [
                {
                    "name": name,
                    "cosign": {
                        "key": {"data": LiteralScalarString(_with_newline(pem))},
                        # No transparency log: syncer's signatures are plain key signatures.
                        "ctlog": {"insecureIgnoreTlog": True, "insecureIgnoreSCT": True},
                    },
                }
                for name, pem in signers
            ],
            # verifyImageSignatures counts the attestors that verified; all must.
            "validations": [
                {
                    "expression": f"({images}).all(image, verifyImageSignatures(image, [{attestors}]) == {len(names)})",
                    "message": f"images under {registry} must carry the signatures of {', '.join(names)}",
                }
            ],
        },
    }


def _dump_yaml(document: dict) -> str:
    out = io.StringIO()
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 4096  # keep long references and descriptions on one line
    yaml.dump(document, out)
    return out.getvalue()


def _with_newline(pem: str) -> str:
    return pem if pem.endswith("\n") else pem + "\n"


def _kyverno_rule(req: Requirement) -> dict:
    entries = [
        {
            "keys": {
                "publicKeys": LiteralScalarString(_with_newline(pem)),
                "rekor": {"url": _PUBLIC_REKOR, "ignoreTlog": True},
                "ctlog": {"ignoreSCT": True},
            }
        }
        for _, pem in req.signers
    ]
    return {
        "name": _rule_name(req.name),
        "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
        "verifyImages": [
            {
                # By tag and by digest, and nothing else: "<name>*" would also catch the
                # repositories of other catalog images whose names start the same way.
                "imageReferences": [f"{req.repository}:*", f"{req.repository}@*"],
                "type": "Cosign",
                "failureAction": "Enforce",
                "mutateDigest": True,
                "verifyDigest": True,
                "required": True,
                "attestors": [{"count": len(entries), "entries": entries}],
            }
        ],
    }


def _rule_name(name: str) -> str:
    return _k8s_name("verify-", name)


def _k8s_name(prefix: str, name: str) -> str:
    """``<prefix><name>``; names that had to be rewritten (``a/b`` and ``a-b`` would both give
    ``verify-a-b``) or shortened end in a hash of the full name so that they stay distinct."""
    text = prefix + re.sub(r"[^a-z0-9-]+", "-", name).strip("-")
    if text == f"{prefix}{name}" and len(text) <= _RULE_NAME_MAX:
        return text
    suffix = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{text[: _RULE_NAME_MAX - 9].rstrip('-')}-{suffix}"
