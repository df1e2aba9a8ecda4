"""The pipeline's decisions with its tools faked behind their ``Protocol``s (syncer/stages/ports.py).

Promoted, held, flagged, demoted, failed, resumed, moved and replicated, each through a real
``Pipeline`` and a real ``Ledger`` in ``tmp_path``, with an in-memory world standing in for
upstream, the trusted registry and its replicas. No process is started and no socket opened
(``no_real_tools``); the tools themselves are tested end to end in tests/e2e/.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from dataclasses import replace
from datetime import date

import pytest

from syncer.core.model import (
    Catalog,
    Event,
    Finding,
    ImageEntry,
    PlatformScan,
    Policy,
    Record,
    RegistryEndpoint,
    ScanResult,
    Settings,
    Severity,
    State,
    Target,
    VulnException,
)
from syncer.errors import NotFoundError, SigningError, SkopeoError, TrivyError
from syncer.stages.pipeline import Pipeline, RunOptions, RunResult
from syncer.stages.scan import ScanSettings
from syncer.tools.registry import OCI_MANIFEST, ManifestRef, TagListing
from syncer.trail.ledger import Ledger

TRUSTED, REPLICA = "trusted.test", "replica.test"
D1, D2, D3 = ("sha256:" + c * 64 for c in "123")
DB1, DB2 = "2026-05-01T00:00:00Z", "2026-05-02T00:00:00Z"
CVE = "CVE-2026-0001"
CRITICAL = Finding(id=CVE, package="openssl", installed="3.0.1", fixed="3.0.2", severity=Severity.CRITICAL)


@pytest.fixture(autouse=True)
def no_real_tools(monkeypatch):
    """Any attempt at skopeo, Trivy, git or a registry fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a unit test of the pipeline reached a real tool")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


class FakeClient:
    """A registry client as the pipeline sees it: upstream answers discovery from the world;
    the target's and replicas' are only handed on to the fakes below, which read ``name``."""

    ratelimit = None

    def __init__(self, name: str, upstream: dict[tuple[str, str], str]):
        self.name, self._upstream = name, upstream

    def expect_pulls(self, repositories):
        list(repositories)

    def list_tags(self, repository):
        return TagListing(sorted(t for r, t in self._upstream if r == repository))

    def head_manifest(self, repository, tag):
        digest = self._upstream.get((repository, tag))
        if digest is None:
            raise NotFoundError(f"{self.name}/{repository}:{tag} not found")
        return ManifestRef(digest=digest, media_type=OCI_MANIFEST, size=1)


class World:
    """Upstream tags, each registry's repositories (reference -> digest), signatures, and a log
    of every call of a fake tool in the order made."""

    def __init__(self):
        self.upstream: dict[tuple[str, str], str] = {}
        self.repos: dict[tuple[str, str], dict[str, str]] = {}
        self.signed: set[tuple[str, str, str]] = set()  # (registry, repository, digest)
        self.log: list[tuple[str, ...]] = []
        self.scans: dict[str, object] = {}  # digest -> findings tuple, PlatformScan or exception
        self.refuse_signing: set[str] = set()  # registries whose signatures fail
        self.people: dict[tuple[str, str, str], set[str]] = {}  # people's signatures, per registry

    def holds(self, registry: str, repository: str) -> dict[str, str]:
        return self.repos.setdefault((registry, repository), {})

    def client(self, endpoint, deadline):
        return FakeClient(endpoint.name, self.upstream if endpoint.name == "docker.io" else {})


