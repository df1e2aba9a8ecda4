"""Write a deploy-time enforcement config that requires the catalog's signers on approved/.

--format containers writes a containers-policy.json(5) for podman, CRI-O and skopeo: every
image is rejected except <registry>/approved/<name> of each catalog image, which needs a
valid cosign signature (sigstoreSigned) of each signer its policy names; quarantine/ is
rejected explicitly. Nodes need `use-sigstore-attachments: true` for the registry in
containers-registries.d(5) to find the signatures.

--format kyverno writes a Kyverno ClusterPolicy with one verifyImages rule per catalog image,
requiring every signer of its policy (count = number of signers).

--registry picks the registry the config is for: target.registry (the default) or one of
replicas:. The output depends only on the catalog, so it can be committed and diffed; with
--out FILE the file is written only when its content changes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from syncer.access import enforce
from syncer.catalog import display_path, load_catalog
from syncer.errors import UsageError
from syncer.trail.report import write_if_changed

RENDERERS = {"containers": enforce.containers_policy, "kyverno": enforce.kyverno_policy}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", required=True, choices=sorted(RENDERERS),
                        help="containers: containers-policy.json; kyverno: a ClusterPolicy")
    parser.add_argument("--registry", metavar="HOST",
                        help="target.registry (default) or a registry under replicas:")
    parser.add_argument("--out", metavar="FILE", help="write to FILE instead of stdout")


def run(args: argparse.Namespace) -> int:
    catalog = load_catalog(args.catalog)
    settings = catalog.settings
    known = [settings.target.registry, *(r.registry for r in settings.replicas)]
    registry = args.registry or settings.target.registry
    if registry not in known:
        raise UsageError(f"--registry {registry} is not named in settings.yaml; use one of "
                         f"{', '.join(known)} (target.registry or replicas:)")
    if args.json and args.out is None:
        raise UsageError("--json prints a summary of the file written; give --out FILE")
    text = RENDERERS[args.format](catalog, registry)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    out = Path(args.out)
    if not out.parent.is_dir():
        raise UsageError(f"directory {display_path(out.parent)} does not exist; create it or "
                         "choose another --out")
    changed = write_if_changed(out.parent, out.name, text)
    if args.json:
        json.dump({"format": args.format, "registry": registry, "out": display_path(out),
                   "written": changed, "images": len(catalog.images)}, sys.stdout, indent=2)
        print()
        return 0
    print(f"{display_path(out)} {'written' if changed else 'unchanged'} "
          f"({args.format} policy for {registry}, {len(catalog.images)} images)", file=sys.stderr)
    return 0
