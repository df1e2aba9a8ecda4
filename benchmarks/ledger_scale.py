"""Issue 16: the audit trail's bookkeeping at 1,000, 10,000 and 50,000 tracked tags.

For each size a ledger of promoted tags is generated in the record format main wrote before
issue 16 (benchmarks/ledger_records.py: findings inline, 7.2 KB a record on average; the
issue measured 7.3 KB), committed in a git repository with the catalog, and each code measured
does the following on its own copy:

* **first run**: ``syncer run --commit`` over the generated trail (records, no pages). The
  code of issue 16 migrates the ledger here (once); for the old code it is a no-op.
* **report, every page missing**: the pages deleted (but run pages), then ``syncer report
  --commit``: a full render in the code's own layout (which the old code does on every
  report), committing nothing since the pages come back the same.
* **no-op run**: ``syncer run --commit`` with nothing new upstream (``--repeat`` times).
* **plan**: ``syncer plan``.
* **report**: ``syncer report --commit`` with nothing changed.
* **report, one tag changed**: one record gets an event appended and committed, as a merged
  commit of another run (a shard, a co-signer) would; then ``syncer report --commit``.
* **database update**: a Trivy database one day newer in which one package gets a new
  advisory, then ``syncer run --commit`` (once: the next update would find nothing new).

Upstream is a real registry (tests.harness.registry) whose storage is written directly
(benchmarks/registry_storage.py), answering tag lists and HEADs for every tag; the trusted
registry's quarantine holds the images, which Trivy scans on the database update. Repositories
hold ``--tags-per-repo`` tags (100) ``1.0.0`` … ``1.99.0``. There are 9 distinct images:
eight shared round-robin by every repository's tags (20 findings each), and one under three
tags of the first repository, the only one with the package the new advisory names. So the
database update scans 9 images (Trivy's share stays a few seconds at any size) and changes the
findings of 3 tags: what the figures show beyond that is bookkeeping.

Each figure is the command's wall time, CPU seconds (it and its children, Trivy included),
peak memory, the files it wrote under reports/ (inode or mtime changed), what it committed
(the reports repository's diff against the commit before the command, including what the
command left uncommitted, which the benchmark then commits), and the largest page (.md).

    .venv/bin/python benchmarks/ledger_scale.py [--small] [--sizes 1000,10000,50000] [--repeat N]
                                                [--code DIR] [--baseline-sizes 1000,10000]
                                                [--skip [CODE:]MEASUREMENT[@SIZE]] [--keep]

``--code DIR`` also measures the syncer in DIR (e.g. ``git worktree add /tmp/base 48582ff``)
as the baseline, at ``--baseline-sizes`` only: at 50,000 tags its database update alone would
take over an hour (the issue's 50,000-tag figures are quoted instead). ``--skip`` leaves out
a measurement (first-run, full-report, noop, plan, report, report-one, db-update) of one code
(new, baseline) and/or size, e.g. ``--skip baseline:db-update@10000``; ``--skip new:`` runs
the baseline alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c
from ledger_records import BenchImage, PromotedTag, Scan, advisories, record_text
from noop_discovery import catalog_files, repo_name  # 1.N.0 tags of bench-NNN, ten entries a file
from registry_storage import Storage

from syncer.demo.trivydb import Advisory, TrivyDB
from syncer.tools import trivy

COMMON_IMAGES = 8  # shared round-robin by every repository's tags
FINDINGS = 20  # per image
HOT_TAGS = ("1.0.0", "1.1.0", "1.2.0")  # of the first repository: the image the new advisory hits
HOT_PACKAGE = ("hotpkg", "1.0.0-r0", "hotpkg")
NEW_ADVISORY = Advisory(
    "CVE-2026-0001",
    "alpine 3.20",
    "hotpkg",
    "LOW",  # the policy allows it: the decision stays, the findings change
    "1.0.1-r0",
    title="hotpkg: a new advisory in the newer database",
)
# The database of every record's last scan; each record was scanned against the four before
# it too (promoted after the first, then a "scanned" event per update): 7.3 KB a record.
DB_LAST = datetime(2025, 3, 1, tzinfo=UTC)
EARLIER_SCANS = 4
MEASUREMENTS = {
    "first-run": "first run (the new code migrates)",
    "full-report": "report, every page missing",
    "noop": "no-op run",
    "plan": "plan",
    "report": "report, nothing changed",
    "report-one": "report, one tag changed",
    "db-update": "database update, one new finding",
}
CODES = ("new", "baseline")
# Issue 16's measurements of the old code at 50,000 tags (the baseline is not run there).
ISSUE_50K = {
    "noop": "209 s, 2.4 GB",
    "plan": "184 s, 1.3 GB",
    "report": "207 s, 1.6 GB",
    "db-update": "not measured (859 s, 742 CPU-s, 2.52 GB at 10,000)",
}
GOALS_50K = {  # issue 16's goals at 50,000 tags: (seconds, MB) or None
    "noop": (10.0, 300.0),
    "report-one": (5.0, None),
    "db-update": (60.0, 500.0),
}
KB = 1000
GIT_ID = ["-c", "user.name=ledger-scale", "-c", "user.email=ledger-scale@example.invalid"]


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def tag_name(i: int) -> str:
    return f"1.{i}.0"


# --- the world of one size ----------------------------------------------------------------------


@dataclass
class World:
    """Upstream and trusted registries of one size, and the tags' images."""

    size: int
    repos: int
    per_repo: int
    hub: c.Registry
    target: c.Registry
    common: list[BenchImage]
    hot: BenchImage

    def image_of(self, repo: int, tag: int) -> BenchImage:
        if repo == 0 and tag_name(tag) in HOT_TAGS:
            return self.hot
        return self.common[(repo + tag) % COMMON_IMAGES]