class FakeCopier:
    def __init__(self, world: World):
        self.w = world

    def _copy(self, kind, src_registry, src_repo, digest, dst_registry, dst_repo, tag):
        if src_registry != "docker.io" and digest not in self.w.holds(src_registry, src_repo).values():
            raise SkopeoError(f"{src_registry}/{src_repo}@{digest}: manifest unknown")
        self.w.log.append((kind, f"{dst_registry}/{dst_repo}:{tag}", digest))
        self.w.holds(dst_registry, dst_repo)[tag] = digest

    def mirror(self, source, source_path, digest, target, quarantine_repo, tag):
        self._copy("mirror", source.name, source_path, digest, target.name, quarantine_repo, tag)

    def copy_in_target(self, target, client, src_repo, dst_repo, digest, tag):
        self._copy("retag", target.name, src_repo, digest, target.name, dst_repo, tag)

    def promote(self, target, client, quarantine_repo, approved_repo, digest, tag):
        self._copy("promote", target.name, quarantine_repo, digest, target.name, approved_repo, tag)

    def to_replica(self, source, replica, approved_repo, digest, tag):
        self._copy("replicate", source.name, approved_repo, digest, replica.name, approved_repo, tag)

    def demote(self, client, approved_repo, digest):
        self.w.log.append(("demote", f"{client.name}/{approved_repo}", digest))
        refs = self.w.holds(client.name, approved_repo)
        for ref in [r for r, d in refs.items() if d == digest]:
            del refs[ref]
        if (client.name, approved_repo, digest) not in self.w.signed:
            return []
        self.w.signed.discard((client.name, approved_repo, digest))
        return [digest.replace(":", "-") + ".sig"]

    def copy_signatures(self, source, destination, repository, digest, identity, signers):
        self.w.log.append(("copy signatures", f"{destination.name}/{repository}", digest, identity))
        there = self.w.people.setdefault((destination.name, repository, digest), set())
        new = sorted(self.w.people.get((source.name, repository, digest), set()) & set(signers) - there)
        there.update(new)
        return new


class FakeScanner:
    def __init__(self, world: World, db: str):
        self.w, self.db = world, db

    def scan(self, target, client, repository, digest, platforms, cache):
        self.w.log.append(("scan", f"{target.name}/{repository}", digest))
        assert digest in self.w.holds(target.name, repository).values(), "scanned before mirrored"
        found = self.w.scans.get(digest, ())
        if isinstance(found, Exception):
            raise found
        covered = found if isinstance(found, PlatformScan) else PlatformScan(digest=digest)
        return ScanResult(
            digest=digest,
            scanner="fake 1.0",
            db_updated_at=self.db,
            scanned_at="2026-05-03T00:00:00Z",
            findings=found if isinstance(found, tuple) else (),
            covered=(covered,),
            selection=platforms,
        )


class FakeSigner:
    name = "ci"

    def __init__(self, world: World):
        self.w = world

    def sign(self, client, repository, digest, identity):
        if client.name in self.w.refuse_signing:
            raise SigningError(f"{client.name} refused the signature of {digest}")
        self.w.log.append(("sign", identity, digest))
        self.w.signed.add((client.name, repository, digest))


def catalog(tmp_path, *images: ImageEntry, replicas=(), exceptions=(), **policy) -> Catalog:
    settings = Settings(
        target=Target(registry=TRUSTED), replicas=tuple(RegistryEndpoint(registry=r) for r in replicas)
    )
    return Catalog(
        root=str(tmp_path / "catalog"),
        settings=settings,
        images=images or (NGINX,),
        exceptions=tuple(exceptions),
        policies={"default": Policy(name="default", max={Severity.CRITICAL: 0}, **policy)},
    )


NGINX = ImageEntry(source="docker.io/library/nginx", name="nginx", tags=("1.27",))
REDIS = ImageEntry(source="docker.io/library/redis", name="redis", tags=("7",))


def run(
    world: World, cat: Catalog, ledger: Ledger, db: str = DB1, today: date = date(2026, 5, 3)
) -> RunResult:
    options = RunOptions(jobs=2, today=today)
    return Pipeline(
        cat,
        ledger,
        scan_settings=ScanSettings(cache_dir="/nonexistent", db_updated_at=db),
        signer=FakeSigner(world),
        options=options,
        copier=FakeCopier(world),
        scanner=FakeScanner(world, db),
        clients=world.client,
    ).run()


def events(record: Record) -> list[str]:
    return [e.event for e in record.events]


@pytest.fixture
def world():
    w = World()
    w.upstream[("library/nginx", "1.27")] = D1
    w.upstream[("library/redis", "7")] = D2
    return w


