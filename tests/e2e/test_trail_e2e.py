"""The audit trail survives hostile files and unlucky runs, through the real CLI, registries,
skopeo, Trivy and a real git remote: a corrupt record fails its own tag while another is
promoted; stray files are reported and skipped; colliding names are refused by validate;
symlinks under reports/ are never written through; what a killed run or a failed push left
behind is committed and pushed by the next run; temporary files are never committed; a
stalled transfer is abandoned after --copy-timeout; shards of one CI run started in the same
second keep both run pages, which `syncer report` rebuilds from their run records."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest

from syncer.core.model import State
from tests.e2e.test_faults_e2e import CLEAN_ALPINE, _push_two, _trivy_wrapper, assert_invariants
from tests.e2e.test_gitops_e2e import publish
from tests.harness.faultproxy import FaultProxy
from tests.harness.gitrepo import git
from tests.harness.images import alpine_files, build_image
from tests.harness.world import World

pytestmark = pytest.mark.e2e


@pytest.fixture
def gworld(git_remote, registry_factory, trivy_db):
    """A world inside a clone of a real bare remote, catalog committed and pushed."""
    world = World(
        root=git_remote.clone, hub=registry_factory(), target=registry_factory(delete=True), db=trivy_db
    )
    _push_two(world)
    return publish(world, git_remote)


def _pushed_files(world) -> list[str]:
    git(world.root, "fetch", "-q", "origin")
    return git(world.root, "ls-tree", "-r", "--name-only", "origin/main", "reports").split()


# --- item 4: bad files under records/ ----------------------------------------------------


def test_a_corrupt_record_fails_its_own_tag_while_another_is_promoted(world):
    alpine, nginx = _push_two(world)
    world.run()
    corrupt = world.reports / "records" / "alpine" / "3.20.yaml"
    corrupt.write_bytes(corrupt.read_bytes()[:40])  # truncated, as a bad merge or full disk leaves it
    truncated = corrupt.read_bytes()
    (world.reports / "records" / "NOTES.txt").write_text("not a record\n")
    (world.reports / "records" / "nginx" / "1.27.3.yaml.orig").write_text("left by a merge tool\n")
    moved = world.push("library/nginx:1.27.3", build_image(alpine_files(CLEAN_ALPINE[1:])))
    assert moved != nginx

    proc = world.run(expect=1)

    assert "Traceback" not in proc.stderr
    assert "alpine" in proc.stdout and "tag 3.20" in proc.stdout and "git log -p --" in proc.stdout
    assert str(corrupt) in proc.stdout
    for stray in ("NOTES.txt", "1.27.3.yaml.orig"):
        assert proc.stderr.count(stray) == 1, proc.stderr  # reported once, and skipped
    rec = world.record("nginx", "1.27.3")
    assert rec.state is State.PROMOTED and rec.promoted_digest == moved, "the other tag went on"
    assert corrupt.read_bytes() == truncated, "the corrupt record is evidence: never overwritten"
    assert world.digest_at(world.target, "approved/alpine", "3.20") == alpine

    for command in ("plan", "report"):
        other = world.syncer(command)
        assert other.returncode == 1 and "Traceback" not in other.stderr, other.stderr
        assert str(corrupt) in other.stdout + other.stderr

    corrupt.unlink()  # the remedy, as git checkout would restore it; here: start that tag afresh
    world.run()
    assert world.record("alpine", "3.20").state is State.PROMOTED


# --- item 6: colliding names, symlinks, pages that cannot be written --------------------


@pytest.mark.parametrize(
    "second, theirs",
    [
        ("app.md/x", "reports/images/app.md"),
        ("app/1.0.yaml", "reports/records/app/1.0.yaml"),
    ],
)
def test_validate_refuses_names_whose_report_paths_collide_naming_both(world, second, theirs):
    world.images(
        """
        images:
          - source: alpine
            name: app
            tags: ["1.0"]
    """,
        file="images/a.yaml",
    )
    world.images(
        f"""
        images:
          - source: nginx
            tags: ["1.27.3"]
            name: {second}
    """,
        file="images/b.yaml",
    )
    proc = world.syncer("validate")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in out, out
    assert f"images/b.yaml:4: error: name '{second}' collides with" in out
    assert theirs in out and "images/a.yaml:3" in out
    assert world.syncer("run").returncode == 2, "a run refuses the catalog as validate does"


def test_validate_refuses_tags_that_differ_only_in_case(world):
    world.images("""
        images:
          - source: alpine
            tags: ["v1.0", "V1.0"]
    """)
    proc = world.syncer("validate")
    assert proc.returncode == 2 and "differ only in case" in proc.stdout, proc.stdout


def test_a_symlink_under_reports_is_never_written_through_and_the_records_are_committed(gworld):
    world = gworld
    outside = world.root.parent / "outside"
    outside.mkdir()
    (world.reports / "images").symlink_to(outside, target_is_directory=True)
    git(world.root, "add", "reports/images")
    git(world.root, "commit", "-q", "-m", "a hostile pull request")
    git(world.root, "push", "-q", "origin", "main")

    proc = world.syncer("run", "--commit", "--push")

    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "reports/images is a symlink" in proc.stderr
    assert list(outside.iterdir()) == [], "nothing written outside reports/"
    pushed = _pushed_files(world)
    assert {
        "reports/records/alpine/3.20.yaml",
        "reports/records/nginx/1.27.3.yaml",
        "reports/README.md",
    } <= set(pushed), "records (and the pages that could be) committed"
    assert git(world.root, "status", "--porcelain") == ""


def test_a_symlinked_record_directory_fails_its_tags_and_is_not_followed(world):
    _push_two(world)
    outside = world.root / "outside"
    outside.mkdir()
    (world.reports / "records").mkdir()
    (world.reports / "records" / "nginx").symlink_to(outside, target_is_directory=True)

    proc = world.run(expect=1)

    assert "Traceback" not in proc.stderr
    assert list(outside.iterdir()) == []
    assert world.record("alpine", "3.20").state is State.PROMOTED
    assert "records/nginx" in proc.stdout + proc.stderr


# --- item 9: nothing finished is lost ----------------------------------------------------


def test_a_run_stopped_by_sigterm_is_committed_and_pushed_by_the_next_run(gworld):
    world = gworld
    # nginx's scan (the second tag with --jobs 1) gets the run SIGTERMed, as a cancelled CI
    # job is; the scan itself goes on, so both tags finish and are recorded, uncommitted.
    world.env["SYNCER_TRIVY"] = str(
        _trivy_wrapper(
            world,
            "trivy-term",
            """
  case "$ref" in *nginx*) kill -TERM "$PPID";; esac""",
        )
    )
    before = world.remote.head()
    proc = world.syncer("run", "--commit", "--push", "--jobs", "1")
    assert proc.returncode == 130, proc.stderr
    assert "interrupted" in proc.stderr and "Traceback" not in proc.stderr
    assert world.remote.head() == before
    assert world.record("alpine", "3.20").state is State.PROMOTED
    assert world.record("nginx", "1.27.3").state is State.PROMOTED, "the tag in progress finished"

    del world.env["SYNCER_TRIVY"]
    proc = world.run("--commit", "--push")
    assert "Nothing changed." in proc.stdout
    assert "an earlier run left uncommitted" in proc.stdout and "and pushed" in proc.stdout
    assert world.remote.head() == git(world.root, "rev-parse", "HEAD").strip()
    pushed = _pushed_files(world)
    assert {
        "reports/records/alpine/3.20.yaml",
        "reports/records/nginx/1.27.3.yaml",
        "reports/README.md",
        "reports/images/alpine.md",
        "reports/images/nginx.md",
    } <= set(pushed)
    assert git(world.root, "log", "-1", "--format=%s").strip() == "sync: 2 promoted"
    assert git(world.root, "status", "--porcelain") == ""


def test_a_failed_push_is_pushed_by_the_next_run(gworld):
    world = gworld
    hook = world.remote.refuse_pushes("the remote is down for maintenance")
    before = world.remote.head()
    proc = world.syncer("run", "--commit", "--push")
    assert proc.returncode == 1 and "maintenance" in proc.stderr, proc.stderr
    assert world.remote.head() == before
    hook.unlink()

    proc = world.run("--commit", "--push")

    assert "Nothing changed." in proc.stdout and "1 commit an earlier run left unpushed" in proc.stdout
    assert world.remote.head() == git(world.root, "rev-parse", "HEAD").strip() != before
    assert "reports/records/alpine/3.20.yaml" in _pushed_files(world)
    head = world.remote.head()
    world.run("--commit", "--push")
    assert world.remote.head() == head, "nothing left: nothing pushed"


def test_temporary_files_of_an_interrupted_write_are_removed_and_never_committed(gworld):
    world = gworld
    leftovers = [
        world.reports / "records" / "alpine" / ".3.20.yaml.x7k2m9qa.tmp",
        world.reports / ".README.md.q0w9e8r7.tmp",
    ]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("half a fi")

    proc = world.run("--commit", "--push")

    for path in leftovers:
        assert not path.exists() and f"removed {path}" in proc.stderr
    assert not [f for f in _pushed_files(world) if f.endswith(".tmp")]
    assert git(world.root, "status", "--porcelain") == ""


def test_a_stalled_blob_is_abandoned_after_the_copy_timeout_and_the_other_image_promoted(world):
    _alpine, nginx = _push_two(world)
    with FaultProxy(world.hub.url) as proxy:
        world.route(world.hub.host, proxy.host)
        # One blob of alpine's answers half its body and then nothing, for far longer than
        # the timeout; every other request (nginx's copy included) is served.
        proxy.inject(path=r"^/v2/library/alpine/blobs/sha256:", method="GET", stall=120)
        started = time.monotonic()
        proc = world.run("--copy-timeout", "5", expect=1)
        elapsed = time.monotonic() - started

    assert proxy.injected == 1
    assert elapsed < 60, f"the run took {elapsed:.0f}s"
    assert "did not finish within 5s" in proc.stdout and "--copy-timeout" in proc.stdout
    assert world.record("alpine", "3.20").state is State.FAILED
    assert world.record("nginx", "1.27.3").state is State.PROMOTED
    assert assert_invariants(world) == {("nginx", "1.27.3"): nginx}

    world.route(proxy.host, world.hub.host)
    world.run()  # the next run takes it up again
    assert world.record("alpine", "3.20").state is State.PROMOTED


# --- run pages per run and shard ---------------------------------------------------------


CI_RUN = {
    "GITHUB_RUN_ID": "4242",
    "GITHUB_RUN_ATTEMPT": "1",
    "GITHUB_SERVER_URL": "https://github.com",
    "GITHUB_REPOSITORY": "acme/images",
}


def _shards_in_the_same_second(world, checkouts: list) -> None:
    """`syncer run --shard K/2` in each checkout's reports/, both started together in one
    second, as sync.yml's matrix jobs start; then their changed files laid over the world's
    reports/, as the commit job's download-artifact does."""
    while time.time() % 1 > 0.2:  # at the start of a second, so that both start within it
        time.sleep(0.01)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "syncer",
                "run",
                "--catalog",
                str(world.catalog),
                "--reports",
                str(reports),
                "--shard",
                f"{k}/2",
                "--skip-db-update",
            ],
            cwd=world.root,
            env={**world.run_env(), **CI_RUN},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k, reports in enumerate(checkouts, 1)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, out + err
    for reports in checkouts:
        shutil.copytree(reports, world.reports, dirs_exist_ok=True)


