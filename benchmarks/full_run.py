"""Issue 7: the first full run over IMAGES small images (distinct digests, one repository and
tag each) against a plain shell-style loop doing the same work with the same tools.

"The same work", per image, in this order:

1. ``skopeo copy --all --preserve-digests`` of the upstream digest into
   ``<target>/quarantine/<name>:<tag>`` (syncer's flags: private accept-anything policy, empty
   registries.conf and registries.d, no credentials);
2. ``trivy image`` of ``<target>/quarantine/<name>@<digest>`` with exactly the flags of
   syncer/tools/trivy.py (remote image source, JSON report, offline, quiet), the report parsed;
3. ``skopeo copy`` of that digest from quarantine to ``<target>/approved/<name>:<tag>``.

The loop is handed the digests (it does no discovery; syncer HEADs every tag upstream) and
writes no records or reports: everything syncer does beyond these three steps is counted as
its orchestration overhead. Signing is extra work the loop does not do; a second loop variant
adds it with the very function syncer uses (syncer.stages.signatures.attach, in-process), so the
overhead can be read with and without it.

Every variant starts from an empty target registry, an empty reports directory and a Trivy
cache holding only the (empty) vulnerability database, and variants alternate per round.

Goals (issue 7): ``syncer run --jobs 1`` within 15% of the plain loop; ``--jobs 4`` faster
than the plain loop.

    .venv/bin/python benchmarks/full_run.py [--small] [--repeat N] [--keep]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

from syncer.core import cosign
from syncer.stages import signatures
from syncer.tools.registry import RegistryClient

TAG = "1.0.0"
# syncer/tools/trivy.py's flags for one scan (``_QUIET_OFFLINE`` and scan_image's argv).
TRIVY_FLAGS = [
    "--skip-db-update",
    "--image-src",
    "remote",
    "--format",
    "json",
    "--exit-code",
    "0",
    "--list-all-pkgs=false",
    "--scanners",
    "vuln",
    "--timeout",
    "540s",
    "--quiet",
    "--disable-telemetry",
    "--skip-version-check",
    "--offline-scan",
    "--skip-java-db-update",
    "--insecure",
]
TRIVY = str(Path(sys.executable).parent / "trivy")


def name_of(i: int) -> str:
    return f"full-{i:03d}"


def catalog_files(count: int) -> dict[str, str]:
    return c.team_files(
        count, 20, lambda i, _team: f'  - source: docker.io/library/{name_of(i)}\n    tags: ["{TAG}"]\n'
    )


class PlainLoop:
    """copy → scan → promote per image, one after the other, with the tools called directly."""

    def __init__(
        self, root: Path, hub_host: str, target_host: str, cache: Path, key: cosign.PrivateKey | None
    ):
        self.root = root
        self.hub, self.target, self.cache = hub_host, target_host, cache
        self.key = key
        self.client = RegistryClient(target_host, tls_verify=False) if key else None
        policy = c.skopeo_policy(root)
        (root / "registries.d").mkdir(exist_ok=True)
        (root / "registries.conf").write_text("")
        self.skopeo = [
            "skopeo",
            "--policy",
            str(policy),
            "--registries.d",
            str(root / "registries.d"),
            "copy",
            "--quiet",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--src-no-creds",
            "--dest-tls-verify=false",
            "--dest-no-creds",
            "--",
        ]
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": str(root),
            "CONTAINERS_REGISTRIES_CONF": str(root / "registries.conf"),
        }

    def run(self, images: list[tuple[str, str]]) -> tuple[float, float, float]:
        """(wall seconds, CPU seconds of the loop and the tools it ran, wall seconds of the
        copy and the scan alone: the loop without its signing and promotion)."""
        start, cpu = time.perf_counter(), c.cpu_now()
        copy_and_scan = 0.0
        for name, digest in images:
            step = time.perf_counter()
            quarantine = f"{self.target}/quarantine/{name}"
            self._tool(
                [*self.skopeo, f"docker://{self.hub}/library/{name}@{digest}", f"docker://{quarantine}:{TAG}"]
            )
            self._scan(f"{quarantine}@{digest}")
            copy_and_scan += time.perf_counter() - step
            if self.key is not None:
                signatures.attach(
                    self.client, f"approved/{name}", digest, f"{self.target}/approved/{name}", self.key
                )
            self._tool(
                [
                    *self.skopeo,
                    f"docker://{quarantine}@{digest}",
                    f"docker://{self.target}/approved/{name}:{TAG}",
                ]
            )
        return time.perf_counter() - start, c.cpu_now() - cpu, copy_and_scan

    def _scan(self, ref: str) -> None:
        with tempfile.TemporaryDirectory(dir=self.root) as work:
            report = Path(work) / "report.json"
            self._tool(
                [TRIVY, "image", "--cache-dir", str(self.cache), *TRIVY_FLAGS, "--output", str(report), ref],
                env={**os.environ},
                cwd=work,
            )
            if json.loads(report.read_text()).get("SchemaVersion") != 2:
                raise SystemExit(f"trivy's report for {ref} is not schema 2")

    def _tool(self, argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        done = subprocess.run(
            argv,
            env=env or self.env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv[:3])} … failed: {done.stderr.decode()[-2000:]}")


def check_approved(target, images: list[tuple[str, str]]) -> None:
    """Every image must be in approved/ under its tag with its upstream digest."""
    with c.harness_session(target) as session:
        for name, digest in images:
            resp = session.head(
                f"{target.url}/v2/approved/{name}/manifests/{TAG}",
                headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
                timeout=c.HTTP_TIMEOUT,
            )
            if resp.headers.get("Docker-Content-Digest") != digest:
                raise SystemExit(
                    f"approved/{name}:{TAG} is {resp.status_code} "
                    f"{resp.headers.get('Docker-Content-Digest')}, expected {digest}"
                )


def main() -> int:
    p = c.parser(__doc__.split("\n\n")[0])
    args = p.parse_args()
    count = 10 if args.small else 200
    rounds = args.repeat or (1 if args.small else 2)
    print(f"full_run: {count} images, distinct digests, one repository and tag each; {rounds} round(s)")
    print(f"machine: {c.machine()}")

    variants = ("plain loop", "plain loop + signing", "syncer run --jobs 1", "syncer run --jobs 4")
    times: dict[str, list[float]] = {v: [] for v in variants}
    copy_and_scan: list[float] = []  # the plain loop's copy and scan steps alone
    cpus: dict[str, list[float]] = {v: [] for v in variants}
    with c.Workspace("full", keep=args.keep) as ws:
        hub = ws.registry("hub")
        images = [
            (name_of(i), c.upload(hub, f"library/{name_of(i)}", c.small_image(name_of(i)), [TAG]))
            for i in range(count)
        ]
        for n in range(rounds):
            for variant in variants:
                work = ws.root / f"round{n}-{variant.replace(' ', '_').replace('+', 'and')}"
                work.mkdir()
                target = ws.registry(f"{work.name}/target")
                db = ws.trivy_db(f"{work.name}/trivy-cache")
                if variant.startswith("plain"):
                    key = None
                    if "signing" in variant:
                        pair = cosign.generate_keypair(c.PASSPHRASE.encode())
                        key = cosign.load_private_key(pair.private_pem, c.PASSPHRASE.encode())
                    seconds, cpu, steps = PlainLoop(work, hub.host, target.host, db.cache_dir, key).run(
                        images
                    )
                    if key is None:
                        copy_and_scan.append(steps)
                else:
                    setup = c.write_catalog(
                        work,
                        hub=hub,
                        target_host=target.host,
                        image_files=catalog_files(count),
                        trivy_cache=db.cache_dir,
                    )
                    jobs = variant.rsplit(" ", 1)[1]
                    result = c.require_ok(variant, setup.syncer("run", "--jobs", jobs))
                    seconds, cpu = result.seconds, result.cpu_seconds
                    if c.states(setup).get("promoted") != count:
                        raise SystemExit(f"{variant}: not all promoted: {c.states_text(setup)}")
                check_approved(target, images)
                times[variant].append(seconds)
                cpus[variant].append(cpu)
                print(
                    f"  round {n + 1}: {variant:<24} {seconds:7.1f} s "
                    f"({seconds / count * 1000:.0f} ms per image), CPU {cpu:.1f} s",
                    flush=True,
                )
                ws.stop(target)

    spreads = {v: c.Spread(tuple(t)) for v, t in times.items()}
    plain, signed = spreads["plain loop"], spreads["plain loop + signing"]
    one, four = spreads["syncer run --jobs 1"], spreads["syncer run --jobs 4"]
    c.heading(f"first full run over {count} images")
    for v in variants:
        c.line(v, spreads[v].text(digits=1))
    # CPU time suffers less than wall time from whatever else the machine is running.
    cpu_spreads = {v: c.Spread(tuple(t)) for v, t in cpus.items()}
    for v in variants:
        c.line(f"{v}: CPU", cpu_spreads[v].text(digits=1))
    c.line(
        "--jobs 1 CPU overhead vs plain loop",
        _overhead(cpu_spreads["syncer run --jobs 1"], cpu_spreads["plain loop"]),
    )
    c.line(
        "--jobs 1 CPU overhead vs plain loop + signing",
        _overhead(cpu_spreads["syncer run --jobs 1"], cpu_spreads["plain loop + signing"]),
    )
    c.line("--jobs 1 overhead vs plain loop", _overhead(one, plain))
    c.line("--jobs 1 overhead vs plain loop + signing", _overhead(one, signed))
    # The loop in its barest reading: copy and scan only, neither promoting nor
    # signing, i.e. doing less than syncer must. Timed inside the plain loop's own runs.
    bare = c.Spread(tuple(copy_and_scan))
    c.line("copy + scan only (inside the plain loop)", bare.text(digits=1))
    c.line("--jobs 1 overhead vs copy + scan only", _overhead(one, bare))
    c.line("--jobs 4 speed-up vs plain loop", c.ratio(plain, four))
    c.line("--jobs 4 speed-up vs plain loop + signing", c.ratio(signed, four))
    c.heading("goals")
    c.line(
        "--jobs 1 within 15% of the plain loop",
        f"{_overhead(one, plain)}  {'met' if one.median <= 1.15 * plain.median else 'NOT MET'}",
    )
    c.line(
        "--jobs 4 faster than the plain loop",
        f"{c.ratio(plain, four)}  {'met' if four.median < plain.median else 'NOT MET'}",
    )
    return 0


def _overhead(ours: c.Spread, base: c.Spread) -> str:
    return f"{(ours.median / base.median - 1) * 100:+.1f}%"


if __name__ == "__main__":
    sys.exit(main())