@pytest.fixture
def ledger(tmp_path):
    return Ledger(tmp_path / "reports")


def test_a_new_tag_is_mirrored_scanned_signed_then_promoted(tmp_path, world, ledger):
    result = run(world, catalog(tmp_path), ledger)

    assert [(o.name, o.state, o.changed, o.failed) for o in result.outcomes] == [
        ("nginx", State.PROMOTED, True, False)
    ]
    assert result.exit_code == 0
    assert [step[0] for step in world.log] == ["mirror", "scan", "sign", "promote"]
    assert world.holds(TRUSTED, "approved/nginx") == {"1.27": D1}
    assert (TRUSTED, "approved/nginx", D1) in world.signed
    rec = ledger.load("nginx", "1.27")
    assert rec.state is State.PROMOTED and rec.promoted_digest == D1 and rec.signatures == ["ci"]
    assert events(rec) == ["discovered", "mirrored", "scanned", "promoted"]


def test_a_finding_over_the_policy_holds_the_tag_unsigned_outside_approved(tmp_path, world, ledger):
    world.scans[D1] = (CRITICAL,)
    result = run(world, catalog(tmp_path), ledger)

    assert result.outcomes[0].state is State.HELD and not result.outcomes[0].failed
    rec = ledger.load("nginx", "1.27")
    assert rec.state is State.HELD and rec.promoted_digest is None
    assert len(rec.reasons) == 1 and "1 critical vulnerability (max 0)" in rec.reasons[0]
    assert CVE in rec.reasons[0]
    assert events(rec)[-1] == "held"
    assert world.holds(TRUSTED, "approved/nginx") == {} and world.signed == set()


def test_package_data_the_database_cannot_match_holds_the_tag_as_unassessed(tmp_path, world, ledger):
    world.scans[D1] = PlatformScan(digest=D1, unassessed=("pip packages: no advisory source",))
    run(world, catalog(tmp_path), ledger)

    rec = ledger.load("nginx", "1.27")
    assert rec.state is State.HELD
    assert rec.reasons[0].startswith("not assessed, so not known to be clean")
    assert world.holds(TRUSTED, "approved/nginx") == {}


def test_the_same_unassessed_scan_is_promoted_under_unassessed_allow(tmp_path, world, ledger):
    world.scans[D1] = PlatformScan(digest=D1, unassessed=("pip packages: no advisory source",))
    run(world, catalog(tmp_path, unassessed="allow"), ledger)

    rec = ledger.load("nginx", "1.27")
    assert rec.state is State.PROMOTED
    assert rec.reasons[0].startswith("allowed unassessed")


def test_an_unexpired_exception_lets_its_finding_through(tmp_path, world, ledger):
    world.scans[D1] = (CRITICAL,)
    waiver = VulnException(
        vulnerability=CVE,
        images=("ngin*",),
        expires=date(2026, 5, 3),
        reason="not reachable: no TLS in this image",
    )
    run(world, catalog(tmp_path, exceptions=[waiver]), ledger)

    rec = ledger.load("nginx", "1.27")
    assert rec.state is State.PROMOTED and rec.promoted_digest == D1
    assert rec.reasons == [
        (f"exception for {CVE} applied (expires 2026-05-03): not reachable: no TLS in this image")
    ]
    assert world.holds(TRUSTED, "approved/nginx") == {"1.27": D1}


def test_an_expired_exception_holds(tmp_path, world, ledger):
    world.scans[D1] = (CRITICAL,)
    waiver = VulnException(vulnerability=CVE, images=("nginx",), expires=date(2026, 5, 2), reason="r")
    run(world, catalog(tmp_path, exceptions=[waiver]), ledger)

    rec = ledger.load("nginx", "1.27")
    assert rec.state is State.HELD
    assert f"exception for {CVE} expired on 2026-05-02" in rec.reasons


