"""The built-in demo, offline: a local registry plays Docker Hub (seeded with small images with
real package metadata, one multi-platform, one vulnerable, one whose tag moves), another is the
trusted registry, a generated database stands in for Trivy's, and a git repository with a
bare remote receives the audit trail. The pipeline runs, an upstream tag moves, and it runs
again; then it prints what was promoted, held, and why.

With --access the trusted registry runs in `auth: token` mode behind a real
`syncer auth-server` that enforces the demo catalog's access.yaml: the pipeline logs in as the
robot `syncer`, and at the end the demo shows, against the registry, that a developer (dev1)
pulls from approved/ but not from quarantine/ and cannot push, while a content administrator
(admin) pulls from quarantine/. The auth server's audit log is DIR/access/auth-server.log.
The replica stays open (no auth). A directory holds one kind of demo: use another --dir to
try the other.

Everything lives under --dir (default .demo). Running the demo again reuses it and changes
nothing. Delete the directory to start over.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from syncer.demo.world import run_demo


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir",
        default=".demo",
        metavar="DIR",
        help="where the demo keeps its registries, repository and keys (default: %(default)s)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="leave the registries running afterwards, until Ctrl-C"
    )
    parser.add_argument(
        "--access",
        action="store_true",
        help="put the trusted registry behind syncer auth-server enforcing "
        "catalog/access.yaml, and show what access control does",
    )


def run(args: argparse.Namespace) -> int:
    return run_demo(Path(args.dir), keep=args.keep, access=args.access)
