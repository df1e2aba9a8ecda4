"""Issue 7: a large catalog — TAGS explicit tags over ENTRIES entries in FILES files.

Times ``syncer validate`` (offline) and ``syncer plan`` against a registry playing Docker Hub
that has every one of those tags (one small image per repository, its manifest under every
tag), each as its own process, with the peak resident memory of that process (wait4's
ru_maxrss). The reports directory is empty, so the plan lists every tag as new: the pull
request that adds the catalog.

Goals (issue 7): validate under 10 s and under 500 MB.

    .venv/bin/python benchmarks/catalog_scale.py [--small] [--repeat N] [--keep]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

TAGS_PER_ENTRY = 10
ENTRIES_PER_FILE = 10


def repo_name(i: int) -> str:
    return f"scale-{i:04d}"


def tags_of(i: int) -> list[str]:
    return [f"{i % 7}.{j}.{i % 3}" for j in range(TAGS_PER_ENTRY)]


def catalog_files(entries: int) -> dict[str, str]:
    return c.team_files(
        entries,
        ENTRIES_PER_FILE,
        lambda i, team: (
            f"  - source: docker.io/library/{repo_name(i)}\n"
            f"    tags: [{', '.join(repr(t) for t in tags_of(i))}]\n"
            f'    owners: ["@acme/{team}"]\n'
        ),
    )


def main() -> int:
    args = c.parser(__doc__.split("\n\n")[0]).parse_args()
    entries = 50 if args.small else 500
    total = entries * TAGS_PER_ENTRY
    files = catalog_files(entries)
    print(f"catalog_scale: {total} explicit tags over {entries} entries in {len(files)} files")
    print(f"machine: {c.machine()}")

    with c.Workspace("scale", keep=args.keep) as ws:
        hub, target = ws.registry("hub"), ws.registry("target")
        image = c.small_image("scale")
        for i in range(entries):
            c.upload(hub, f"library/{repo_name(i)}", image, tags_of(i))
        setup = c.write_catalog(
            ws.root, hub=hub, target_host=target.host, image_files=files, trivy_cache=ws.root / "no-trivy-db"
        )

        validate, plan = [], []
        plan_kinds = None
        for n in range(c.repeats(args)):
            v = c.require_ok("syncer validate", setup.syncer("validate"))
            if f"{entries} images" not in v.stdout:
                raise SystemExit(f"validate did not see {entries} images:\n{v.stdout[-2000:]}")
            validate.append(v)
            mark = len(hub.requests())
            p = c.require_ok("syncer plan", setup.syncer("plan"))
            if f"{total} new" not in p.stdout:
                raise SystemExit(f"plan did not list {total} new tags:\n{p.stdout[:2000]}")
            plan_kinds = plan_kinds or c.request_kinds(hub.requests()[mark:])
            plan.append(p)
            print(
                f"  round {n + 1}: validate {v.seconds:.2f} s {v.maxrss_mb:.0f} MB, "
                f"plan {p.seconds:.2f} s {p.maxrss_mb:.0f} MB",
                flush=True,
            )

    vt = c.Spread(tuple(r.seconds for r in validate))
    vm = c.Spread(tuple(r.maxrss_mb for r in validate))
    pt = c.Spread(tuple(r.seconds for r in plan))
    pm = c.Spread(tuple(r.maxrss_mb for r in plan))
    c.heading(f"{total} tags, {entries} entries, {len(files)} files")
    c.line("syncer validate: time", vt.text())
    c.line("syncer validate: peak memory", vm.text("MB", 0))
    c.line("syncer plan: time", pt.text())
    c.line("syncer plan: peak memory", pm.text("MB", 0))
    c.line("syncer plan: upstream requests", c.kinds_text(plan_kinds))
    c.heading("goals")
    c.line("validate under 10 s", f"{vt.median:.2f} s  {'met' if max(vt.values) < 10 else 'NOT MET'}")
    c.line("validate under 500 MB", f"{vm.median:.0f} MB  {'met' if max(vm.values) < 500 else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