@pytest.mark.parametrize("on_regression", ["flag", "demote"])
def test_a_regression_found_by_a_rescan_flags_or_demotes_per_on_regression(
    tmp_path, world, ledger, on_regression
):
    cat = catalog(tmp_path, replicas=[REPLICA], on_regression=on_regression)
    run(world, cat, ledger, db=DB1)
    assert world.holds(REPLICA, "approved/nginx") == {"1.27": D1}
    world.log.clear()
    world.scans[D1] = (CRITICAL,)  # the newer database knows a CVE the older did not

    result = run(world, cat, ledger, db=DB2)

    rec = ledger.load("nginx", "1.27")
    assert rec.scan.db_updated_at == DB2 and CVE in rec.reasons[0]
    if on_regression == "flag":
        assert result.outcomes[0].state is State.FLAGGED and rec.state is State.FLAGGED
        assert rec.promoted_digest == D1 and events(rec)[-2:] == ["scanned", "flagged"]
        assert world.holds(TRUSTED, "approved/nginx") == {"1.27": D1}
        assert world.holds(REPLICA, "approved/nginx") == {"1.27": D1}
        assert [step[0] for step in world.log] == ["scan"]
    else:
        assert result.outcomes[0].state is State.DEMOTED and rec.state is State.DEMOTED
        assert rec.promoted_digest is None
        assert events(rec)[-3:] == ["scanned", "demoted", "unreplicated"]
        assert f"removed {D1} and sha256-{'1' * 64}.sig" in rec.events[-2].detail
        assert world.holds(TRUSTED, "approved/nginx") == {}
        assert world.holds(REPLICA, "approved/nginx") == {}
        assert world.signed == set()
        assert rec.replicas[0].digest is None
    assert result.exit_code == 0


def test_a_policy_hold_that_is_no_regression_leaves_a_promoted_digest_in_place(tmp_path, world, ledger):
    run(world, catalog(tmp_path), ledger)
    # Manual approval now required, none given: the image did not get worse.
    result = run(world, catalog(tmp_path, approval="manual", on_regression="demote"), ledger, db=DB2)

    rec = ledger.load("nginx", "1.27")
    assert result.outcomes[0].state is State.PROMOTED and rec.promoted_digest == D1
    assert rec.reasons[0].startswith("manual approval required")
    assert world.holds(TRUSTED, "approved/nginx") == {"1.27": D1}


def test_a_scan_failure_fails_its_tag_records_why_and_the_others_go_on(tmp_path, world, ledger):
    world.scans[D1] = TrivyError("trivy image: exit status 1: database is corrupt; run with --updates")
    result = run(world, catalog(tmp_path, NGINX, REDIS), ledger)

    states = {o.name: (o.state, o.failed) for o in result.outcomes}
    assert states == {"nginx": (State.FAILED, True), "redis": (State.PROMOTED, False)}
    assert result.exit_code == 1
    rec = ledger.load("nginx", "1.27")
    assert rec.state is State.FAILED and "database is corrupt" in rec.reasons[0]
    assert events(rec) == ["discovered", "mirrored", "failed"]
    assert world.holds(TRUSTED, "approved/nginx") == {}
    assert world.holds(TRUSTED, "approved/redis") == {"7": D2}


def test_a_signing_failure_puts_nothing_in_approved(tmp_path, world, ledger):
    world.refuse_signing.add(TRUSTED)
    result = run(world, catalog(tmp_path), ledger)

    assert result.outcomes[0].state is State.FAILED and result.exit_code == 1
    rec = ledger.load("nginx", "1.27")
    assert rec.reasons == [
        (f"cannot sign: {TRUSTED} refused the signature of {D1}; nothing is promoted unsigned")
    ]
    assert rec.promoted_digest is None
    assert "promote" not in [step[0] for step in world.log]
    assert world.holds(TRUSTED, "approved/nginx") == {}


def test_a_failed_tag_is_retried_by_the_next_run_without_a_second_pull(tmp_path, world, ledger):
    world.refuse_signing.add(TRUSTED)
    run(world, catalog(tmp_path), ledger)
    world.refuse_signing.clear()
    world.log.clear()

    run(world, catalog(tmp_path), ledger)

    rec = ledger.load("nginx", "1.27")
    assert rec.state is State.PROMOTED and events(rec)[-2:] == ["failed", "promoted"]
    assert [step[0] for step in world.log] == ["sign", "promote"]  # its scan still fits


