"""Issue 3: the hourly run when nothing changed upstream.

Seeds a registry playing Docker Hub with REPOS repositories of TAGS matching tags each (one
small image per repository, the same manifest under every tag) plus one tag the catalog does
not match, mirrors everything once with ``syncer run``, then times, in the same process run and
alternately, a no-op ``syncer run`` against ``skopeo sync --src yaml --dest docker`` of the
same tags (``images-by-tag-regex``: the same regex as the catalog's ``match``) into the
quarantine namespace that already holds them. Upstream requests of each are counted from the
hub's access log.

Goals (issue 3): no manifest GET upstream; at most one HEAD per tracked tag plus one tag list
per repository; at least 5x faster than skopeo sync.

    .venv/bin/python benchmarks/noop_discovery.py [--small] [--repeat N] [--keep] [--profile FILE]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

MATCH = r"^1\.\d+\.0$"


def repo_name(i: int) -> str:
    return f"bench-{i:03d}"


def catalog_files(repos: int) -> dict[str, str]:
    return c.team_files(repos, 10, lambda i, team: (
        f"  - source: docker.io/library/{repo_name(i)}\n"
        f"    match: '{MATCH}'\n"
        f'    owners: ["@acme/{team}"]\n'))


def sync_yaml(path: Path, hub_host: str, repos: int) -> Path:
    """skopeo's yaml source: the same repositories and the same regex as the catalog."""
    regexes = {f"library/{repo_name(i)}": MATCH for i in range(repos)}
    # JSON is YAML; it spares us quoting the regexes.
    path.write_text(json.dumps({hub_host: {"tls-verify": False, "images-by-tag-regex": regexes}},
                               indent=2))
    return path


def main() -> int:
    p = c.parser(__doc__.split("\n\n")[0])
    p.add_argument("--latency-ms", type=float, default=20.0, metavar="MS",
                   help="also compare once with this much added to every upstream request, "
                   "through a proxy, as an upstream across the internet adds (default: %(default)s; "
                   "0 skips it)")
    p.add_argument("--profile", metavar="FILE", type=Path,
                   help="also run one no-op under cProfile, save the stats to FILE and print "
                   "the functions with the most cumulative time")
    args = p.parse_args()
    repos, tags_per_repo = (10, 10) if args.small else (100, 10)
    tracked = repos * tags_per_repo
    print(f"noop_discovery: {repos} repositories x {tags_per_repo} tracked tags = {tracked} tags "
          f"(+1 untracked tag each)")
    print(f"machine: {c.machine()}")

    with c.Workspace("noop", keep=args.keep) as ws:
        hub, target = ws.registry("hub"), ws.registry("target")
        db = ws.trivy_db()
        for i in range(repos):
            tags = [f"1.{j}.0" for j in range(tags_per_repo)] + ["latest"]
            c.upload(hub, f"library/{repo_name(i)}", c.small_image(repo_name(i)), tags)
        setup = c.write_catalog(ws.root, hub=hub, target_host=target.host,
                                image_files=catalog_files(repos), trivy_cache=db.cache_dir)

        c.heading("first run (mirror, scan, sign, promote everything), --jobs 4")
        mark = len(hub.requests())
        first = setup.syncer("run", "--jobs", "4")
        c.line("time", f"{first.seconds:.1f} s (exit {first.returncode})")
        c.line("upstream requests", c.kinds_text(c.request_kinds(hub.requests()[mark:])))
        c.line("states after it", c.states_text(setup))
        # Tags that failed (see README: concurrent writes of one digest) are retried, as the
        # next scheduled run would; the no-op comparison needs every tag promoted.
        for _ in range(3):
            if first.returncode == 0:
                break
            first = setup.syncer("run", "--jobs", "4")
            c.line("recovery run", f"{first.seconds:.1f} s (exit {first.returncode}), "
                                   f"{c.states_text(setup)}")
        c.require_ok("mirroring everything", first)
        if c.states(setup).get("promoted") != tracked:
            raise SystemExit(f"expected {tracked} promoted records: {c.states_text(setup)}")

        policy = c.skopeo_policy(ws.root)
        source = sync_yaml(ws.root / "sync.yaml", hub.host, repos)
        skopeo_argv = ["skopeo", "--policy", str(policy), "sync", "--src", "yaml", "--dest", "docker",
                       "--all", "--preserve-digests", "--dest-tls-verify=false", "--dest-no-creds",
                       str(source), f"{target.host}/quarantine"]
        quarantine_before = _target_repositories(target)

        syncer_times, skopeo_times, syncer_cpu, skopeo_cpu = [], [], [], []
        syncer_kinds = skopeo_kinds = None
        snapshot = setup.reports_snapshot()
        for n in range(c.repeats(args)):
            mark = len(hub.requests())
            noop = c.require_ok("no-op syncer run", setup.syncer("run"))
            kinds = c.request_kinds(hub.requests()[mark:])
            if setup.reports_snapshot() != snapshot or "Nothing changed" not in noop.stdout:
                raise SystemExit(f"the no-op run changed something:\n{noop.stdout}")
            syncer_times.append(noop.seconds)
            syncer_cpu.append(noop.cpu_seconds)
            syncer_kinds = syncer_kinds or kinds

            mark = len(hub.requests())
            sync = c.require_ok("skopeo sync", c.timed(skopeo_argv, timeout=3600))
            skopeo_times.append(sync.seconds)
            skopeo_cpu.append(sync.cpu_seconds)
            skopeo_kinds = skopeo_kinds or c.request_kinds(hub.requests()[mark:])
            print(f"  round {n + 1}: syncer {noop.seconds:.2f} s, skopeo sync {sync.seconds:.2f} s",
                  flush=True)
        if args.profile:
            c.profile(setup, args.profile, "run")
        if _target_repositories(target) != quarantine_before:
            raise SystemExit("skopeo sync wrote repositories syncer had not: the comparison is unfair")

        ours, theirs = c.Spread(tuple(syncer_times)), c.Spread(tuple(skopeo_times))
        c.heading(f"no-op run over {tracked} tracked tags in {repos} repositories")
        c.line("syncer run (no-op, --jobs 2)", ours.text())
        c.line("skopeo sync (same tags, target has them)", theirs.text())
        c.line("syncer run: CPU", c.Spread(tuple(syncer_cpu)).text())
        c.line("skopeo sync: CPU", c.Spread(tuple(skopeo_cpu)).text())
        c.line("speed-up (skopeo sync / syncer)", f"{c.ratio(theirs, ours)} (goal >= 5x)")
        c.line("upstream requests, syncer no-op", c.kinds_text(syncer_kinds))
        c.line("upstream requests, skopeo sync", c.kinds_text(skopeo_kinds))
        heads = syncer_kinds["HEAD manifest"]
        lists = syncer_kinds["GET tags list"]
        c.heading("goals")
        c.line("manifest GETs upstream (goal 0)", _verdict(syncer_kinds["GET manifest"] == 0,
                                                           str(syncer_kinds["GET manifest"])))
        c.line(f"HEADs <= {tracked} tracked tags", _verdict(heads <= tracked, str(heads)))
        c.line(f"tag lists <= {repos} repositories", _verdict(lists <= repos, str(lists)))
        c.line(">= 5x faster than skopeo sync",
               _verdict(theirs.median >= 5 * ours.median, c.ratio(theirs, ours)))
        if args.latency_ms > 0:
            _with_latency(args.latency_ms / 1000, hub, setup, policy, target, repos, ws.root)
    return 0


