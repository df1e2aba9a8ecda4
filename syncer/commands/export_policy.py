"""Write a deploy-time enforcement config that requires the catalog's signers on approved/.

--format containers writes a containers-policy.json(5) for podman, CRI-O and skopeo: every
image is rejected except <registry>/approved/<name> of each catalog image, which needs a
valid cosign signature (sigstoreSigned) of each signer its policy names; quarantine/ is
rejected explicitly. With --out it also writes the containers-registries.d(5) file that
turns on `use-sigstore-attachments` for approved/ of the target and every replica, as
registries.d/syncer.yaml beside FILE (so --out /etc/containers/policy.json writes
/etc/containers/registries.d/syncer.yaml), or where --registries-d says. --allow SCOPE lets
a node's own images through (a CRI-O node's pause image: --allow registry.k8s.io/pause),
accepted as they are, or with --allow SCOPE=KEY.pub only when signed (sigstore) by that key.
Only builds with sigstore support verify these signatures: Debian's podman 4.3 and skopeo
1.9 refuse every sigstoreSigned image ("sigstore disabled"), signed or not.

--format kyverno writes a Kyverno ClusterPolicy with one verifyImages rule per catalog image,
requiring every signer of its policy (count = number of signers). --format kyverno-ivp
writes ImageValidatingPolicy documents (policies.kyverno.io/v1), one per set of signers.

--registry picks the registry the config is for: target.registry (the default) or one of
replicas:. The output depends only on the catalog, so it can be committed and diffed; with
--out FILE the file is written only when its content changes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from syncer.access import enforce
from syncer.catalog import display_path, load_catalog
from syncer.errors import UsageError
from syncer.trail.report import write_if_changed

FORMATS = ("containers", "kyverno", "kyverno-ivp")
REGISTRIES_D = Path("registries.d") / "syncer.yaml"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        required=True,
        choices=FORMATS,
        help="containers: containers-policy.json (and registries.d); "
        "kyverno: a ClusterPolicy; kyverno-ivp: ImageValidatingPolicies",
    )
    parser.add_argument(
        "--registry", metavar="HOST", help="target.registry (default) or a registry under replicas:"
    )
    parser.add_argument("--out", metavar="FILE", help="write to FILE instead of stdout")
    parser.add_argument(
        "--registries-d",
        metavar="FILE",
        help="containers: where to write the registries.d file (default: "
        "registries.d/syncer.yaml beside --out; not written without either)",
    )
    parser.add_argument(
        "--allow",
        metavar="SCOPE[=KEY.pub]",
        action="append",
        default=[],
        help="containers: accept images under SCOPE, a node's own (e.g. "
        "registry.k8s.io/pause), or with =KEY.pub only signed by that key",
    )


def run(args: argparse.Namespace) -> int:
    catalog = load_catalog(args.catalog)
    settings = catalog.settings
    known = [settings.target.registry, *(r.registry for r in settings.replicas)]
    registry = args.registry or settings.target.registry
    if registry not in known:
        raise UsageError(
            f"--registry {registry} is not named in settings.yaml; use one of "
            f"{', '.join(known)} (target.registry or replicas:)"
        )
    if args.json and args.out is None:
        raise UsageError("--json prints a summary of the file written; give --out FILE")
    if args.format != "containers" and (args.allow or args.registries_d):
        raise UsageError(
            "--allow and --registries-d are for --format containers; Kyverno "
            "admits images outside the catalog's repositories already"
        )
    if args.format == "containers":
        text = enforce.containers_policy(catalog, registry, tuple(_allow(a, registry) for a in args.allow))
    elif args.format == "kyverno":
        text = enforce.kyverno_policy(catalog, registry)
    else:
        text = enforce.kyverno_ivp(catalog, registry)
    out = Path(args.out) if args.out else None
    written: dict[Path, bool] = {}
    if out is not None:
        written[out] = _write(out, text, "--out")
    registries_d = (
        Path(args.registries_d)
        if args.registries_d
        else (out.parent / REGISTRIES_D if out is not None and args.format == "containers" else None)
    )
    if registries_d is not None:
        if args.registries_d is None:
            registries_d.parent.mkdir(exist_ok=True)  # beside --out, whose directory exists
        written[registries_d] = _write(registries_d, enforce.registries_d(catalog), "--registries-d")
    if out is None:
        sys.stdout.write(text)
    if args.json and out is not None:
        summary = {
            "format": args.format,
            "registry": registry,
            "out": display_path(out),
            "written": written[out],
            "images": len(catalog.images),
        }
        if registries_d is not None:
            summary["registries_d"] = {"path": display_path(registries_d), "written": written[registries_d]}
        json.dump(summary, sys.stdout, indent=2)
        print()
        return 0
    for path, changed in written.items():
        what = (
            f"{args.format} policy for {registry}, {len(catalog.images)} images"
            if path == out
            else "registries.d: use-sigstore-attachments on approved/"
        )
        print(f"{display_path(path)} {'written' if changed else 'unchanged'} ({what})", file=sys.stderr)
    return 0


def _write(path: Path, text: str, option: str) -> bool:
    if not path.parent.is_dir():
        raise UsageError(
            f"directory {display_path(path.parent)} does not exist; create it or choose another {option}"
        )
    return write_if_changed(path.parent, path.name, text)


def _allow(value: str, registry: str) -> enforce.Allow:
    scope, sep, key_file = value.partition("=")
    problem = enforce.allow_problem(scope, registry)
    if problem:
        raise UsageError(problem)
    if not sep:
        return enforce.Allow(scope)
    path = Path(key_file)
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise UsageError(
            f"--allow {scope}={key_file}: cannot read the key ({exc.strerror}); give "
            "the path of the vendor's PEM public key"
        ) from None
    try:
        serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):
        raise UsageError(
            f"--allow {scope}={key_file}: not a PEM public key; give the vendor's "
            "cosign public key (-----BEGIN PUBLIC KEY-----)"
        ) from None
    return enforce.Allow(scope, pem.decode())