def test_a_tag_resumed_from_a_mirrored_record_is_not_pulled_again(tmp_path, world, ledger):
    ledger.save(
        Record(
            name="nginx",
            tag="1.27",
            source=f"docker.io/library/nginx:1.27@{D1}",
            digest=D1,
            state=State.MIRRORED,
            events=[
                Event("2026-05-02T00:00:00Z", "discovered", "docker.io/library/nginx"),
                Event("2026-05-02T00:00:01Z", "mirrored", D1),
            ],
        )
    )
    world.holds(TRUSTED, "quarantine/nginx")["1.27"] = D1  # what the killed run had copied

    result = run(world, catalog(tmp_path), ledger)

    assert result.outcomes[0].state is State.PROMOTED
    assert [step[0] for step in world.log] == ["scan", "sign", "promote"]
    assert events(ledger.load("nginx", "1.27")) == ["discovered", "mirrored", "scanned", "promoted"]


def test_tags_of_one_digest_are_pulled_from_upstream_once(tmp_path, world, ledger):
    world.upstream[("library/nginx", "latest")] = D1
    run(
        world,
        catalog(
            tmp_path, ImageEntry(source="docker.io/library/nginx", name="nginx", tags=("1.27", "latest"))
        ),
        ledger,
    )

    copies = sorted(step[0] for step in world.log if step[0] in ("mirror", "retag"))
    assert copies == ["mirror", "retag"]
    assert world.holds(TRUSTED, "approved/nginx") == {"1.27": D1, "latest": D1}
    assert "tagged from quarantine: no upstream pull" in " ".join(
        e.detail for tag in ("1.27", "latest") for e in ledger.load("nginx", tag).events
    )


def test_a_moved_tag_is_mirrored_scanned_and_promoted_anew(tmp_path, world, ledger):
    run(world, catalog(tmp_path), ledger)
    world.upstream[("library/nginx", "1.27")] = D3
    world.log.clear()

    result = run(world, catalog(tmp_path), ledger)

    assert result.outcomes[0].state is State.PROMOTED
    assert world.log == [
        ("mirror", f"{TRUSTED}/quarantine/nginx:1.27", D3),
        ("scan", f"{TRUSTED}/quarantine/nginx", D3),
        ("sign", f"{TRUSTED}/approved/nginx", D3),
        ("promote", f"{TRUSTED}/approved/nginx:1.27", D3),
    ]
    rec = ledger.load("nginx", "1.27")
    assert rec.digest == D3 and rec.promoted_digest == D3 and rec.scan.digest == D3
    assert rec.source == f"docker.io/library/nginx:1.27@{D3}"
    moved = next(e for e in rec.events if e.event == "moved")
    assert moved.detail == f"{D1} -> {D3}"
    assert events(rec)[-4:] == ["moved", "mirrored", "scanned", "promoted"]


def test_a_moved_tag_whose_new_digest_is_held_keeps_the_old_one_approved(tmp_path, world, ledger):
    run(world, catalog(tmp_path), ledger)
    world.upstream[("library/nginx", "1.27")] = D3
    world.scans[D3] = (CRITICAL,)

    run(world, catalog(tmp_path), ledger)

    rec = ledger.load("nginx", "1.27")
    assert rec.state is State.HELD and rec.digest == D3 and rec.promoted_digest == D1
    assert world.holds(TRUSTED, "approved/nginx") == {"1.27": D1}


def test_replicas_get_the_copy_after_it_is_signed_there(tmp_path, world, ledger):
    run(world, catalog(tmp_path, replicas=[REPLICA]), ledger)

    assert world.log[-4:] == [
        ("sign", f"{TRUSTED}/approved/nginx", D1),
        ("promote", f"{TRUSTED}/approved/nginx:1.27", D1),
        ("sign", f"{REPLICA}/approved/nginx", D1),
        ("replicate", f"{REPLICA}/approved/nginx:1.27", D1),
    ]
    rec = ledger.load("nginx", "1.27")
    assert [(r.registry, r.digest, r.lagging) for r in rec.replicas] == [(REPLICA, D1, False)]
    assert events(rec)[-2:] == ["promoted", "replicated"]


