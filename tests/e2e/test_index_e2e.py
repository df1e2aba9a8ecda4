"""Runs and plans decide from the ledger's index (issue 16), through the real CLI, registries,
skopeo, Trivy and git: a no-op reads no record, a database update that finds what was found
before commits only the index, and an exception that no longer applies re-decides its tag."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import yaml

from syncer.core.model import State
from syncer.trail.ledger import content_key, index_bytes, read_index
from tests.e2e.test_faults_e2e import CLEAN_ALPINE, _push_two
from tests.e2e.test_gitops_e2e import publish
from tests.e2e.test_pipeline_e2e import ADVISORIES, _nginx_world
from tests.harness.gitrepo import git
from tests.harness.images import alpine_files, build_image
from tests.harness.world import World

pytestmark = pytest.mark.e2e

CORRUPT = b"format: 2\nname: [this is no record\n"


def forge_record(world: World, name: str, tag: str) -> bytes:
    """Replaces the record of ``name:tag`` by bytes no reader can parse, and makes its index
    entry agree with them (the content hash the index checks): the index stays consistent, so
    only code that reads the record itself meets the corruption. Returns the bytes."""
    (world.reports / "records" / name / f"{tag}.yaml").write_bytes(CORRUPT)
    path = world.reports / "ledger.json"
    entries, problems = read_index(path.read_bytes(), path)
    assert not problems
    entries[(name, tag)] = replace(entries[(name, tag)], record_key=content_key(CORRUPT))
    path.write_bytes(index_bytes(list(entries.values())))
    return CORRUPT


def test_a_noop_run_and_plan_decide_from_the_index_and_read_a_record_only_when_its_decision_may_change(world):
    _push_two(world)
    world.run()
    forge_record(world, "alpine", "3.20")
    before = world.tree()

    # Nothing to do: neither reads alpine's record (reading it would fail the tag).
    proc = world.run()
    assert "Nothing changed." in proc.stdout and "corrupt" not in proc.stdout + proc.stderr
    assert world.tree() == before
    plan = world.syncer("plan", "--json")
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["errors"] == []

    # An exception for alpine changes its decision's inputs: now both read the record, and
    # meet what was there all along.
    world.write(
        "exceptions/alpine.yaml",
        """
        exceptions:
          - vulnerability: CVE-2099-0001
            images: [alpine]
            expires: 2999-01-01
            reason: "not reachable"
    """,
    )
    plan = world.syncer("plan", "--json")
    assert plan.returncode == 1
    assert [(e["name"], "corrupt record" in e["error"]) for e in json.loads(plan.stdout)["errors"]] == [
        ("alpine", True)
    ]
    proc = world.run("--json", expect=1)
    tags = {t["name"]: t for t in json.loads(proc.stdout)["tags"]}
    assert tags["alpine"]["failed"] and "corrupt record" in tags["alpine"]["message"]
    assert not tags["nginx"]["failed"] and not tags["nginx"]["changed"]
    assert (world.reports / "records" / "alpine" / "3.20.yaml").read_bytes() == CORRUPT  # left as it was


@pytest.fixture
def gworld(git_remote, registry_factory, trivy_db):
    world = World(
        root=git_remote.clone, hub=registry_factory(), target=registry_factory(delete=True), db=trivy_db
    )
    _nginx_world(world)  # held: a critical finding
    _push_two_more(world)
    return publish(world, git_remote)


def _push_two_more(world: World) -> None:
    """Alpine, clean, next to the held nginx, so the database update meets both kinds."""
    world.push("library/alpine:3.20", build_image(alpine_files(CLEAN_ALPINE)))
    world.images("""
        images:
          - source: alpine
            tags: ["3.20"]
          - source: nginx
            tags: ["1.27.3"]
    """)


def test_a_database_update_that_finds_the_same_results_commits_only_the_index(gworld):
    world = gworld
    world.run("--commit")
    records = {t: world.record(n, t) for n, t in (("alpine", "3.20"), ("nginx", "1.27.3"))}
    assert records["1.27.3"].state is State.HELD and records["3.20"].state is State.PROMOTED
    head = git(world.root, "rev-parse", "HEAD").strip()

    world.db.write(ADVISORIES)  # one day newer, the same advisories
    proc = world.run("--commit", "--json")

    assert not [t for t in json.loads(proc.stdout)["tags"] if t["changed"] or t["failed"]]
    assert git(world.root, "rev-parse", "HEAD~1").strip() == head
    assert git(world.root, "show", "--name-only", "--format=", "HEAD").split() == ["reports/ledger.json"]
    assert git(world.root, "status", "--porcelain").strip() == ""
    for tag, before in records.items():
        after = world.record(before.name, tag)
        assert after.events == before.events and after.state is before.state  # no "scanned" event
        # The last confirmation's database is the index's (the record keeps the first).
        assert after.scan.db_updated_at > before.scan.db_updated_at
    index = json.loads((world.reports / "ledger.json").read_text())
    assert {e["scan"]["db_updated_at"] for e in index["tags"]} == {after.scan.db_updated_at}

    # And the next run has nothing left to re-scan.
    assert json.loads(world.syncer("plan", "--json").stdout)["tags"][0]["rescan"] is False


def test_an_exception_that_no_longer_applies_re_decides_its_promoted_tag(world):
    _nginx_world(world)
    exception = """
        exceptions:
          - vulnerability: CVE-2099-1001
            images: [nginx]
            expires: {expires}
            reason: "not reachable"
    """
    world.write("exceptions/nginx.yaml", exception.format(expires="2999-01-31"))
    world.run()
    assert world.record("nginx", "1.27.3").state is State.PROMOTED

    world.write("exceptions/nginx.yaml", exception.format(expires="2020-01-31"))
    predicted = json.loads(world.syncer("plan", "--json").stdout)["predicted"]
    assert [(p["name"], p["state"], p["next"]) for p in predicted] == [("nginx", "promoted", "flagged")]
    world.run()
    rec = world.record("nginx", "1.27.3")
    assert rec.state is State.FLAGGED
    assert any("expired on 2020-01-31" in r for r in rec.reasons), rec.reasons


def to_format1(world: World) -> None:
    """Rewrites the trail as syncer wrote it before ledger format 2 (commit 48582ff): each
    record with its scan inline (the stored result's content under the record's scan times),
    no ``format`` key, no scans/ and no ledger.json."""
    for path in sorted((world.reports / "records").rglob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        doc.pop("format")
        ref = doc["scan"]
        if ref is not None:
            result_path = world.reports / "scans" / doc["name"] / (ref["digest"].replace(":", "-") + ".yaml")
            result = yaml.safe_load(result_path.read_text())
            result.pop("found_with", None)
            times = {k: ref[k] for k in ("digest", "scanner", "db_updated_at", "scanned_at")}
            doc["scan"] = {**times, **{k: v for k, v in result.items() if k != "digest"}}
        path.write_text(yaml.safe_dump(doc, sort_keys=False, width=100_000))
    shutil.rmtree(world.reports / "scans")
    (world.reports / "ledger.json").unlink()


def test_the_first_run_after_the_upgrade_migrates_the_trail_in_a_commit_of_its_own(gworld):
    world = gworld
    world.run("--commit")
    tags = [("alpine", "3.20"), ("nginx", "1.27.3")]
    before = {key: world.record(*key) for key in tags}
    pages = {p: b for p, b in world.tree().items() if not p.startswith(("records/", "scans/", "ledger.json"))}
    to_format1(world)
    git(world.root, "commit", "-q", "-am", "the trail as syncer wrote it before format 2")
    assert not (world.reports / "ledger.json").exists()
    assert {key: world.record(*key) for key in tags} == before  # format 1 is read as it is

    proc = world.run("--commit")

    assert "migrated 2 records to format 2" in proc.stderr
    subjects = git(world.root, "log", "--format=%s", "-3").splitlines()
    assert subjects[1:] == [
        "ledger: migrate 2 records to format 2",
        "the trail as syncer wrote it before format 2",
    ]
    migration = git(world.root, "show", "--name-only", "--format=", "HEAD~1").split()
    assert "reports/ledger.json" in migration
    assert {f for f in migration if f.startswith("reports/records/")} == {
        "reports/records/alpine/3.20.yaml",
        "reports/records/nginx/1.27.3.yaml",
    }
    assert any(f.startswith("reports/scans/nginx/sha256-") for f in migration)
    # The run after it decided every tag as before, so it changed only the index.
    assert git(world.root, "show", "--name-only", "--format=", "HEAD").split() == ["reports/ledger.json"]
    assert {key: world.record(*key) for key in tags} == before
    assert {p: b for p, b in world.tree().items() if p in pages} == pages
    assert git(world.root, "status", "--porcelain").strip() == ""

    head = git(world.root, "rev-parse", "HEAD").strip()
    world.run("--commit")
    assert git(world.root, "rev-parse", "HEAD").strip() == head
