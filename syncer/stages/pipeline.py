"""The batch job behind ``syncer run``: discover → plan → mirror → scan → evaluate → promote →
sign → record.

Each tag is carried as far as it can go in one run, recorded after every stage that changed
it (so a killed run resumes from the ledger), and a failure stays with its tag. Decisions are
made by ``syncer.core.policy.evaluate`` (pure); this module only sequences side effects.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date

from syncer.core import policy as policy_mod
from syncer.core.model import (
    Approval,
    Catalog,
    Event,
    EventKind,
    ImageEntry,
    IndexEntry,
    Record,
    ScanResult,
    ScanSummary,
    State,
)
from syncer.core.plan import UNFINISHED, Change, Plan, TagPlan, build_plan, tag_decision_key, was_mirrored
from syncer.errors import SigningError, SyncerError, failure_text
from syncer.stages import ports, replicate
from syncer.stages.discover import Sources, discover
from syncer.stages.layers import LayerError
from syncer.stages.progress import Progress
from syncer.stages.scan import ScanCache, ScanSettings, SharedLayers
from syncer.tools import skopeo
from syncer.tools.endpoints import Endpoint, remember_secrets, replica_endpoints, target_endpoint
from syncer.tools.registry import DEADLINE_DEFAULT, RegistryClient
from syncer.trail.ledger import Ledger, LedgerIndex, Unreadable, now_iso, result_key


@dataclass
class RunOptions:
    jobs: int = 2
    only: tuple[str, ...] = ()
    shard: tuple[int, int] | None = None  # (k, n), 1-based k
    dry_run: bool = False
    copy_timeout: float = skopeo.COPY_TIMEOUT  # seconds per skopeo copy
    today: date = field(default_factory=date.today)
    registry_deadline: float = DEADLINE_DEFAULT  # seconds for one registry answer


@dataclass
class TagOutcome:
    name: str
    tag: str
    state: State | None
    changed: bool = False
    failed: bool = False
    deferred: bool = False
    message: str = ""


@dataclass
class RunResult:
    plan: Plan
    outcomes: list[TagOutcome] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return sum(o.failed for o in self.outcomes) + len(self.plan.errors) + len(self.plan.missing)

    @property
    def changed(self) -> list[TagOutcome]:
        return [o for o in self.outcomes if o.changed]

    def counts(self) -> dict[str, int]:
        """Changed tags by their new state, for commit messages and summaries."""
        out: dict[str, int] = {}
        for o in self.changed:
            key = o.state.value if o.state else "changed"
            out[key] = out.get(key, 0) + 1
        return out

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0


def in_shard(name: str, shard: tuple[int, int] | None) -> bool:
    """A stable split by catalog name: the same name lands in the same shard on every runner."""
    if shard is None:
        return True
    k, n = shard
    bucket = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % n
    return bucket == k - 1


def select_entries(catalog: Catalog, options: RunOptions) -> list[ImageEntry]:
    entries = [e for e in catalog.images if in_shard(e.name, options.shard)]
    if options.only:
        entries = [e for e in entries if e.name in options.only]
    return entries


def _removal(digest: str, attachments: list[str]) -> str:
    """What a demotion took away, for the record's event."""
    if not attachments:
        return f"removed {digest} (no signature or attestation was there)"
    return f"removed {digest} and {', '.join(attachments)}"


def recorded_for(index: Callable[[], LedgerIndex], entries: list[ImageEntry]) -> LedgerIndex:
    """The ledger's index narrowed to ``entries``' tags and unreadable records; its strays
    and notes are the whole ledger's."""
    names = {e.name for e in entries}
    read = index()
    return replace(
        read,
        entries={key: entry for key, entry in read.entries.items() if entry.name in names},
        unreadable=[u for u in read.unreadable if u.name in names],
    )


def fail_unreadable(plan: Plan, unreadable: list[Unreadable]) -> None:
    """Each unreadable record fails its own tag: it is never planned (a run would overwrite
    the evidence, or copy the tag again as if new), and is reported with its remedy."""
    broken = {(u.name, u.tag) for u in unreadable}
    plan.tags = [t for t in plan.tags if (t.name, t.tag) not in broken]
    plan.errors.extend((u.name, f"tag {u.tag}: {u.message}") for u in unreadable)


