"""Shared parts of the benchmarks: a scratch workspace with real registries, fast seeding of
small images over the registry HTTP API, a catalog writer, timed subprocesses with their peak
memory, and the figures' formatting.

The registries, images and Trivy databases are the test harness's own (tests.harness.*), so a
benchmark exercises exactly the parts the end-to-end tests do. Everything listens on
127.0.0.1 and is stopped when the workspace closes.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from syncer.core import cosign  # noqa: E402
from syncer.trail.ledger import Ledger  # noqa: E402
from tests.harness.images import Image, alpine_files, build_image  # noqa: E402
from tests.harness.registry import HARNESS_AGENT, Registry, Request  # noqa: E402
from tests.harness.trivydb import TrivyDB  # noqa: E402

PASSPHRASE = "benchmark passphrase"
# Alpine content without a planted advisory: with an empty database every image is promoted,
# so a run does the whole work (mirror, scan, sign, promote) for each tag.
CLEAN_ALPINE = (("musl", "1.2.5-r0", "musl"), ("busybox", "1.36.1-r29", "busybox"))
HTTP_TIMEOUT = 30


# --- arguments and figures ----------------------------------------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--small", action="store_true", help="a smoke-check size that finishes in well under a minute"
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=None,
        metavar="N",
        help="measure each variant N times (default: 3, 1 with --small)",
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the scratch directory (registries, catalog, reports) for a look",
    )
    return p


def repeats(args: argparse.Namespace) -> int:
    return args.repeat or (1 if args.small else 3)


@dataclass(frozen=True)
class Spread:
    """Repeated measurements of one figure; the median is what ratios are taken of."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def text(self, unit: str = "s", digits: int = 2) -> str:
        med = f"{self.median:.{digits}f} {unit}"
        if len(self.values) == 1:
            return med
        return (
            f"{med} (min {min(self.values):.{digits}f}, max {max(self.values):.{digits}f}, "
            f"n={len(self.values)})"
        )


def ratio(numerator: Spread, denominator: Spread) -> str:
    return f"{numerator.median / denominator.median:.2f}x"


def machine() -> str:
    model = "unknown CPU"
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    mem_kb = next(
        (
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal:")
        ),
        0,
    )
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs ({model}), {mem_kb / 1024 / 1024:.1f} GiB RAM, "
        f"Python {platform.python_version()}, load average before start {load}"
    )


def heading(title: str) -> None:
    print(f"\n== {title}", flush=True)


def line(label: str, value: str) -> None:
    print(f"  {label:<48} {value}", flush=True)


# --- timed subprocesses -------------------------------------------------------------------------


@dataclass(frozen=True)
class Timed:
    seconds: float
    maxrss_mb: float  # peak resident set of the command or of its largest descendant
    cpu_seconds: float  # user + system time of the command and all its descendants
    returncode: int
    stdout: str
    stderr: str


# Peak memory comes from a minimal Python in between (-S -I: no site, about 11 MB) reading
# getrusage(RUSAGE_CHILDREN) once the command has exited. Measuring this process's own child
# would not do: Linux carries the parent's peak RSS across fork/vfork and exec into the
# child's ru_maxrss, so every figure would be at least the benchmark's own ~80 MB.
_RUSAGE_WRAPPER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[2:])\n"
    "with open(sys.argv[1], 'w') as out:\n"
    "    usage = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "    out.write(f'{usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}')\n"
    "sys.exit(code)\n"
)


def timed(
    argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 3600
) -> Timed:
    """Runs ``argv`` to completion: wall time, peak memory, CPU time, exit status, output."""
    with tempfile.TemporaryDirectory(prefix="syncer-bench-timed-") as tmp:
        rss_file = Path(tmp) / "maxrss"
        out_file, err_file = Path(tmp) / "stdout", Path(tmp) / "stderr"
        with out_file.open("wb") as out, err_file.open("wb") as err:
            start = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, "-S", "-I", "-c", _RUSAGE_WRAPPER, str(rss_file), *argv],
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
            seconds = time.perf_counter() - start
        maxrss_kb, cpu = rss_file.read_text().split() if rss_file.exists() else (0, 0)
        return Timed(
            seconds,
            int(maxrss_kb) / 1024,
            float(cpu),
            proc.returncode,
            out_file.read_text(errors="replace"),
            err_file.read_text(errors="replace"),
        )


