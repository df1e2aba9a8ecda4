"""Typed domain model shared by every stage.

Data flows one way: catalog -> plan -> stages -> records -> reports. The catalog
types are produced by ``syncer.catalog``; the scan types by ``syncer.stages.scan``;
``Record`` is what ``syncer.trail.ledger`` reads and writes under ``reports/records/``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Literal, get_args

# Strings that stand for a choice; each tuple lists the choices for the readers that check them.
ApprovalMode = Literal["auto", "manual"]
RegressionAction = Literal["flag", "demote"]  # what happens to an approved digest a scan fails
UnassessedAction = Literal["hold", "allow"]  # package data the vulnerability database cannot match
EventKind = Literal[
    "discovered",
    "moved",
    "mirrored",
    "scanned",
    "promoted",
    "held",
    "flagged",
    "demoted",
    "cleared",
    "failed",
    "vanished",
    "replicated",
    "unreplicated",
    "lagging",
    "signed",
]
APPROVAL_MODES: tuple[ApprovalMode, ...] = get_args(ApprovalMode)
REGRESSION_ACTIONS: tuple[RegressionAction, ...] = get_args(RegressionAction)
UNASSESSED_ACTIONS: tuple[UnassessedAction, ...] = get_args(UnassessedAction)
EVENT_KINDS: tuple[EventKind, ...] = get_args(EventKind)


class Severity(enum.IntEnum):
    """Trivy's severities, ordered so that a larger value is worse."""

    UNKNOWN = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, text: str) -> Severity:
        return cls[text.strip().upper()]

    @property
    def key(self) -> str:
        """The lower-case name used in policies and records (``critical``)."""
        return self.name.lower()


class State(str, enum.Enum):
    MIRRORED = "mirrored"
    SCANNED = "scanned"
    PROMOTED = "promoted"
    HELD = "held"
    FLAGGED = "flagged"
    DEMOTED = "demoted"
    FAILED = "failed"


# --- catalog -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """Where a catalog value was written, for error messages (file relative to the repo)."""

    file: str
    line: int  # 1-based; 0 when unknown

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True)
class Auth:
    """Names of the environment variables holding credentials; never the values."""

    username_env: str | None = None
    password_env: str | None = None


@dataclass(frozen=True)
class RegistryEndpoint:
    registry: str  # host[:port]
    tls_verify: bool = True
    auth: Auth = field(default_factory=Auth)
    ca_dir: str | None = None  # directory with ca.crt for a private CA (catalog key `ca_dir`)


@dataclass(frozen=True)
class Target:
    registry: str
    quarantine: str = "quarantine"
    approved: str = "approved"
    tls_verify: bool = True
    auth: Auth = field(default_factory=Auth)
    ca_dir: str | None = None  # directory with ca.crt for a private CA (catalog key `ca_dir`)


@dataclass(frozen=True)
class Source:
    """Per upstream registry host settings (``sources:`` in settings.yaml)."""

    host: str  # the upstream host as written in references, e.g. docker.io
    endpoint: str | None = None  # host[:port] actually contacted
    tls_verify: bool = True
    auth: Auth = field(default_factory=Auth)
    min_remaining_pulls: int | None = None
    ca_dir: str | None = None  # directory with ca.crt for a private CA (catalog key `ca_dir`)
    concurrency: int | None = None  # requests in flight; None: registry.DEFAULT_CONCURRENCY


@dataclass(frozen=True)
class Signing:
    signer: str = "ci"
    key_env: str = "SYNCER_SIGNING_KEY"
    passphrase_env: str = "SYNCER_SIGNING_PASSPHRASE"


# What a webhook may ask to be told about: a tag's new state, or a failure.
WEBHOOK_EVENTS = ("promoted", "held", "flagged", "demoted", "failed")


@dataclass(frozen=True)
class Webhook:
    """Where a run POSTs its events: the URL is a secret (a Slack webhook's path is its key),
    so the catalog names only the environment variable holding it."""

    url_env: str
    events: tuple[str, ...]
    location: Location | None = None


@dataclass(frozen=True)
class Settings:
    target: Target
    sources: dict[str, Source] = field(default_factory=dict)
    replicas: tuple[RegistryEndpoint, ...] = ()
    signing: Signing = field(default_factory=Signing)
    default_policy: str = "default"
    content_admins: tuple[str, ...] = ()
    webhooks: tuple[Webhook, ...] = ()
    location: Location | None = None