class Pipeline:
    """``copier``, ``scanner`` and ``clients`` default to the real tools (``syncer.stages.ports``);
    tests of the decisions pass fakes. No scanner (no ``scan_settings``) or no signer: tags fail
    for ``scan_problem`` or ``signer_problem``."""

    def __init__(
        self,
        catalog: Catalog,
        ledger: Ledger,
        *,
        scan_settings: ScanSettings | None,
        signer: ports.Signer | None,
        options: RunOptions,
        progress: Progress | None = None,
        scan_problem: str = "",
        signer_problem: str = "",
        copier: ports.Copier | None = None,
        scanner: ports.Scanner | None = None,
        clients: ports.ClientFactory = Endpoint.client,
    ):
        self.catalog = catalog
        self.ledger = ledger
        self.scan_settings = scan_settings
        self.signer = signer
        self.copier = copier if copier is not None else ports.ToolCopier(options.copy_timeout)
        if scanner is None and scan_settings is not None:
            scanner = ports.TrivyScanner(scan_settings)
        self.scanner = scanner
        self.clients = clients
        # Why scanning or signing is unavailable this run: the reason a tag then fails with.
        self.scan_problem = scan_problem or "no vulnerability database"
        self.signer_problem = signer_problem or "no signing key configured"
        self.options = options
        self.progress = progress or Progress(quiet=True)
        remember_secrets(catalog.settings)
        self.sources = Sources(
            catalog, anonymous_if_unset=options.dry_run, deadline=options.registry_deadline, clients=clients
        )
        self.settings = catalog.settings
        # Set by run() before any tag is processed; a plan needs neither.
        self._target: Endpoint
        self._target_client: RegistryClient
        self._replicas: list[tuple[Endpoint, RegistryClient]] = []
        self._scan_cache = ScanCache()
        # Tags sharing a digest are processed one at a time (they write the same blobs and the
        # same .sig tag), and the digest comes from upstream once: later tags are tagged from
        # quarantine, which Docker Hub does not count as a pull.
        self._guard = threading.Lock()
        self._digest_locks: dict[tuple[str, str], threading.Lock] = {}
        # One writer per repository (docs/architecture.md, "One writer per repository").
        self._repository_locks: dict[tuple[str, str], threading.Lock] = {}
        self._quarantined: set[tuple[str, str]] = set()

    # --- planning -------------------------------------------------------------------------

    def plan(self) -> Plan:
        entries = select_entries(self.catalog, self.options)
        self.progress.note(f"discovering {len(entries)} catalog entries")
        # Reading the ledger is CPU work and discovery mostly waits on the network: overlap them.
        with ThreadPoolExecutor(max_workers=1) as reader:
            reading = reader.submit(recorded_for, self.ledger.index, entries)
            discoveries = discover(entries, self.sources)
            read = reading.result()
        for stray in read.strays:
            self.progress.note(f"warning: {stray}")
        for note in read.notes:
            self.progress.note(f"note: {note}")
        for found in discoveries:
            for warning in found.warnings:
                self.progress.note(f"{found.entry.name}: warning: {warning}")
        for endpoint in self.sources.used():
            if endpoint.credentials_note:
                self.progress.note(endpoint.credentials_note)
        for host in self.sources.anonymous():
            self.progress.note(
                f"note: no credentials for {host} are set; it was asked anonymously "
                "(enough for a plan; a run needs them)"
            )
        min_remaining = {
            h: s.min_remaining_pulls
            for h, s in self.settings.sources.items()
            if s.min_remaining_pulls is not None
        }
        self._scan_cache = ScanCache(self._stored_scans(read.entries.values()))
        plan = build_plan(
            discoveries,
            read.entries,
            db_updated_at=self.scan_settings.db_updated_at if self.scan_settings else None,
            min_remaining=min_remaining,
        )
        fail_unreadable(plan, read.unreadable)
        return plan

    def _stored_scans(self, entries: Iterable[IndexEntry]) -> Callable[[str], list[ScanResult]]:
        """Where the run's scan cache finds the results earlier runs stored for a digest: the
        stored result of each catalog image whose entry of that digest was last confirmed
        against this run's database (no other could stand in for a scan now), read when the
        digest is first scanned."""
        db = self.scan_settings.db_updated_at if self.scan_settings else None
        holders: dict[str, set[str]] = {}  # digest -> catalog names
        for e in entries:
            if db and e.scan is not None and e.scan.usable and e.scan.db_updated_at == db:
                holders.setdefault(e.scan.digest, set()).add(e.name)

        def stored(digest: str) -> list[ScanResult]:
            out = []
            for name in sorted(holders.get(digest, ())):
                try:
                    result = self.ledger.stored_scan(name, digest)
                except SyncerError:
                    continue  # an unreadable result fails the tags that use it; here it only misses
                if result is not None and db:
                    # Its found_with times are the first scan's; this database confirmed it.
                    out.append(replace(result, db_updated_at=db))
            return out

        return stored

    # --- running --------------------------------------------------------------------------

    def run(self) -> RunResult:
        plan = self.plan()
        result = RunResult(plan=plan)
        for name, msg in plan.errors:
            self.progress.note(f"{name}: error: {msg}")
        for name, tag in plan.missing:
            self.progress.note(f"{name}:{tag}: error: tag not found upstream; fix `tags` in the catalog")
        if self.options.dry_run:
            return result
        self._target = target_endpoint(self.settings)
        self._target_client = self.clients(self._target, self.options.registry_deadline)
        self._replicas = [
            (ep, self.clients(ep, self.options.registry_deadline)) for ep in replica_endpoints(self.settings)
        ]
        for endpoint in (self._target, *(ep for ep, _ in self._replicas)):
            if endpoint.credentials_note:
                self.progress.note(endpoint.credentials_note)
        work = [t for t in plan.tags if t.change is not Change.VANISHED or t.recorded is not None]
        self._quarantined = {
            (t.name, t.recorded.digest) for t in plan.tags if t.recorded is not None and t.recorded.mirrored
        }
        self.progress.total = len(work)
        # Each blob moves once per run: the copies share one blob-info cache, the scans one
        # layer analysis per layer (docs/architecture.md, "Each blob moves once").
        settings, scanner = self.scan_settings, self.scanner
        shared = None
        if settings is not None and isinstance(scanner, ports.TrivyScanner):
            shared = SharedLayers(settings.cache_dir, own_server=not settings.server)
            self.scan_settings = replace(settings, shared=shared)
            self.scanner = ports.TrivyScanner(self.scan_settings)
        try:
            with skopeo.shared_blob_cache():
                pool = ThreadPoolExecutor(max_workers=max(1, self.options.jobs))
                try:
                    result.outcomes = list(pool.map(self._process_safely, work))
                finally:
                    # Interrupted (Ctrl-C, SIGTERM): tags in progress finish and are
                    # recorded, the queued ones are left for the next run rather than started now.
                    pool.shutdown(wait=True, cancel_futures=True)
        finally:
            if shared is not None:
                shared.close()
                self.scan_settings, self.scanner = settings, scanner
        if shared is not None and shared.server is not None and shared.server.problem:
            self.progress.note(f"note: {shared.server.problem}; scans used a layer cache each")
        quiet = sum(not (o.changed or o.failed or o.deferred) for o in result.outcomes)
        if quiet:
            self.progress.note(f"{quiet} tag{'s' if quiet != 1 else ''} unchanged")
        return result

    def _digest_lock(self, name: str, digest: str | None) -> threading.Lock:
        with self._guard:
            return self._digest_locks.setdefault((name, digest or ""), threading.Lock())

    def _writing(self, registry: str, repository: str) -> threading.Lock:
        """Held by the job writing into ``registry``'s ``repository``: distribution rewrites a
        blob's link file in place (truncate, then write), so a manifest put that reads it meanwhile
        fails with DIGEST_INVALID; MANIFEST_BLOB_UNKNOWN. Tags of other digests of the image
        write the same shared layers' links."""
        with self._guard:
            return self._repository_locks.setdefault((registry, repository), threading.Lock())

    def _process_safely(self, tp: TagPlan) -> TagOutcome:
        subject = f"{tp.name}:{tp.tag}"
        try:
            with self._digest_lock(tp.name, tp.digest):
                outcome = self._process(tp)
        except Exception as err:  # noqa: BLE001 - one image's failure must not stop the others
            outcome = TagOutcome(tp.name, tp.tag, State.FAILED, failed=True, message=failure_text(err))
        if outcome.changed or outcome.failed or outcome.deferred:
            self.progress.result(subject, outcome.message)
        else:
            self.progress.tick()
        return outcome

    # --- one tag --------------------------------------------------------------------------

    def _entry(self, name: str) -> ImageEntry:
        entry = self.catalog.image(name)
        assert entry is not None
        return entry

    def _event(self, rec: Record, event: EventKind, detail: str = "") -> None:
        rec.events.append(Event(at=now_iso(), event=event, detail=detail))

    def _process(self, tp: TagPlan) -> TagOutcome:
        entry = self._entry(tp.name)
        if tp.change is Change.VANISHED:
            return self._vanished(tp)
        if tp.deferred:
            return TagOutcome(
                tp.name,
                tp.tag,
                tp.recorded.state if tp.recorded else None,
                deferred=True,
                message="deferred: upstream pull budget below min_remaining_pulls",
            )
        idx = tp.recorded
        if idx is None or tp.change is not Change.UNCHANGED or tp.needs_copy or idx.state in UNFINISHED:
            return self._process_record(tp, entry, None)
        # The hot path of a no-op and of a database update: decided from the index entry, the
        # record is read only when something is to be done to it.
        fresh: ScanResult | Exception | None = None
        if idx.scan is not None and self.scanner is not None and self._scan_due(idx.scan, entry):
            self.progress.step(f"{tp.name}:{tp.tag}", "scanning")
            try:
                fresh = self._scan(entry, idx.digest)
            except Exception as err:  # noqa: BLE001 - the record's path below records it
                fresh = err
            if isinstance(fresh, ScanResult) and result_key(fresh) == idx.scan.result:
                # The same result again: its new times go to the index only (no event, no
                # record written); the decision is then as it was unless its inputs changed.
                self.ledger.touch_scan(
                    tp.name,
                    tp.tag,
                    scanner=fresh.scanner,
                    db_updated_at=fresh.db_updated_at,
                    scanned_at=fresh.scanned_at,
                )
                fresh = None
            else:
                return self._process_record(tp, entry, fresh)
        elif idx.scan is None or self._scan_due(idx.scan, entry):
            return self._process_record(tp, entry, None)
        if not self._settled(idx):
            return self._process_record(tp, entry, None)
        message = idx.state.value
        if idx.reason and idx.state in (State.HELD, State.FLAGGED, State.DEMOTED):
            more = idx.reasons - 1
            message += f": {idx.reason}" + (
                f" (and {more} more reason{'s' if more != 1 else ''})" if more else ""
            )
        return TagOutcome(tp.name, tp.tag, idx.state, message=f"unchanged ({message})")

    def _scan_due(self, scan: ScanSummary, entry: ImageEntry) -> bool:
        """The recorded scan does not cover what the entry requires, or is of an older database."""
        db = self.scan_settings.db_updated_at if self.scan_settings else None
        return not scan.fits(scan.digest, entry.platforms) or bool(db and scan.db_updated_at < db)

    def _settled(self, idx: IndexEntry) -> bool:
        """Nothing to do for the tag: the inputs of its decision are those the run last decided
        it with (``decision_key``), and every replica holds what approved/ does for it."""
        key = tag_decision_key(idx, self.catalog, self.options.today)
        if key is None or key != idx.decided:
            return False
        # A person's signature may have been made on the target since the last run: each run
        # copies what is new to the replicas (_replicate), which needs the full record.
        if (
            self._replicas
            and idx.promoted_digest
            and any(name != self.settings.signing.signer for name in idx.signatures)
        ):
            return False
        for endpoint, _ in self._replicas:
            current = next((r for r in idx.replicas if r.registry == endpoint.name), None)
            if idx.promoted_digest is None:
                if current is not None and current.digest:
                    return False
            elif current is None or current.lagging or current.digest != idx.promoted_digest:
                return False
        return True

    def _load(self, tp: TagPlan) -> Record:
        rec = self.ledger.load(tp.name, tp.tag)
        if rec is None:
            raise SyncerError(
                f"{tp.name}:{tp.tag}: its record is gone since the run read the ledger's index: "
                "restore it from git history (git log -- reports/records/) and run again"
            )
        return rec

    def _process_record(
        self, tp: TagPlan, entry: ImageEntry, fresh: ScanResult | Exception | None
    ) -> TagOutcome:
        """The tag's full record carried through every stage due. ``fresh``: a scan made
        already for this run (or how it failed), used instead of scanning again."""
        subject = f"{tp.name}:{tp.tag}"
        loaded = self._load(tp) if tp.recorded else None
        rec = (
            loaded.copy()
            if loaded
            else Record(
                name=tp.name, tag=tp.tag, source=tp.source or "", digest=tp.digest or "", state=State.MIRRORED
            )
        )
        changed = False
        decided = ""
        try:
            if tp.change is Change.NEW:
                self._event(rec, "discovered", tp.source or "")
            elif tp.change is Change.MOVED:
                self._event(rec, "moved", f"{rec.digest} -> {tp.digest}")
                rec.digest, rec.source, rec.scan = tp.digest or "", tp.source or "", None
                rec.reasons = []
            if tp.needs_copy:
                self.progress.step(subject, "mirroring")
                detail = self._mirror(entry, tp.name, tp.tag, rec.digest)
                rec.state = State.MIRRORED
                rec.reasons = []
                self._event(rec, "mirrored", detail)
                changed |= self.ledger.save(rec)
            elif not was_mirrored(rec):
                raise SyncerError(f"{subject}: record has no mirrored copy of {rec.digest}")

            db = self.scan_settings.db_updated_at if self.scan_settings else None
            unscannable: LayerError | None = None
            if (
                fresh is not None
                or rec.scan is None
                or not rec.scan.fits(rec.digest, entry.platforms)
                or (db and rec.scan.db_updated_at < db)
            ):
                if self.scanner is None:
                    raise SyncerError(f"cannot scan: {self.scan_problem}; nothing is promoted unscanned")
                if fresh is None:
                    self.progress.step(subject, "scanning")
                try:
                    if isinstance(fresh, Exception):
                        raise fresh
                    scan = fresh or self._scan(entry, rec.digest)
                except LayerError as err:
                    # Held, not failed: the digest fixes the content, so every run would fail
                    # alike; the verdict is recorded once and re-checked from the layer cache.
                    unscannable = err
                else:
                    confirmed = rec.scan is not None and result_key(rec.scan) == result_key(scan)
                    rec.scan = scan
                    # A re-scan that found what the record holds changes only when it was
                    # confirmed, which the index keeps: no event, and the state stays.
                    if not confirmed:
                        if rec.promoted_digest != rec.digest:
                            rec.state = State.SCANNED
                        self._event(
                            rec,
                            "scanned",
                            f"{rec.digest} with {scan.scanner}, database "
                            f"{scan.db_updated_at}: "
                            f"{policy_mod.counts_text(policy_mod.count_by_severity(scan.findings))}",
                        )
                        changed |= self.ledger.save(rec)

            if unscannable:
                decision = policy_mod.unscannable(str(unscannable))
            else:
                assert rec.scan is not None  # scanned above, or the tag failed there
                policy = self.catalog.policy_for(entry)
                decision = policy_mod.evaluate(
                    name=tp.name,
                    digest=rec.digest,
                    scan=rec.scan,
                    policy=policy,
                    exceptions=self.catalog.exceptions,
                    approvals=self.catalog.approvals,
                    today=self.options.today,
                )
                decided = policy_mod.decision_key(
                    name=tp.name,
                    digest=rec.digest,
                    scan_result_key=result_key(rec.scan),
                    created=rec.scan.created,
                    policy=policy,
                    exceptions=self.catalog.exceptions,
                    approvals=self.catalog.approvals,
                    today=self.options.today,
                )
            self._decide(rec, entry, decision, subject)
            lagging = self._replicate(rec, subject)
        except Exception as err:  # noqa: BLE001 - recorded as this tag's failure; the others go on
            reason = failure_text(err)
            rec.state = State.FAILED
            rec.reasons = [reason]
            if not (rec.events and rec.events[-1].event == "failed" and rec.events[-1].detail == reason):
                self._event(rec, "failed", reason)
            try:
                changed |= self.ledger.save(rec)
            except SyncerError as unsaved:  # the record's own path is refused (a symlink)
                return TagOutcome(
                    tp.name,
                    tp.tag,
                    State.FAILED,
                    changed=changed,
                    failed=True,
                    message=f"failed: {reason}; the record could not be saved: {unsaved}",
                )
            return TagOutcome(
                tp.name, tp.tag, State.FAILED, changed=changed, failed=True, message=f"failed: {reason}"
            )
        if rec != loaded:  # an unchanged record is not even rewritten
            changed |= self.ledger.save(rec)
        # Index only: the next run needs not read the record while these inputs hold.
        self.ledger.set_decided(tp.name, tp.tag, decided)
        message = rec.state.value
        if rec.reasons and rec.state in (State.HELD, State.FLAGGED, State.DEMOTED):
            message += f": {'; '.join(rec.reasons)}"
        if lagging:
            message += "; lagging on " + "; ".join(lagging)
        if not changed:
            message = f"unchanged ({message})"
        # A lagging replica is work left undone (exit 1) but not a failure of the tag itself.
        return TagOutcome(tp.name, tp.tag, rec.state, changed=changed, failed=bool(lagging), message=message)

    def _mirror(self, entry: ImageEntry, name: str, tag: str, digest: str) -> str:
        """Bring ``digest`` into quarantine as ``tag``; the event detail (it names the digest)."""
        quarantine = self._quarantine(name)
        with self._writing(self._target.name, quarantine):
            if (name, digest) in self._quarantined:
                try:
                    self.copier.copy_in_target(
                        self._target, self._target_client, quarantine, quarantine, digest, tag
                    )
                    return f"{digest} (tagged from quarantine: no upstream pull)"
                except SyncerError:
                    pass  # e.g. garbage-collected since: fetch it from upstream after all
            self.copier.mirror(
                self.sources.endpoint(entry.source_host),
                entry.source_path,
                digest,
                self._target,
                quarantine,
                tag,
            )
        self._quarantined.add((name, digest))
        return digest

    def _vanished(self, tp: TagPlan) -> TagOutcome:
        assert tp.recorded is not None  # run() leaves out vanished tags it never recorded
        if tp.recorded.vanished:
            return TagOutcome(
                tp.name, tp.tag, tp.recorded.state, message="vanished upstream (recorded earlier)"
            )
        rec = self._load(tp)
        self._event(
            rec, "vanished", "the tag is no longer upstream; the record and any approved copy are kept"
        )
        return TagOutcome(
            tp.name, tp.tag, rec.state, changed=self.ledger.save(rec), message="vanished upstream"
        )

    def _quarantine(self, name: str) -> str:
        return f"{self.settings.target.quarantine}/{name}"

    def _approved(self, name: str) -> str:
        return f"{self.settings.target.approved}/{name}"

    def _scan(self, entry: ImageEntry, digest: str) -> ScanResult:
        assert self.scanner is not None  # _evaluate fails the tag when there is none
        return self.scanner.scan(
            self._target,
            self._target_client,
            self._quarantine(entry.name),
            digest,
            entry.platforms,
            self._scan_cache,
        )

    def _decide(self, rec: Record, entry: ImageEntry, decision: policy_mod.Decision, subject: str) -> None:
        policy = self.catalog.policy_for(entry)
        reasons = list(decision.reasons)
        state = policy_mod.next_state(
            decision,
            current=rec.state,
            in_approved=rec.promoted_digest == rec.digest,
            on_regression=policy.on_regression,
        )
        if rec.promoted_digest == rec.digest:
            # Already in approved/. Only what a scan finds counts against it: an image that
            # merely aged past max_age_days or lost its approval stays where it is.
            if state is State.PROMOTED:
                if rec.state is not State.PROMOTED:
                    self._event(rec, "cleared", "passes the policy again")
                rec.state, rec.reasons = State.PROMOTED, reasons
                return
            if state is State.DEMOTED:
                self.progress.step(subject, "demoting")
                removed = self.copier.demote(self._target_client, self._approved(rec.name), rec.digest)
                rec.promoted_digest = None
                rec.state, rec.reasons = State.DEMOTED, reasons
                self._event(rec, "demoted", f"{'; '.join(reasons)}; {_removal(rec.digest, removed)}")
                return
            if rec.state is not State.FLAGGED or rec.reasons != reasons:
                self._event(rec, "flagged", "; ".join(reasons))
            rec.state, rec.reasons = State.FLAGGED, reasons
            return
        if state is not State.PROMOTED:
            if state is State.DEMOTED:
                rec.reasons = reasons
                return
            if rec.state is not State.HELD or rec.reasons != reasons:
                self._event(rec, "held", "; ".join(reasons))
            rec.state, rec.reasons = State.HELD, reasons
            return
        self._promote(rec, subject, decision.approval)
        rec.state, rec.reasons = State.PROMOTED, reasons

    def _replicate(self, rec: Record, subject: str) -> list[str]:
        """Bring every replica in step with approved/ for this tag; returns the lagging ones."""
        lagging = []
        approved = self._approved(rec.name)
        for endpoint, client in self._replicas:
            current = next((st for st in rec.replicas if st.registry == endpoint.name), None)
            try:
                if rec.promoted_digest is None:
                    if current is not None and current.digest:
                        self.progress.step(subject, f"removing from {endpoint.name}")
                        removed = self.copier.demote(client, approved, current.digest)
                        self._event(
                            rec, "unreplicated", f"{_removal(current.digest, removed)} from {endpoint.name}"
                        )
                        current.digest, current.copied_at, current.lagging = None, None, False
                    continue
                copy = replicate.needs_copy(rec, endpoint.name)
                people = {
                    n: self.catalog.signers[n]
                    for n in replicate.people(rec, self.settings.signing.signer)
                    if n in self.catalog.signers
                }
                if not copy and not people:
                    continue
                signer = self.signer
                if copy and signer is None:
                    raise SyncerError(f"cannot sign: {self.signer_problem}")
                if copy:
                    self.progress.step(subject, f"replicating to {endpoint.name}")
                # What a person's signature names: the trusted registry (core.trusted.signed_identity).
                identity = f"{self.settings.target.registry}/{approved}"
                with self._writing(endpoint.name, approved):
                    # People's signatures before the image, as the pipeline's own: a replica
                    # never serves the tag without them. Without anything new: two GETs.
                    carried = (
                        self.copier.copy_signatures(
                            self._target_client, client, approved, rec.promoted_digest, identity, people
                        )
                        if people
                        else []
                    )
                    if copy and signer is not None:
                        replicate.push_to_replica(
                            self._target,
                            endpoint,
                            client,
                            signer,
                            self.copier,
                            approved,
                            rec.promoted_digest,
                            rec.tag,
                        )
                if carried:
                    self._event(
                        rec,
                        "replicated",
                        f"signature of {', '.join(carried)} on {rec.promoted_digest} copied to "
                        f"{endpoint.name} unchanged (it names {identity})",
                    )
                if not copy or signer is None:
                    continue
                state = replicate.replica_state(rec, endpoint.name)
                state.digest, state.copied_at, state.lagging = rec.promoted_digest, now_iso(), False
                self._event(
                    rec,
                    "replicated",
                    f"{rec.promoted_digest} to {endpoint.name}, signed by {signer.name}",
                )
            except SyncerError as err:
                state = replicate.replica_state(rec, endpoint.name)
                if not state.lagging:
                    self._event(rec, "lagging", f"{endpoint.name}: {err}")
                state.lagging = True
                lagging.append(f"{endpoint.name} ({err})")
        return lagging

    def _promote(self, rec: Record, subject: str, approval: Approval | None) -> None:
        if self.signer is None:
            raise SyncerError(f"cannot sign: {self.signer_problem}; nothing is promoted unsigned")
        approved = self._approved(rec.name)
        # Sign first: the signature is a separate .sig tag, so if signing fails nothing has
        # reached approved/, and an image never sits there unsigned.
        self.progress.step(subject, "signing")
        identity = f"{self.settings.target.registry}/{approved}"
        with self._writing(self._target.name, approved):
            try:
                self.signer.sign(self._target_client, approved, rec.digest, identity)
            except SigningError as err:
                raise SigningError(f"cannot sign: {err}; nothing is promoted unsigned") from None
            self.progress.step(subject, "promoting")
            self.copier.promote(
                self._target, self._target_client, self._quarantine(rec.name), approved, rec.digest, rec.tag
            )
        if rec.promoted_digest != rec.digest:
            # Signatures belong to a digest: approvals of the one approved before do not carry over.
            rec.signatures = []
        rec.promoted_digest = rec.digest
        if self.signer.name not in rec.signatures:
            rec.signatures = sorted({*rec.signatures, self.signer.name})
        detail = f"{rec.digest} to {identity}:{rec.tag}, signed by {self.signer.name}"
        self._event(rec, "promoted", detail + (policy_mod.approval_text(approval) if approval else ""))