def build_world(ws: c.Workspace, size: int, per_repo: int) -> World:
    if size % per_repo:
        raise SystemExit(f"--sizes: {size} is not a multiple of --tags-per-repo {per_repo}")
    hub, target = ws.registry(f"hub-{size}"), ws.registry(f"target-{size}")
    world = World(
        size,
        size // per_repo,
        per_repo,
        hub,
        target,
        [BenchImage.build(k, FINDINGS) for k in range(COMMON_IMAGES)],
        BenchImage.build(99, FINDINGS, extra=[HOT_PACKAGE]),
    )
    upstream, trusted = Storage(hub.storage_dir), Storage(target.storage_dir)
    for r in range(world.repos):
        used = {id(world.image_of(r, i)): world.image_of(r, i) for i in range(per_repo)}
        for image in used.values():
            upstream.image(f"library/{repo_name(r)}", image.image)
            trusted.image(f"quarantine/{repo_name(r)}", image.image)
        for i in range(per_repo):
            upstream.tag(f"library/{repo_name(r)}", tag_name(i), world.image_of(r, i).image.digest)
    return world


def write_ledger(world: World, reports: Path, scanner: str) -> tuple[int, int]:
    """Every tag's record in format 1; (files, bytes)."""
    known = advisories(FINDINGS)
    scans = {id(i): i.scan(known) for i in (*world.common, world.hot)}
    dbs = [DB_LAST - timedelta(days=EARLIER_SCANS - k) for k in range(EARLIER_SCANS + 1)]
    total = 0
    for r in range(world.repos):
        name = repo_name(r)
        directory = reports / "records" / name
        directory.mkdir(parents=True, exist_ok=True)
        seen: set[str] = set()
        for i in range(world.per_repo):
            image = world.image_of(r, i)
            start = dbs[0] + timedelta(hours=6, seconds=i)
            text = record_text(
                PromotedTag(
                    name=name,
                    tag=tag_name(i),
                    upstream=f"docker.io/library/{name}",
                    image=scans[id(image)],
                    scanner=scanner,
                    approved=f"{world.target.host}/approved/{name}",
                    signer="ci",
                    discovered_at=iso(start),
                    mirrored_at=iso(start + timedelta(seconds=1)),
                    promoted_at=iso(start + timedelta(seconds=3)),
                    scans=tuple(
                        Scan(
                            iso(start + timedelta(seconds=2) if k == 0 else db + timedelta(hours=7)), iso(db)
                        )
                        for k, db in enumerate(dbs)
                    ),
                    from_quarantine=image.image.digest in seen,
                )
            )
            seen.add(image.image.digest)
            (directory / f"{tag_name(i)}.yaml").write_text(text)
            total += len(text.encode())
    return world.size, total


# --- one code's trail ----------------------------------------------------------------------------


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *GIT_ID, *args], cwd=repo, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} in {repo} failed: {done.stderr.strip()}")
    return done.stdout


@dataclass(frozen=True)
class Committed:
    files: int
    added: int  # lines
    deleted: int
    bytes: int  # of the changed files' new content