def test_a_replica_that_refuses_the_signature_gets_no_copy_and_lags(tmp_path, world, ledger):
    world.refuse_signing.add(REPLICA)
    result = run(world, catalog(tmp_path, replicas=[REPLICA]), ledger)

    outcome = result.outcomes[0]
    assert outcome.state is State.PROMOTED and outcome.failed and "lagging on replica.test" in outcome.message
    assert world.holds(REPLICA, "approved/nginx") == {}
    assert "replicate" not in [step[0] for step in world.log]
    rec = ledger.load("nginx", "1.27")
    assert [(r.registry, r.digest, r.lagging) for r in rec.replicas] == [(REPLICA, None, True)]

    world.refuse_signing.clear()
    world.log.clear()
    run(world, catalog(tmp_path, replicas=[REPLICA]), ledger)  # the next run catches it up
    assert [step[0] for step in world.log] == ["sign", "replicate"]
    assert world.holds(REPLICA, "approved/nginx") == {"1.27": D1}


class CountingLedger(Ledger):
    """The ledger a fresh ``syncer run`` opens, counting the full records it reads."""

    def __init__(self, reports):
        super().__init__(reports)
        self.loads: list[tuple[str, str]] = []

    def load(self, name, tag):
        self.loads.append((name, tag))
        return super().load(name, tag)

    def contents(self):
        self.loads.append(("*", "*"))  # every record
        return super().contents()


def run_fresh(tmp_path, world: World, cat: Catalog, **kwargs) -> tuple[RunResult, CountingLedger]:
    """One run as the CLI makes it: its own ledger, the index flushed at the end."""
    ledger = CountingLedger(tmp_path / "reports")
    result = run(world, cat, ledger, **kwargs)
    ledger.flush()
    return result, ledger


def test_a_settled_tag_is_decided_from_the_index_until_an_exception_expires_overnight(tmp_path, world):
    world.scans[D1] = (CRITICAL,)
    waiver = VulnException(vulnerability=CVE, images=("nginx",), expires=date(2026, 5, 3), reason="r")
    cat = catalog(tmp_path, NGINX, REDIS, exceptions=[waiver])
    run_fresh(tmp_path, world, cat)
    world.log.clear()

    result, ledger = run_fresh(tmp_path, world, cat)
    assert ledger.loads == [] and world.log == []
    assert [(o.state, o.changed) for o in result.outcomes] == [(State.PROMOTED, False)] * 2

    # The last day of the exception is over: nginx alone is read and decided anew.
    result, ledger = run_fresh(tmp_path, world, cat, today=date(2026, 5, 4))
    assert ledger.loads == [("nginx", "1.27")]
    assert [(o.name, o.state, o.changed) for o in result.outcomes] == [
        ("nginx", State.FLAGGED, True),
        ("redis", State.PROMOTED, False),
    ]
    assert f"exception for {CVE} expired on 2026-05-03" in ledger.load("nginx", "1.27").reasons


def test_a_rescan_that_finds_the_same_result_reads_and_writes_no_record(tmp_path, world):
    world.scans[D1] = (CRITICAL,)
    cat = catalog(tmp_path, NGINX, REDIS)
    run_fresh(tmp_path, world, cat)
    files = {p: p.read_bytes() for p in (tmp_path / "reports").rglob("*.yaml")}
    world.log.clear()

    result, ledger = run_fresh(tmp_path, world, cat, db=DB2)

    assert [step[0] for step in world.log] == ["scan", "scan"]
    assert ledger.loads == [] and not result.changed
    assert {p: p.read_bytes() for p in (tmp_path / "reports").rglob("*.yaml")} == files
    assert {e.scan.db_updated_at for e in ledger.index().entries.values()} == {DB2}
    rec = ledger.load("nginx", "1.27")
    assert rec.scan.db_updated_at == DB2 and events(rec) == ["discovered", "mirrored", "scanned", "held"]


