"""Check which required signers have signed an image in the trusted registry.

REF names an image of the trusted registry by tag or digest:
  registry.example.com/approved/nginx:1.27.3
  registry.example.com/approved/nginx@sha256:…
  approved/nginx:1.27.3                 (relative to target.registry)
  registry.eu.example.com/approved/nginx:1.27.3   (a registry under replicas:)
A digest in REF is the one checked; a registry answering for it with another digest is an
error. A tag is resolved to the digest of the manifest bytes it points at (one GET), never to
the registry's word. The required signers are those of the policy of the catalog image REF
belongs to (approved/<name> or quarantine/<name>), or the names given with --signers; their
public keys come from catalog/signers/NAME.pub. A signature counts only if it verifies with
that key and names exactly this digest and <registry as written in REF>/<repository> as its
identity; on a replica, a person's signature names the trusted registry's repository instead
(people sign once, in the trusted registry; `syncer run` copies their signatures to every
replica unchanged).

Exit 0 when every required signer has signed, 1 when any is missing (or the registry could
not be read), 2 for usage or catalog errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

from syncer.access.enforce import required_signers
from syncer.catalog import is_valid_signer_name, load_catalog
from syncer.core import cosign
from syncer.core.model import Catalog
from syncer.core.trusted import TrustedRef, parse_trusted_ref, signed_identity
from syncer.errors import RegistryError, SigningError, UsageError
from syncer.stages import signatures
from syncer.stages.signatures import resolve_digest
from syncer.tools.endpoints import endpoint_for
from syncer.tools.registry import RegistryClient


@dataclass(frozen=True)
class Verification:
    ref: TrustedRef
    digest: str
    required: list[str]
    required_by: str  # where the required signers came from, for messages
    result: signatures.VerifyResult
    notes: list[str]  # signatures that count for nobody asked about: unknown keys, other signers
    identities: dict[str, str]  # the identity each required signer's signature must name

    @property
    def ok(self) -> bool:
        return self.result.ok


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "ref", metavar="REF", help="image in the trusted registry: [REGISTRY/]approved/NAME:TAG or @sha256:…"
    )
    parser.add_argument(
        "--signers", metavar="A,B", help="required signers instead of those of the image's policy"
    )


def run(args: argparse.Namespace) -> int:
    catalog = load_catalog(args.catalog)
    ref = parse_trusted_ref(args.ref, catalog.settings)
    explicit = parse_signer_list(args.signers) if args.signers is not None else None
    names, required_by = signers_for(catalog, ref, explicit)
    endpoint = endpoint_for(catalog.settings, ref.registry)
    identities = {
        name: signed_identity(catalog.settings, ref.registry, ref.repository, name) for name in names
    }
    with endpoint.client() as client:
        digest = resolve_digest(client, ref, "verified")
        result = signatures.verify_signers(
            client,
            ref.repository,
            digest,
            ref.identity,
            {name: catalog.signers[name] for name in names},
            identities=identities,
        )
        notes = other_signatures(client, ref, digest, catalog, names)
    outcome = Verification(ref, digest, names, required_by, result, notes, identities)
    if args.json:
        json.dump(_as_json(outcome), sys.stdout, indent=2)
        print()
    else:
        print(render(outcome))
    return 0 if outcome.ok else 1


# --- signers -------------------------------------------------------------------------------


def parse_signer_list(text: str) -> list[str]:
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise UsageError("--signers is empty; name at least one signer (--signers ci,alice)")
    bad = [n for n in names if not is_valid_signer_name(n)]
    if bad:
        raise UsageError(
            f"--signers: {', '.join(repr(n) for n in bad)} is not a signer name "
            "(letters, digits, '.', '_' and '-')"
        )
    return names


def signers_for(catalog: Catalog, ref: TrustedRef, explicit: list[str] | None) -> tuple[list[str], str]:
    """The required signers and a phrase saying where they came from."""
    if explicit is not None:
        unknown = [n for n in explicit if n not in catalog.signers]
        if unknown:
            known = ", ".join(sorted(catalog.signers)) or "none yet"
            raise UsageError(
                f"signer {', '.join(repr(n) for n in unknown)} has no public key in "
                f"{catalog.root}/signers/ (known signers: {known}); add NAME.pub there "
                "(syncer keygen NAME) or fix --signers"
            )
        return explicit, "--signers"
    entry = catalog.image(ref.name)
    if entry is None:
        raise UsageError(
            f"{ref.repository} belongs to no catalog entry: no image named '{ref.name}' in "
            f"{catalog.root}/images/; check the name, or pass --signers NAME,… to verify "
            "against named signers"
        )
    return list(required_signers(catalog, entry)), f"policy '{entry.policy}' of image '{entry.name}'"


def other_signatures(
    client: RegistryClient, ref: TrustedRef, digest: str, catalog: Catalog, required: list[str]
) -> list[str]:
    """What verify_signers leaves unsaid: no signatures at all, signatures by keys that are not
    in the catalog, and signatures by known signers who were not asked about."""
    layers = signatures.read_signatures(client, ref.repository, digest)
    if not layers:
        return [
            f"no signatures are stored for {ref.repository}@{digest} (no "
            f"{signatures.signature_tag(digest)} tag)"
        ]
    keys = {}
    for name, pem in sorted(catalog.signers.items()):
        try:
            keys[name] = cosign.load_public_key(pem.encode(), source=f"signer '{name}'")
        except SigningError:
            continue  # verify_signers reports the key of a required signer; others do not matter
    notes = []
    for layer in layers:
        try:
            blob = client.get_blob(ref.repository, layer.digest, layer.size)
        except RegistryError:
            continue  # reported by verify_signers
        by = [name for name, key in keys.items() if cosign.verify(key, blob, layer.signature)]
        if not by:
            notes.append(
                f"signature layer {layer.digest} was made by an unknown key (none of "
                f"{catalog.root}/signers/*.pub); it counts for no signer"
            )
        elif not set(by) & set(required):
            notes.append(f"signature layer {layer.digest} is by {', '.join(by)}, not a required signer here")
    return notes


# --- output --------------------------------------------------------------------------------


def render(v: Verification) -> str:
    pinned = f"{v.ref.registry}/{v.ref.repository}@{v.digest}"
    lines = [
        pinned + (f" (tag {v.ref.tag})" if v.ref.tag and not v.ref.digest else ""),
        f"  required: {', '.join(v.required)} ({v.required_by})",
        f"  signed:   {', '.join(v.result.signed_by) or 'nobody'}",
        f"  missing:  {', '.join(v.result.missing) or 'nobody'}",
    ]
    lines += [f"  problem:  {p}" for p in v.result.problems]
    lines += [f"  note:     {n}" for n in v.notes]
    named = {v.identities[name]: None for name in v.required}
    if v.ok and list(named) != [v.ref.identity]:
        groups = [
            f"{', '.join(n for n in v.required if v.identities[n] == identity)} as {identity}"
            + (
                ""
                if identity == v.ref.identity
                else " (signed in the trusted registry, copied here by the pipeline)"
            )
            for identity in named
        ]
        lines.append(f"verified: every required signer has signed it: {'; '.join(groups)}")
    elif v.ok:
        lines.append(f"verified: every required signer has signed it as {v.ref.identity}")
    elif v.ref.approved:
        # Where they sign: a person in the trusted registry, whose signature then reaches this one.
        where = f"{v.identities[v.result.missing[-1]]}@{v.digest}"
        copied = "" if where == pinned else " (the next `syncer run` copies it here)"
        lines.append(
            f"NOT verified: no valid signature of {', '.join(v.result.missing)}; a "
            f"signer adds theirs with 'syncer sign {where} --key KEY --signer NAME'{copied}"
        )
    else:
        lines.append(
            f"NOT verified: no valid signature of {', '.join(v.result.missing)}; "
            f"images under {v.ref.namespace}/ are not signed; the pipeline signs "
            "what it promotes"
        )
    return "\n".join(lines)


def _as_json(v: Verification) -> dict:
    return {
        "reference": str(v.ref),
        "registry": v.ref.registry,
        "repository": v.ref.repository,
        "name": v.ref.name,
        "tag": v.ref.tag,
        "digest": v.digest,
        "identity": v.ref.identity,
        "identities": v.identities,
        "required": v.required,
        "required_by": v.required_by,
        "signed_by": v.result.signed_by,
        "missing": v.result.missing,
        "problems": v.result.problems,
        "notes": v.notes,
        "ok": v.ok,
    }