@dataclass(frozen=True)
class ImageEntry:
    source: str  # normalised: docker.io/library/nginx
    name: str  # repository under quarantine/ and approved/
    tags: tuple[str, ...] = ()
    match: str | None = None
    exclude: tuple[str, ...] = ()
    newest: int | None = None
    platforms: tuple[str, ...] = ()  # empty: all
    policy: str = "default"
    owners: tuple[str, ...] = ()
    location: Location | None = None
    # Where each explicit tag is written, so that a tag missing upstream is named at its line.
    tag_locations: tuple[tuple[str, Location], ...] = ()

    @property
    def source_host(self) -> str:
        return self.source.split("/", 1)[0]

    @property
    def source_path(self) -> str:
        return self.source.split("/", 1)[1]


@dataclass(frozen=True)
class Policy:
    name: str
    max: dict[Severity, int] = field(default_factory=dict)  # absent severity: unlimited
    ignore_unfixed: bool = False
    deny_licenses: tuple[str, ...] = ()
    max_age_days: int | None = None
    approval: ApprovalMode = "auto"
    signers: tuple[str, ...] = ()
    on_regression: RegressionAction = "flag"
    unassessed: UnassessedAction = "hold"  # images with package data Trivy could not match
    # Image owners who may name this policy in files they own; the default policy needs none.
    teams: tuple[str, ...] = ()
    location: Location | None = None


@dataclass(frozen=True)
class VulnException:
    vulnerability: str
    images: tuple[str, ...]  # catalog names, fnmatch globs
    expires: date
    reason: str
    location: Location | None = None


@dataclass(frozen=True)
class Approval:
    image: str
    digest: str
    by: str
    reason: str = ""
    location: Location | None = None


@dataclass(frozen=True)
class AccessGroup:
    name: str
    members: tuple[str, ...] = ()
    pull: tuple[str, ...] = ()  # repository globs
    push: tuple[str, ...] = ()
    location: Location | None = None


@dataclass(frozen=True)
class Catalog:
    root: str  # the catalog directory
    settings: Settings
    images: tuple[ImageEntry, ...] = ()
    policies: dict[str, Policy] = field(default_factory=dict)
    exceptions: tuple[VulnException, ...] = ()
    approvals: tuple[Approval, ...] = ()
    access: tuple[AccessGroup, ...] = ()
    signers: dict[str, str] = field(default_factory=dict)  # name -> PEM public key

    def image(self, name: str) -> ImageEntry | None:
        return next((i for i in self.images if i.name == name), None)

    def policy_for(self, entry: ImageEntry) -> Policy:
        return self.policies[entry.policy]


# --- scanning ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    id: str  # CVE-2024-1234, GHSA-…
    package: str
    installed: str
    fixed: str | None  # None: no fixed version known
    severity: Severity
    status: str = ""  # Trivy's status: fixed, affected, will_not_fix, …
    title: str = ""
    platform: str = ""  # linux/amd64 for an index; "" for a single image
    # The advisory's page as Trivy gives it (PrimaryURL), http(s) only. A reference about the
    # finding, not part of what was found: two findings differing only in it are the same.
    url: str = field(default="", compare=False)


@dataclass(frozen=True)
class LicenseFinding:
    license: str  # SPDX id as Trivy reports it
    package: str
    platform: str = ""


@dataclass(frozen=True)
class PlatformScan:
    """What a scan covered of one image manifest: a child of an index, or the image itself.

    A result counts only for the manifests it names here (by digest), so a scan of one
    platform can never stand in for another."""

    digest: str  # the image manifest analysed
    platform: str = ""  # the label its findings carry: os/arch[/variant]; "" for a single image
    created: datetime | None = None  # its config's 'created'
    os: str = ""  # what Trivy detected: "debian 12.8"; "none": packages but no OS release; "": no OS
    packages: tuple[str, ...] = ()  # Trivy's package types found: debian, python-pkg, jar …
    unassessed: tuple[str, ...] = ()  # package data found that the database cannot match
    problem: str = ""  # why this manifest could not be scanned at all (nested index, not an image)


@dataclass(frozen=True)
class ScanResult:
    digest: str  # the digest that was scanned (index digest for multi-platform images)
    scanner: str  # "trivy 0.76.0"
    db_updated_at: str  # the vulnerability database's UpdatedAt, ISO 8601
    scanned_at: str  # ISO 8601, UTC
    findings: tuple[Finding, ...] = ()
    licenses: tuple[LicenseFinding, ...] = ()
    created: datetime | None = None  # oldest image config 'created' among scanned platforms
    covered: tuple[PlatformScan, ...] = ()  # every image manifest the findings are of
    # The catalog entry's `platforms` the scan was made for; () means every image of the index.
    selection: tuple[str, ...] = ()
    artifact: str = ""  # config media type of an OCI artifact that is not a container image

    @property
    def platforms(self) -> tuple[str, ...]:
        """Labels of the platforms covered (empty for a single image)."""
        return tuple(c.platform for c in self.covered if c.platform)

    def fits(self, digest: str, selection: tuple[str, ...]) -> bool:
        """Whether this result is of ``digest`` and covers what an entry selecting ``selection``
        requires. A result without coverage (written before coverage was recorded) fits nothing."""
        return (
            self.digest == digest
            and sorted(self.selection) == sorted(selection)
            and bool(self.covered or self.artifact)
        )