def cpu_now() -> float:
    """CPU seconds of this process and its waited-for children so far (for in-process loops)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def require_ok(what: str, result: Timed) -> Timed:
    if result.returncode != 0:
        tail = "\n".join((result.stderr.splitlines() + result.stdout.splitlines())[-25:])
        raise SystemExit(f"{what} failed with exit {result.returncode}:\n{tail}")
    return result


# --- workspace ----------------------------------------------------------------------------------


class Workspace:
    """A scratch directory and the registries started in it; all stopped on exit."""

    def __init__(self, name: str, keep: bool = False):
        self.root = Path(tempfile.mkdtemp(prefix=f"syncer-bench-{name}-"))
        self.keep = keep
        self._registries: list[Registry] = []

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        for reg in self._registries:
            reg.stop()
        if self.keep:
            print(f"\nkept {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def registry(self, name: str) -> Registry:
        reg = Registry(self.root / name, delete=True)
        self._registries.append(reg)
        return reg

    def stop(self, reg: Registry) -> None:
        reg.stop()
        self._registries.remove(reg)
        shutil.rmtree(reg.workdir, ignore_errors=True)

    def trivy_db(self, name: str = "trivy-cache") -> TrivyDB:
        """A Trivy cache holding an empty database and an empty Java DB: every scan finds
        nothing, and Trivy downloads neither."""
        return TrivyDB(self.root / name, ()).write().write_java()


# --- seeding upstream ---------------------------------------------------------------------------


def small_image(label: str) -> Image:
    """A small Alpine image; ``label`` makes its digest distinct."""
    files = alpine_files(CLEAN_ALPINE)
    files["etc/bench-id"] = f"{label}\n"
    return build_image(files)


def harness_session(registry: Registry) -> requests.Session:
    session = registry.session()
    # The harness agent keeps seeding out of the access-log counts.
    session.headers["User-Agent"] = HARNESS_AGENT
    return session


def upload(registry: Registry, repository: str, image: Image, tags: Iterable[str]) -> str:
    """Pushes ``image`` over the HTTP API and puts its manifest under every tag; its digest.

    Monolithic blob uploads and one manifest PUT per tag: a second tag costs one request,
    where a skopeo push per tag would re-check every blob.
    """
    base = f"{registry.url}/v2/{repository}"
    with harness_session(registry) as session:
        for blob in (image.config, *image.layers):
            started = session.post(f"{base}/blobs/uploads/", timeout=HTTP_TIMEOUT)
            started.raise_for_status()
            location = started.headers["Location"]
            if location.startswith("/"):
                location = registry.url + location
            sep = "&" if "?" in location else "?"
            done = session.put(
                f"{location}{sep}digest={blob.digest}",
                data=blob.data,
                headers={"Content-Type": "application/octet-stream"},
                timeout=HTTP_TIMEOUT,
            )
            done.raise_for_status()
        for tag in tags:
            put = session.put(
                f"{base}/manifests/{tag}",
                data=image.manifest.data,
                headers={"Content-Type": image.manifest.media_type},
                timeout=HTTP_TIMEOUT,
            )
            put.raise_for_status()
            if put.headers.get("Docker-Content-Digest") != image.digest:
                raise SystemExit(
                    f"{registry.host}/{repository}:{tag} stored "
                    f"{put.headers.get('Docker-Content-Digest')}, not {image.digest}"
                )
    return image.digest


# --- access log ---------------------------------------------------------------------------------


def request_kinds(requests_seen: Iterable[Request]) -> Counter[str]:
    """Requests by what they cost upstream: manifest HEADs, manifest GETs (pulls on Hub), …"""
    kinds: Counter[str] = Counter()
    for r in requests_seen:
        if "/manifests/" in r.path:
            kinds[f"{r.method} manifest"] += 1
        elif r.path.endswith("/tags/list"):
            kinds[f"{r.method} tags list"] += 1
        elif "/blobs/" in r.path:
            kinds[f"{r.method} blob"] += 1
        elif r.path.rstrip("/") == "/v2":
            kinds[f"{r.method} /v2/ (auth ping)"] += 1
        else:
            kinds[f"{r.method} other"] += 1
    return kinds


def kinds_text(kinds: Counter[str]) -> str:
    order = ["HEAD manifest", "GET manifest", "GET tags list", "GET blob", "HEAD blob"]
    keys = [k for k in order if k in kinds] + sorted(k for k in kinds if k not in order)
    return ", ".join(f"{k}: {kinds[k]}" for k in keys) or "none"


# --- catalog and the syncer CLI -----------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """A catalog and reports directory wired to a hub and a target registry."""

    root: Path
    catalog: Path
    reports: Path
    key: Path
    trivy_cache: Path

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCER_", "GITHUB_"))}
        env.update(
            SYNCER_SIGNING_KEY=str(self.key),
            SYNCER_SIGNING_PASSPHRASE=PASSPHRASE,
            SYNCER_TRIVY_CACHE=str(self.trivy_cache),
        )
        return env

    def argv(self, command: str, *args: str) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "syncer",
            command,
            "--catalog",
            str(self.catalog),
            "--reports",
            str(self.reports),
            *args,
        ]
        if command == "run":
            argv += ["--skip-db-update", "--skip-java-db-update"]
        return argv

    def syncer(self, command: str, *args: str, timeout: float = 3600) -> Timed:
        return timed(self.argv(command, *args), env=self.env(), cwd=self.root, timeout=timeout)

    def reports_snapshot(self) -> dict[str, bytes]:
        return {
            str(p.relative_to(self.reports)): p.read_bytes()
            for p in sorted(self.reports.rglob("*"))
            if p.is_file()
        }


def team_files(count: int, per_file: int, entry: Callable[[int, str], str]) -> dict[str, str]:
    """Catalog image files ``team-NNN.yaml`` of ``per_file`` entries each, ``count`` in all;
    ``entry(i, team)`` is the YAML list item of entry ``i`` in the file of ``team``."""
    files = {}
    for start in range(0, count, per_file):
        team = f"team-{start // per_file:03d}"
        files[f"{team}.yaml"] = "images:\n" + "".join(
            entry(i, team) for i in range(start, min(start + per_file, count))
        )
    return files


def write_catalog(
    root: Path, *, hub: Registry | None, target_host: str, image_files: dict[str, str], trivy_cache: Path
) -> Setup:
    """settings, a default policy (zero critical/high, signer ci), ci's key pair, and
    ``image_files`` (relative path under images/ -> YAML text)."""
    catalog = root / "catalog"
    for sub in ("images", "policies", "signers"):
        (catalog / sub).mkdir(parents=True, exist_ok=True)
    sources = f"sources:\n  docker.io:\n    endpoint: {hub.host}\n    tls_verify: false\n" if hub else ""
    (catalog / "settings.yaml").write_text(
        textwrap.dedent(f"""\
        target:
          registry: {target_host}
          quarantine: quarantine
          approved: approved
          tls_verify: false
        """)
        + sources
        + textwrap.dedent("""\
        signing:
          signer: ci
          key_env: SYNCER_SIGNING_KEY
          passphrase_env: SYNCER_SIGNING_PASSPHRASE
        defaults:
          policy: default
        content_admins: ["@acme/security"]
        """)
    )
    (catalog / "policies" / "default.yaml").write_text(
        textwrap.dedent("""\
        vulnerabilities:
          max: {critical: 0, high: 0}
          ignore_unfixed: true
        signers: [ci]
        """)
    )
    pair = cosign.generate_keypair(PASSPHRASE.encode())
    key = root / "ci.key"
    key.write_bytes(pair.private_pem)
    key.chmod(0o600)
    (catalog / "signers" / "ci.pub").write_bytes(pair.public_pem)
    for rel, text in image_files.items():
        (catalog / "images" / rel).write_text(text)
    reports = root / "reports"
    reports.mkdir(exist_ok=True)
    return Setup(root=root, catalog=catalog, reports=reports, key=key, trivy_cache=trivy_cache)


def profile(setup: Setup, out: Path, command: str, *args: str, top: int = 25) -> None:
    """Runs one syncer command under cProfile; saves the stats and prints the heaviest calls."""
    import pstats

    argv = setup.argv(command, *args)
    argv[1:1] = ["-m", "cProfile", "-o", str(out)]
    result = require_ok(f"profiled syncer {command}", timed(argv, env=setup.env(), cwd=setup.root))
    heading(f"cProfile of syncer {command} ({result.seconds:.2f} s with profiling), saved to {out}")
    pstats.Stats(str(out)).sort_stats("cumulative").print_stats(top)


def states(setup: Setup) -> Counter[str]:
    """Records by state, read with the ledger itself."""
    return Counter(r.state.value for r in Ledger(str(setup.reports)).all())


def states_text(setup: Setup) -> str:
    return ", ".join(f"{n} {state}" for state, n in sorted(states(setup).items())) or "no records"


def skopeo_policy(root: Path) -> Path:
    """An accept-anything policy.json, the one syncer/tools/skopeo.py hands skopeo too."""
    path = root / "skopeo-policy.json"
    path.write_text('{"default": [{"type": "insecureAcceptAnything"}]}\n')
    return path