def commit_everything(repo: Path, since: str, message: str) -> Committed:
    """What changed under reports/ since commit ``since``, committed by the command or left
    by it (then committed here, so the next command starts clean)."""
    git(repo, "add", "--all", "--", "reports")
    numstat = git(repo, "diff", "--cached", "--numstat", "--no-renames", since, "--", "reports").splitlines()
    added = sum(int(a) for a, _, _ in (line.split("\t", 2) for line in numstat) if a != "-")
    deleted = sum(int(d) for _, d, _ in (line.split("\t", 2) for line in numstat) if d != "-")
    raw = git(repo, "diff", "--cached", "--raw", "--no-renames", "--no-abbrev", since, "--", "reports")
    shas = [fields[3] for fields in (line.split() for line in raw.splitlines()) if set(fields[3]) != {"0"}]
    sizes = subprocess.run(
        ["git", "cat-file", "--batch-check=%(objectsize)"],
        cwd=repo,
        input="\n".join(shas) + "\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if git(repo, "status", "--porcelain", "--", "reports").strip():
        git(repo, "commit", "--quiet", "--no-verify", "-m", message)
    return Committed(len(numstat), added, deleted, sum(int(s) for s in sizes if s.isdigit()))


def snapshot(reports: Path) -> dict[str, tuple[int, int, int]]:
    out = {}
    for directory, _, files in os.walk(reports):
        for name in files:
            st = os.stat(os.path.join(directory, name))
            out[os.path.join(directory, name)] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


@dataclass(frozen=True)
class Once:
    timed: c.Timed
    written: int
    committed: Committed
    largest_page: tuple[int, str]


@dataclass
class Figures:
    runs: list[Once] = field(default_factory=list)

    def spread(self, pick: Callable[[c.Timed], float]) -> c.Spread:
        return c.Spread(tuple(pick(o.timed) for o in self.runs))

    @property
    def wall(self) -> c.Spread:
        return self.spread(lambda t: t.seconds)

    @property
    def cpu(self) -> c.Spread:
        return self.spread(lambda t: t.cpu_seconds)

    @property
    def rss(self) -> c.Spread:
        return self.spread(lambda t: t.maxrss_mb)

    def text(self) -> str:
        last = self.runs[-1]
        k = last.committed
        size, page = last.largest_page
        return (
            f"{self.wall.text()}; CPU {self.cpu.text()}; peak {self.rss.text('MB', 0)}; "
            f"{last.written} files written; committed {k.files} files (+{k.added}/-{k.deleted} lines, "
            f"{k.bytes / 1e6:.2f} MB); largest page {size / KB:.0f} KB ({page})"
        )


class Trail:
    """One code's copy of the trail of one size: its repository, catalog and Trivy cache."""

    def __init__(self, ws: c.Workspace, world: World, code: str, label: str, scanner: str):
        self.world, self.code, self.label = world, code, label
        root = ws.root / f"{label}-{world.size}"
        self.db = TrivyDB(ws.root / f"trivy-{label}-{world.size}").write(
            advisories(FINDINGS), updated_at=DB_LAST
        )
        self.db.write_java()
        self.setup = c.write_catalog(
            root,
            hub=world.hub,
            target_host=world.target.host,
            image_files=catalog_files(world.repos),
            trivy_cache=self.db.cache_dir,
        )
        self.records, self.record_bytes = write_ledger(world, self.setup.reports, scanner)
        (root / ".gitignore").write_text("/ci.key\n")
        git(root, "init", "--quiet", "--initial-branch=main")
        git(root, "add", "--all")
        git(root, "commit", "--quiet", "-m", "the trail in format 1 (generated)")
        self.root = root
        self.changed = 0

    def env(self) -> dict[str, str]:
        return {**self.setup.env(), "PYTHONPATH": self.code}

    def measure(self, what: str, argv: list[str], check: Callable[[c.Timed], None] | None = None) -> Once:
        reports = self.setup.reports
        head = git(self.root, "rev-parse", "HEAD").strip()
        before = snapshot(reports)
        result = c.require_ok(f"{self.label}: {what}", c.timed(argv, env=self.env(), cwd=self.root))
        if check:
            check(result)
        after = snapshot(reports)
        committed = commit_everything(self.root, head, f"after {what}")
        pages = [(st[2], os.path.relpath(p, reports)) for p, st in after.items() if p.endswith(".md")]
        return Once(
            result,
            sum(before.get(p) != st for p, st in after.items()),
            committed,
            max(pages, default=(0, "none")),
        )

    def remove_pages(self) -> None:
        """Every Markdown page but the run pages (which ``report`` does not render)."""
        reports = self.setup.reports
        for page in reports.rglob("*.md"):
            if page.relative_to(reports).parts[0] not in ("records", "runs"):
                page.unlink()

    def run(self) -> list[str]:
        return self.setup.argv("run", "--commit")

    def change_one_record(self) -> None:
        """An event appended to one record and committed, as another run's merged commit
        would bring: events are the last key of a record in either format."""
        r, tag = 1 % self.world.repos, tag_name(self.changed % self.world.per_repo)
        self.changed += 1
        path = self.setup.reports / "records" / repo_name(r) / f"{tag}.yaml"
        text = path.read_text()
        indent = text[text.rindex("\n", 0, text.rindex("- at: ")) + 1 : text.rindex("- at: ")]
        detail = f"signed by security (benchmark: one record changed by another run, {self.changed})"
        path.write_text(
            text + f"{indent}- at: '{iso(DB_LAST + timedelta(days=30, minutes=self.changed))}'\n"
            f"{indent}  event: signed\n{indent}  detail: '{detail}'\n"
        )
        git(self.root, "commit", "--quiet", "-am", f"another run changed {repo_name(r)}:{tag}")


def no_op(result: c.Timed) -> None:
    if "Nothing changed" not in result.stdout:
        raise SystemExit(f"the no-op run changed something:\n{result.stdout[-3000:]}")


def summary_line(result: c.Timed) -> str:
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    return lines[1] if len(lines) > 1 and lines[0].startswith("# ") else (lines[0] if lines else "")


def measure_trail(trail: Trail, skip: Callable[[str], bool], rounds: int) -> dict[str, Figures]:
    out: dict[str, Figures] = {}
    s = trail.setup

    def record(key: str, once: Once) -> None:
        out.setdefault(key, Figures()).runs.append(once)
        print(
            f"  {trail.label} {trail.world.size}: {MEASUREMENTS[key]}: {Figures([once]).text()}", flush=True
        )

    if not skip("first-run"):
        first = trail.measure("first run", trail.run())
        record("first-run", first)
        print(f"    {summary_line(first.timed)}")
    if not skip("full-report"):
        for _ in range(rounds):
            trail.remove_pages()
            record("full-report", trail.measure("report, every page missing", s.argv("report", "--commit")))
    if not skip("noop"):
        for _ in range(rounds):
            record("noop", trail.measure("no-op run", trail.run(), no_op))
    if not skip("plan"):
        argv = s.argv("plan", "--skip-db-update", "--skip-java-db-update")
        for _ in range(rounds):
            record("plan", trail.measure("plan", argv))
    if not skip("report"):
        for _ in range(rounds):
            record("report", trail.measure("report", s.argv("report", "--commit")))
    if not skip("report-one"):
        for _ in range(rounds):
            trail.change_one_record()
            record("report-one", trail.measure("report after a one-tag change", s.argv("report", "--commit")))
    if not skip("db-update"):
        trail.db.add(NEW_ADVISORY)
        done = trail.measure("database update", trail.run())
        record("db-update", done)
        print(f"    {summary_line(done.timed)}")
    return out


# --- main ----------------------------------------------------------------------------------------


def parse_skips(items: list[str]) -> Callable[[str, str, int], bool]:
    rules = []
    for item in items:
        code, _, rest = item.rpartition(":")
        what, _, size = rest.partition("@")
        if code not in ("", *CODES) or what not in ("", *MEASUREMENTS) or (size and not size.isdigit()):
            raise SystemExit(
                f"--skip {item}: want [CODE:]MEASUREMENT[@SIZE], CODE one of {', '.join(CODES)}, "
                f"MEASUREMENT one of {', '.join(MEASUREMENTS)}"
            )
        rules.append((code, what, int(size) if size else None))

    def skipped(code: str, what: str, size: int) -> bool:
        return any(
            (not c_ or c_ == code) and (not w or w == what) and (s is None or s == size) for c_, w, s in rules
        )

    return skipped


def main() -> int:
    p = c.parser(__doc__.split("\n\n")[0])
    p.add_argument(
        "--sizes", default=None, help="tracked tags (default: 1000,10000,50000; 100,200 with --small)"
    )
    p.add_argument("--tags-per-repo", type=int, default=100, metavar="N", help="default: %(default)s")
    p.add_argument("--code", metavar="DIR", help="also measure the syncer in DIR as the baseline")
    p.add_argument(
        "--baseline-sizes",
        default=None,
        help="the sizes the baseline runs at (default: 1000,10000; every size with --small)",
    )
    p.add_argument("--skip", action="append", default=[], metavar="[CODE:]MEASUREMENT[@SIZE]")
    args = p.parse_args()
    sizes = [int(x) for x in (args.sizes or ("100,200" if args.small else "1000,10000,50000")).split(",")]
    baseline_sizes = (
        {int(x) for x in args.baseline_sizes.split(",")}
        if args.baseline_sizes
        else set(sizes if args.small else (1000, 10000))
    )
    skipped = parse_skips(args.skip)
    rounds = c.repeats(args)
    codes = [("new", str(c.ROOT))] + ([("baseline", str(Path(args.code).resolve()))] if args.code else [])
    print(
        f"ledger_scale: sizes {', '.join(f'{s:,}' for s in sizes)} tracked tags, {args.tags_per_repo} "
        f"per repository; {COMMON_IMAGES + 1} distinct images; {rounds} round(s)"
    )
    print(f"machine: {c.machine()}")
    for label, code in codes:
        described = subprocess.run(
            ["git", "-C", code, "log", "-1", "--format=%h %s"], capture_output=True, text=True, check=False
        ).stdout.strip()
        print(f"{label}: {code} ({described[:100] or 'not a git checkout'})")
    scanner = trivy.scanner()
    results: dict[tuple[str, int], dict[str, Figures]] = {}
    with c.Workspace("ledger", keep=args.keep) as ws:
        for size in sizes:
            c.heading(f"{size:,} tracked tags: writing upstream and quarantine storage")
            world = build_world(ws, size, args.tags_per_repo)
            for label, code in codes:
                if (label == "baseline" and size not in baseline_sizes) or all(
                    skipped(label, what, size) for what in MEASUREMENTS
                ):
                    continue
                trail = Trail(ws, world, code, label, scanner)
                print(
                    f"  {label}: {trail.records:,} records in format 1, "
                    f"{trail.record_bytes / trail.records / KB:.2f} KB each, "
                    f"{trail.record_bytes / 1e6:.1f} MB",
                    flush=True,
                )
                results[label, size] = measure_trail(
                    trail, lambda what, label=label, size=size: skipped(label, what, size), rounds
                )
                if not args.keep:
                    shutil.rmtree(trail.root, ignore_errors=True)
            ws.stop(world.hub)
            ws.stop(world.target)
    report(results, sizes)
    return 0


def thousands(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def report(results: dict[tuple[str, int], dict[str, Figures]], sizes: list[int]) -> None:
    for size in sizes:
        c.heading(f"{size:,} tracked tags")
        for key, title in MEASUREMENTS.items():
            for label in CODES:
                figures = results.get((label, size), {}).get(key)
                if figures:
                    c.line(f"{title}, {label}", figures.text())
            if size == max(sizes) and size == 50000 and key in ISSUE_50K:
                c.line(f"{title}, before (issue 16)", ISSUE_50K[key])
    small, large = min(sizes), max(sizes)
    c.heading(f"cost per tag, and {large:,} against {small:,} per tag (goal: no higher)")
    for key, title in MEASUREMENTS.items():
        for label in CODES:
            lo, hi = results.get((label, small), {}).get(key), results.get((label, large), {}).get(key)
            per = [
                f"{size:,}: {f.wall.median / size * 1000:.2f} ms wall, {f.cpu.median / size * 1000:.2f} ms CPU"
                for size in sizes
                if (f := results.get((label, size), {}).get(key))
            ]
            if not per:
                continue
            ratio = ""
            if lo and hi and large != small:
                ratio = (
                    f"; {thousands(large)}/{thousands(small)} per tag: wall "
                    f"{hi.wall.median / large / (lo.wall.median / small):.2f}x, "
                    f"CPU {hi.cpu.median / large / (lo.cpu.median / small):.2f}x"
                )
            c.line(f"{title}, {label}", "; ".join(per) + ratio)
    new = results.get(("new", large), {})
    if not new:
        return
    c.heading(f"goals at {large:,} tags (issue 16's are for 50,000), new code")
    for key, (seconds, mb) in GOALS_50K.items():
        if key in new:
            f = new[key]
            ok = f.wall.median < seconds and (mb is None or f.rss.median < mb)
            limit = f"< {seconds:.0f} s" + (f" and < {mb:.0f} MB" if mb else "")
            c.line(
                f"{MEASUREMENTS[key]} {limit}",
                f"{f.wall.median:.2f} s, {f.rss.median:.0f} MB  {'met' if ok else 'NOT MET'}",
            )
    largest = max((o.largest_page for f in new.values() for o in f.runs), default=(0, "none"))
    c.line(
        "largest page < 500 KB",
        f"{largest[0] / KB:.0f} KB ({largest[1]})  {'met' if largest[0] < 500 * KB else 'NOT MET'}",
    )


if __name__ == "__main__":
    sys.exit(main())