# --- ledger --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    at: str  # ISO 8601 UTC, seconds precision
    event: EventKind
    detail: str = ""


@dataclass
class ReplicaState:
    registry: str
    digest: str | None = None
    copied_at: str | None = None
    lagging: bool = False


@dataclass
class Record:
    name: str
    tag: str
    source: str  # upstream reference with digest: docker.io/library/nginx:1.27.3@sha256:…
    digest: str
    state: State
    reasons: list[str] = field(default_factory=list)
    scan: ScanResult | None = None
    signatures: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    replicas: list[ReplicaState] = field(default_factory=list)
    promoted_digest: str | None = None  # what approved/<name>:<tag> holds now, if anything

    def copy(self) -> Record:
        """A copy to change without changing this one. Cheaper than ``copy.deepcopy`` (a no-op
        run copies every record): scan results and events are immutable, so only the lists
        and the replica states are copied."""
        return replace(
            self,
            reasons=list(self.reasons),
            signatures=list(self.signatures),
            events=list(self.events),
            replicas=[replace(r) for r in self.replicas],
        )


@dataclass(frozen=True)
class ReplicaSummary:
    registry: str
    digest: str | None = None
    lagging: bool = False


@dataclass(frozen=True)
class ScanSummary:
    """What the ledger index keeps of a tag's scan: when it was last confirmed (which a
    re-scan with the same result changes in the index only) and what it counts."""

    digest: str  # the digest that was scanned
    result: str  # the key of the stored result (reports/scans/...): its content hash
    scanner: str
    db_updated_at: str  # of the last scan that confirmed the result
    scanned_at: str
    selection: tuple[str, ...] = ()  # as ScanResult.selection
    usable: bool = True  # covered something or is an artifact (ScanResult.fits's last term)
    created: datetime | None = None  # as ScanResult.created: for a policy's max_age_days
    counts: dict[str, int] = field(default_factory=dict, compare=False)  # severity key -> count

    def fits(self, digest: str, selection: tuple[str, ...]) -> bool:
        """Same rule as ``ScanResult.fits``."""
        return self.digest == digest and sorted(self.selection) == sorted(selection) and self.usable


@dataclass(frozen=True)
class IndexEntry:
    """One tracked tag in the compact ledger index (``reports/ledger.json``): what a plan, a
    no-op run and the index page need, so that they never read the full record. It is derived
    from the record (and its stored scan) and checked against them by ``record_key`` (the
    record file's content hash) and ``scan.result``."""

    name: str
    tag: str
    digest: str
    state: State
    record_key: str  # content hash of the record file this entry was made from
    source: str = ""
    promoted_digest: str | None = None
    signatures: tuple[str, ...] = ()
    replicas: tuple[ReplicaSummary, ...] = ()
    mirrored: bool = False  # plan.was_mirrored(record): the current digest reached quarantine
    vanished: bool = False  # the last upstream event of the record is "vanished"
    reason: str = ""  # the first reason, shortened; the record has them all
    reasons: int = 0  # how many reasons the record has
    last_change: str = ""  # time of the record's last event
    scan: ScanSummary | None = None
    # Fingerprint of the decision's inputs (policy, exceptions and approvals as they apply
    # that day, the scan result) when the run last evaluated the tag; "" for never. Equal
    # inputs give an equal decision, so a no-op need not read the record to re-decide.
    decided: str = ""


@dataclass(frozen=True)
class RateLimit:
    """Docker Hub's pull budget from ``ratelimit-limit``/``ratelimit-remaining``."""

    limit: int
    remaining: int
    window: int | None  # seconds, from ``;w=``


@dataclass(frozen=True)
class UpstreamTag:
    name: str  # catalog name
    tag: str
    digest: str
    media_type: str
    source: str  # upstream reference with digest: docker.io/library/nginx:1.27.3@sha256:…


@dataclass
class EntryDiscovery:
    entry: ImageEntry
    tags: list[UpstreamTag] = field(default_factory=list)
    listed: frozenset[str] | None = None  # the upstream tag list, when it was listed
    errors: list[str] = field(default_factory=list)  # for the entry as a whole or one tag
    warnings: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # explicit tags upstream does not have
    ratelimit: RateLimit | None = None
