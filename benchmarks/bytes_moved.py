"""Issue 21: bytes moved by a first run and a re-scan, against the distinct-blob minimum.

Ten images with shared base layers (three of them multi-platform indexes) sit in a registry
playing Docker Hub. ``syncer run --jobs N`` mirrors, scans, promotes and replicates them into
an empty trusted registry and an empty replica; then the vulnerability DB is made one day
newer and a second run re-scans everything with the caches the first left. Every registry
sits behind a counting proxy (tests/harness/faultproxy.py), which adds up the bodies of
blob requests:

* **out of Hub**: blob GETs answered by the Hub stand-in;
* **into trusted**: blob upload bodies (PATCH/PUT) the trusted registry received;
* **read by Trivy** / **read by the layer check** / **read for replication**: blob GETs
  from the trusted registry, told apart by user agent (Trivy's, syncer's, skopeo's);
* **into replica**: blob upload bodies the replica received.

The minimum of every column is the sum of the distinct blobs (configs and layers) of the
set: each crosses each link once. ``skopeo sync`` of the same set (one process, ``--all``)
into another empty registry is the baseline. Runs as root and as a non-root user created
for the benchmark (``useradd``), at every ``--jobs``. The non-root run goes through
``setpriv`` with the user's uid and gid and no groups; it keeps CAP_DAC_READ_SEARCH (and
nothing else) only because this machine's Python lives under /root (mode 0700): files
the run writes are the user's, and skopeo sees a non-root user.

    .venv/bin/python benchmarks/bytes_moved.py [--small] [--scale F] [--jobs 1,2,4]
                                               [--users root,nonroot] [--code DIR] [--keep]

``--code DIR`` runs the syncer found in DIR (PYTHONPATH), e.g. a checkout of the code before
this issue, for the baseline.
"""

from __future__ import annotations

import os
import pwd
import random
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

from syncer.demo.images import Image, build_image, index_of
from tests.harness.faultproxy import FaultProxy

TAG = "1.0"
BENCH_USER = "syncer-bench"
MB = 1_000_000

# Layers by name: size in MB (random bytes, so gzip does not shrink them).
LAYERS = {
    "debian": 12,
    "debian-arm64": 12,
    "alpine": 8,
    "alpine-arm64": 8,
    "python": 15,
    "app1": 10,
    "app2": 20,
    "app3": 20,
    "app4": 30,
    "app5": 12,
    "app6": 25,
    "multi1": 20,
    "multi1-arm64": 20,
    "multi2": 10,
    "multi2-arm64": 10,
    "multi3": 40,
    "multi3-arm64": 40,
    "big": 47,
}
# Repository -> platform -> layers, bottom first.
IMAGES = {
    "app1": {"linux/amd64": ("debian", "app1")},
    "app2": {"linux/amd64": ("debian", "app2")},
    "app3": {"linux/amd64": ("debian", "python", "app3")},
    "app4": {"linux/amd64": ("debian", "python", "app4")},
    "app5": {"linux/amd64": ("alpine", "app5")},
    "app6": {"linux/amd64": ("alpine", "app6")},
    "big": {"linux/amd64": ("debian", "python", "big")},
    "multi1": {"linux/amd64": ("debian", "multi1"), "linux/arm64": ("debian-arm64", "multi1-arm64")},
    "multi2": {
        "linux/amd64": ("debian", "python", "multi2"),
        "linux/arm64": ("debian-arm64", "multi2-arm64"),
    },
    "multi3": {"linux/amd64": ("alpine", "multi3"), "linux/arm64": ("alpine-arm64", "multi3-arm64")},
}
COLUMNS = (
    "out of Hub",
    "into trusted",
    "read by Trivy",
    "read by the layer check",
    "read for replication",
    "into replica",
)


def build_set(scale: float) -> dict[str, object]:
    """The artifacts by repository; every layer's bytes are the same wherever it is used."""
    contents = {
        name: {f"opt/{name}/data": random.Random(name).randbytes(int(size * MB * scale))}
        for name, size in LAYERS.items()
    }
    out: dict[str, object] = {}
    for repo, platforms in IMAGES.items():
        images = [
            build_image([contents[layer] for layer in layers], platform=platform)
            for platform, layers in platforms.items()
        ]
        out[repo] = images[0] if len(images) == 1 else index_of(images)
    return out