def _with_latency(latency: float, hub, setup, policy, target, repos: int, root: Path) -> None:
    """The same comparison with every upstream request delayed by ``latency`` seconds."""
    from tests.harness.faultproxy import FaultProxy

    settings = setup.catalog / "settings.yaml"
    original = settings.read_text()
    with FaultProxy(hub.url, latency=latency) as proxy:
        settings.write_text(original.replace(f"endpoint: {hub.host}", f"endpoint: {proxy.host}"))
        try:
            noop = c.require_ok("no-op syncer run (latency)", setup.syncer("run"))
            if "Nothing changed" not in noop.stdout:
                raise SystemExit(f"the no-op run changed something:\n{noop.stdout}")
            source = sync_yaml(root / "sync-latency.yaml", proxy.host, repos)
            argv = ["skopeo", "--policy", str(policy), "sync", "--src", "yaml", "--dest", "docker",
                    "--all", "--preserve-digests", "--dest-tls-verify=false", "--dest-no-creds",
                    str(source), f"{target.host}/quarantine"]
            sync = c.require_ok("skopeo sync (latency)", c.timed(argv, timeout=3600))
        finally:
            settings.write_text(original)
    c.heading(f"the same, with {latency * 1000:.0f} ms added to every upstream request (1 round)")
    c.line("syncer run (no-op, --jobs 2)", f"{noop.seconds:.2f} s")
    c.line("skopeo sync", f"{sync.seconds:.2f} s")
    c.line("speed-up (skopeo sync / syncer)", f"{sync.seconds / noop.seconds:.2f}x")


def _verdict(ok: bool, value: str) -> str:
    return f"{value}  {'met' if ok else 'NOT MET'}"


def _target_repositories(target) -> list[str]:
    with c.harness_session(target) as session:
        resp = session.get(f"{target.url}/v2/_catalog?n=1000", timeout=c.HTTP_TIMEOUT)
        resp.raise_for_status()
        return sorted(resp.json().get("repositories") or [])


if __name__ == "__main__":
    sys.exit(main())