def test_a_rescan_that_finds_more_records_it_and_decides_anew(tmp_path, world):
    cat = catalog(tmp_path)
    run_fresh(tmp_path, world, cat)
    world.scans[D1] = (CRITICAL,)

    result, ledger = run_fresh(tmp_path, world, cat, db=DB2)

    assert ledger.loads == [("nginx", "1.27")]
    rec = ledger.load("nginx", "1.27")
    assert result.outcomes[0].state is State.FLAGGED and events(rec)[-2:] == ["scanned", "flagged"]


class OverlapCopier(FakeCopier):
    """Records how many jobs wrote into one repository at the same moment (each write lasts a
    little, so two jobs that are not kept apart overlap)."""

    def __init__(self, world: World):
        super().__init__(world)
        self.guard = threading.Lock()
        self.inside: dict[str, int] = {}
        self.most = 0

    def _copy(self, kind, src_registry, src_repo, digest, dst_registry, dst_repo, tag):
        where = f"{dst_registry}/{dst_repo}"
        with self.guard:
            self.inside[where] = self.inside.get(where, 0) + 1
            self.most = max(self.most, self.inside[where])
        time.sleep(0.05)
        with self.guard:
            self.inside[where] -= 1
            super()._copy(kind, src_registry, src_repo, digest, dst_registry, dst_repo, tag)


def test_tags_of_other_digests_of_one_image_write_its_repositories_one_at_a_time(tmp_path, world, ledger):
    # distribution rewrites blob links in place: a manifest put of one job reading a link
    # another job is rewriting fails with DIGEST_INVALID (tests/e2e/test_parallel_promotion_e2e.py).
    tags = {"1.27": D1, "1.28": D2, "1.29": D3}
    for tag, digest in tags.items():
        world.upstream[("library/nginx", tag)] = digest
    copier = OverlapCopier(world)
    Pipeline(
        catalog(tmp_path, ImageEntry(source="docker.io/library/nginx", name="nginx", tags=tuple(tags))),
        ledger,
        scan_settings=ScanSettings(cache_dir="/nonexistent", db_updated_at=DB1),
        signer=FakeSigner(world),
        options=RunOptions(jobs=3, today=date(2026, 5, 3)),
        copier=copier,
        scanner=FakeScanner(world, DB1),
        clients=world.client,
    ).run()

    assert world.holds(TRUSTED, "approved/nginx") == tags
    assert copier.most == 1


def test_a_persons_signature_reaches_each_replica_before_the_image_and_later_ones_too(
    tmp_path, world, ledger
):
    plain = replace(catalog(tmp_path), signers={"alice": "PEM"})
    run(world, plain, ledger)
    # alice signs in the trusted registry (syncer sign), after the promotion.
    rec = ledger.load("nginx", "1.27")
    rec.signatures = ["alice", "ci"]
    rec.events.append(Event(at="2026-05-03T00:00:00Z", event="signed", detail=f"alice signed {D1}"))
    ledger.save(rec)
    world.people[(TRUSTED, "approved/nginx", D1)] = {"alice"}

    world.log.clear()
    replicated = replace(plain, settings=catalog(tmp_path, replicas=[REPLICA]).settings)
    run(world, replicated, ledger)
    named = f"{TRUSTED}/approved/nginx"
    assert world.log == [
        ("copy signatures", f"{REPLICA}/approved/nginx", D1, named),
        ("sign", f"{REPLICA}/approved/nginx", D1),
        ("replicate", f"{REPLICA}/approved/nginx:1.27", D1),
    ]
    rec = ledger.load("nginx", "1.27")
    assert [e.detail for e in rec.events[-2:]] == [
        f"signature of alice on {D1} copied to {REPLICA} unchanged (it names {named})",
        f"{D1} to {REPLICA}, signed by ci",
    ]

    # In step: the next run only looks (and copies a signature made since, were there one).
    world.log.clear()
    result = run(world, replicated, ledger)
    assert world.log == [("copy signatures", f"{REPLICA}/approved/nginx", D1, named)]
    assert not result.changed and ledger.load("nginx", "1.27") == rec