def images_of(artifact) -> list[Image]:
    return [artifact] if isinstance(artifact, Image) else list(artifact.images)


def distinct_blob_bytes(artifacts: dict[str, object]) -> int:
    blobs = {
        b.digest: len(b.data) for a in artifacts.values() for i in images_of(a) for b in (i.config, *i.layers)
    }
    return sum(blobs.values())


def upload_set(hub, artifacts: dict[str, object]) -> None:
    for repo, artifact in artifacts.items():
        for image in images_of(artifact):
            c.upload(hub, f"library/{repo}", image, [TAG] if image is artifact else [image.digest])
        if not isinstance(artifact, Image):
            with c.harness_session(hub) as session:
                session.put(
                    f"{hub.url}/v2/library/{repo}/manifests/{TAG}",
                    data=artifact.manifest.data,
                    headers={"Content-Type": artifact.manifest.media_type},
                    timeout=c.HTTP_TIMEOUT,
                ).raise_for_status()


# --- counting -----------------------------------------------------------------------------------


def _agent(seen) -> str:
    agent = seen.headers.get("user-agent", "").lower()
    if agent.startswith("trivy") or "go-containerregistry" in agent:
        return "trivy"
    if agent.startswith("syncer"):
        return "syncer"
    if "containers/" in agent or "skopeo" in agent:
        return "skopeo"
    return agent or "none"


def blob_reads(proxy: FaultProxy) -> Counter[str]:
    """Blob bytes the registry behind ``proxy`` sent, by client."""
    out: Counter[str] = Counter()
    for s in list(proxy.seen):
        if s.method == "GET" and "/blobs/" in s.uri and "/uploads/" not in s.uri:
            out[_agent(s)] += s.sent
    return out


def blob_writes(proxy: FaultProxy) -> int:
    return sum(
        s.received
        for s in list(proxy.seen)
        if s.method in ("PATCH", "PUT", "POST") and "/blobs/uploads" in s.uri
    )


def reset(*proxies: FaultProxy) -> None:
    for proxy in proxies:
        proxy.seen.clear()


@dataclass
class Counts:
    values: dict[str, int]

    def row(self, minimum: int) -> str:
        return " | ".join(
            f"{self.values[col] / MB:7.1f} MB {self.values[col] / minimum:5.2f}x" for col in COLUMNS
        )


def counts(hub: FaultProxy, target: FaultProxy, replica: FaultProxy) -> Counts:
    reads = blob_reads(target)
    return Counts(
        {
            "out of Hub": sum(blob_reads(hub).values()),
            "into trusted": blob_writes(target),
            "read by Trivy": reads["trivy"],
            "read by the layer check": reads["syncer"],
            "read for replication": reads["skopeo"],
            "into replica": blob_writes(replica),
        }
    )


# --- users --------------------------------------------------------------------------------------


def bench_user() -> tuple[int, int, bool]:
    """(uid, gid, created) of the benchmark's non-root user, created if missing."""
    try:
        entry = pwd.getpwnam(BENCH_USER)
        return entry.pw_uid, entry.pw_gid, False
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                BENCH_USER,
            ],
            check=True,
        )
        entry = pwd.getpwnam(BENCH_USER)
        return entry.pw_uid, entry.pw_gid, True


def as_user(uid: int, gid: int) -> list[str]:
    return [
        "setpriv",
        f"--reuid={uid}",
        f"--regid={gid}",
        "--clear-groups",
        "--inh-caps=+dac_read_search",
        "--ambient-caps=+dac_read_search",
    ]


def chown_tree(path: Path, uid: int, gid: int) -> None:
    for root, dirs, files in os.walk(path):
        for name in (root, *(os.path.join(root, n) for n in dirs + files)):
            os.lchown(name, uid, gid)


# --- one configuration --------------------------------------------------------------------------