def test_two_shards_started_in_the_same_second_keep_both_run_pages(world, tmp_path):
    _push_two(world)  # alpine falls in shard 2 of 2, nginx in shard 1
    checkouts = [tmp_path / f"shard-{k}" / "reports" for k in (1, 2)]
    for reports in checkouts:
        shutil.copytree(world.reports, reports)

    _shards_in_the_same_second(world, checkouts)

    pages = sorted((world.reports / "runs").rglob("*.md"))
    assert [p.name.split("-", 1)[1] for p in pages] == [
        "run4242.1-shard-1-of-2.md",
        "run4242.1-shard-2-of-2.md",
    ], pages
    assert [p.with_suffix(".yaml").is_file() for p in pages] == [True, True]
    shard_1, shard_2 = (p.read_text() for p in pages)
    assert shard_1.startswith("# Run 4242 (attempt 1), shard 1 of 2\n")
    assert "[nginx]" in shard_1 and "[alpine]" not in shard_1
    assert "[alpine]" in shard_2 and "[nginx]" not in shard_2
    assert "https://github.com/acme/images/actions/runs/4242/attempts/1" in shard_1

    # The commit job: the index and image pages from the merged records; the run pages as
    # they were, byte for byte, since each is rebuilt from its own record.
    merged = world.tree()
    proc = world.syncer("report")
    assert proc.returncode == 0, proc.stderr
    after = world.tree()
    assert "[alpine]" in after["README.md"].decode() and "[nginx]" in after["README.md"].decode()
    runs = {k: v for k, v in after.items() if k.startswith("runs/")}
    assert runs == {k: v for k, v in merged.items() if k.startswith("runs/")} and len(runs) == 4


def test_report_rebuilds_run_pages_from_their_records_and_keeps_older_ones(world):
    _push_two(world)
    world.run()
    (page,) = (world.reports / "runs").rglob("*.md")
    written = page.read_bytes()
    old = page.parent / "20250101T000000Z.md"  # a run page of a trail older than run records
    old.write_text("# Run 20250101T000000Z\n")
    page.unlink()

    proc = world.syncer("report")
    assert proc.returncode == 0 and str(page) in proc.stdout, proc.stdout + proc.stderr
    assert page.read_bytes() == written
    assert old.read_text() == "# Run 20250101T000000Z\n"

    record = page.with_suffix(".yaml")
    record.write_text(record.read_text().replace("version: 1", "version: a: b", 1))
    page.write_text("edited by hand\n")
    proc = world.syncer("report")
    assert proc.returncode == 1
    assert f"{record}:2: not valid YAML" in proc.stderr and "git history" in proc.stderr
    assert page.read_text() == "edited by hand\n", "a page whose record is unreadable is left"