def run_config(
    ws: c.Workspace,
    hub_proxy: FaultProxy,
    user: str,
    jobs: int,
    count: int,
    owner: tuple[int, int] | None,
    code: str,
) -> tuple[Counts, Counts, float]:
    work = ws.root / f"{user}-jobs{jobs}"
    work.mkdir()
    target, replica = ws.registry(f"{work.name}/target"), ws.registry(f"{work.name}/replica")
    with FaultProxy(target.url) as target_proxy, FaultProxy(replica.url) as replica_proxy:
        db = ws.trivy_db(f"{work.name}/trivy-cache")
        setup = c.write_catalog(
            work,
            hub=hub_proxy,
            target_host=target_proxy.host,
            image_files={
                "bench.yaml": "images:\n"
                + "".join(f'  - source: docker.io/library/{repo}\n    tags: ["{TAG}"]\n' for repo in IMAGES)
            },
            trivy_cache=db.cache_dir,
        )
        with (setup.catalog / "settings.yaml").open("a") as f:
            f.write(f"replicas:\n  - registry: {replica_proxy.host}\n    tls_verify: false\n")
        env = {**setup.env(), "PYTHONPATH": code}
        prefix: list[str] = []
        if owner is not None:
            home, tmp = work / "home", work / "tmp"
            home.mkdir()
            tmp.mkdir()
            env.update(HOME=str(home), TMPDIR=str(tmp), USER=BENCH_USER, LOGNAME=BENCH_USER)
            env.pop("XDG_DATA_HOME", None)
            prefix = as_user(*owner)
            chown_tree(work, *owner)

        def syncer_run(what: str) -> float:
            result = c.require_ok(
                what, c.timed(prefix + setup.argv("run", "--jobs", str(jobs)), env=env, cwd=setup.root)
            )
            return result.seconds

        reset(hub_proxy, target_proxy, replica_proxy)
        seconds = syncer_run(f"{user} --jobs {jobs}: first run")
        states = c.states(setup)
        if states.get("promoted") != count:
            raise SystemExit(f"{user} --jobs {jobs}: not all promoted: {c.states_text(setup)}")
        first = counts(hub_proxy, target_proxy, replica_proxy)
        db.write()  # one day newer: the next run re-scans every image
        if owner is not None:
            chown_tree(db.cache_dir, *owner)
        reset(hub_proxy, target_proxy, replica_proxy)
        syncer_run(f"{user} --jobs {jobs}: re-scan")
        rescan = counts(hub_proxy, target_proxy, replica_proxy)
    ws.stop(target)
    ws.stop(replica)
    return first, rescan, seconds


def skopeo_sync(ws: c.Workspace, hub_proxy: FaultProxy) -> tuple[int, int]:
    """(out of Hub, into the destination) for one `skopeo sync --all` of the set."""
    work = ws.root / "skopeo-sync"
    work.mkdir()
    dest = ws.registry("skopeo-sync/dest")
    with FaultProxy(dest.url) as dest_proxy:
        source = work / "sync.yaml"
        source.write_text(
            f"{hub_proxy.host}:\n  tls-verify: false\n  images:\n"
            + "".join(f'    library/{repo}: ["{TAG}"]\n' for repo in IMAGES)
        )
        (work / "registries.d").mkdir()
        (work / "registries.conf").write_text("")
        reset(hub_proxy)
        done = subprocess.run(
            [
                "skopeo",
                "--policy",
                str(c.skopeo_policy(work)),
                "--registries.d",
                str(work / "registries.d"),
                "sync",
                "--all",
                "--src",
                "yaml",
                "--dest",
                "docker",
                "--dest-tls-verify=false",
                "--src-no-creds",
                "--dest-no-creds",
                str(source),
                f"{dest_proxy.host}/sync",
            ],
            env={
                "PATH": os.environ["PATH"],
                "HOME": str(work),
                "XDG_DATA_HOME": str(work),
                "_CONTAINERS_ROOTLESS_UID": "65534",
                "CONTAINERS_REGISTRIES_CONF": str(work / "registries.conf"),
            },
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"skopeo sync failed: {done.stderr[-2000:]}")
        result = sum(blob_reads(hub_proxy).values()), blob_writes(dest_proxy)
    ws.stop(dest)
    return result


def main() -> int:
    p = c.parser(__doc__.split("\n\n")[0])
    p.add_argument(
        "--scale", type=float, default=None, help="layer sizes times F (default 1; 0.05 with --small)"
    )
    p.add_argument("--jobs", default="1,2,4", help="the --jobs values to measure")
    p.add_argument("--users", default="root,nonroot", help="root, nonroot or both")
    p.add_argument(
        "--code",
        default=str(c.ROOT),
        metavar="DIR",
        help="where the syncer package to measure is (default: this checkout)",
    )
    args = p.parse_args()
    scale = args.scale or (0.05 if args.small else 1.0)
    jobs_list = [int(j) for j in args.jobs.split(",")]
    users = args.users.split(",")
    if os.geteuid() != 0:
        raise SystemExit("bytes_moved.py runs as root: it creates a user for the non-root runs")
    print(
        f"bytes_moved: {len(IMAGES)} images ({sum(len(p) > 1 for p in IMAGES.values())} "
        f"multi-platform indexes), layer sizes x{scale:g}"
    )
    print(f"machine: {c.machine()}; syncer from {args.code}")
    artifacts = build_set(scale)
    minimum = distinct_blob_bytes(artifacts)
    sizes = {
        repo: sum(len(b.data) for i in images_of(a) for b in (i.config, *i.layers))
        for repo, a in artifacts.items()
    }
    print(
        f"images: {min(sizes.values()) / MB:.1f}-{max(sizes.values()) / MB:.1f} MB each, "
        f"{sum(sizes.values()) / MB:.1f} MB in all; distinct blobs (the minimum): "
        f"{minimum / MB:.1f} MB"
    )
    created = False
    owner = None
    if "nonroot" in users:
        uid, gid, created = bench_user()
        owner = (uid, gid)
    results: dict[tuple[str, int], tuple[Counts, Counts, float]] = {}
    try:
        with c.Workspace("bytes", keep=args.keep) as ws:
            os.chmod(ws.root, 0o755)  # the non-root user reaches its own directories inside
            hub = ws.registry("hub")
            upload_set(hub, artifacts)
            with FaultProxy(hub.url) as hub_proxy:
                sync_out, sync_in = skopeo_sync(ws, hub_proxy)
                for user in users:
                    for jobs in jobs_list:
                        results[user, jobs] = run_config(
                            ws,
                            hub_proxy,
                            user,
                            jobs,
                            len(IMAGES),
                            owner if user == "nonroot" else None,
                            args.code,
                        )
                        first, rescan, seconds = results[user, jobs]
                        print(
                            f"  {user:<7} --jobs {jobs}: first run {seconds:.0f} s: {first.row(minimum)}",
                            flush=True,
                        )
    finally:
        if created:
            subprocess.run(["userdel", BENCH_USER], check=False)
    c.heading(
        f"first run, bytes against the distinct-blob minimum ({minimum / MB:.1f} MB): " + " | ".join(COLUMNS)
    )
    c.line(
        "skopeo sync (one process, --all)",
        f"out of Hub {sync_out / MB:.1f} MB {sync_out / minimum:.2f}x, into its registry "
        f"{sync_in / MB:.1f} MB {sync_in / minimum:.2f}x",
    )
    worst = 0.0
    for (user, jobs), (first, _, _) in results.items():
        c.line(f"{user} --jobs {jobs}", first.row(minimum))
        worst = max(worst, *(v / minimum for v in first.values.values()))
    c.heading("re-scan with the caches kept (DB one day newer): bytes moved")
    for (user, jobs), (_, rescan, _) in results.items():
        c.line(
            f"{user} --jobs {jobs}",
            ", ".join(f"{col} {rescan.values[col] / MB:.2f} MB" for col in COLUMNS if rescan.values[col])
            or "none",
        )
    c.heading("goal")
    c.line(
        "<= 1.02x the minimum in every column", f"worst {worst:.3f}x  {'met' if worst <= 1.02 else 'NOT MET'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
