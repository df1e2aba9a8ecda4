"""Ledger records in the format main wrote before issue 16 (commit 48582ff, "format 1": the
scan's findings inline in every record), written as text without syncer's own writer.

The benchmark of issue 16 starts from a ledger of tens of thousands of such records, which the
code under test migrates; generating them through ``syncer.trail.ledger`` would make the
starting point depend on the code being measured (and take a ruamel round trip each, about
60 ms). The text here is what 48582ff's writer (ruamel, ``_record_doc`` and ``_represent_str``)
gives for a promoted tag: ``tests/unit/test_ledger_records.py`` holds it to a record that code
wrote, byte for byte, and ``tests/e2e/test_ledger_records_e2e.py`` to what a real run records
for the same images. Only promoted, unreplicated tags of single-platform images are written:
what an organisation's trail mostly holds, and all the benchmark needs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import yaml

from syncer.demo.images import DEFAULT_CREATED, Image, alpine_files, build_image
from syncer.demo.trivydb import Advisory

# The quoting rule of 48582ff's writer (syncer/trail/ledger.py, _NEEDS_QUOTES and
# _represent_str): a string is single-quoted when it holds one of these characters, starts
# with '-' or '?', ends in white space, or reads as something else than a string in YAML 1.1.
_NEEDS_QUOTES = re.compile(r"[:#,\[\]{}&*!|>'\"%@`]|^[-?]|\s$")
_YAML11 = yaml.resolver.Resolver()
SEVERITIES = ("critical", "high", "medium", "low", "unknown")  # worst first, as records count them


def scalar(text: str) -> str:
    """``text`` as the writer puts a string: plain, or single-quoted."""
    plain_elsewhere = _YAML11.resolve(yaml.ScalarNode, text, (True, False)) != "tag:yaml.org,2002:str"
    if text and not _NEEDS_QUOTES.search(text) and not plain_elsewhere:
        return text
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class Finding:
    """One finding as Trivy reports it against an Alpine package (status ``fixed``)."""

    id: str
    package: str
    installed: str
    fixed: str
    severity: str  # one of SEVERITIES
    title: str
    url: str

    def order(self) -> tuple[int, str, str, str]:
        # The writer's finding order: worst first, then id, package, installed version.
        return (SEVERITIES.index(self.severity), self.id, self.package, self.installed)

    def text(self) -> str:
        return (
            f"{{id: {scalar(self.id)}, package: {scalar(self.package)}, "
            f"installed: {scalar(self.installed)}, fixed: {scalar(self.fixed)}, "
            f"severity: {self.severity}, status: fixed, title: {scalar(self.title)}, "
            f"url: {scalar(self.url)}}}"
        )


@dataclass(frozen=True)
class ImageScan:
    """What a scan of one single-platform image found, whichever tag it is under."""

    digest: str
    created: str  # the image config's time, ISO 8601 UTC with Z
    os: str  # e.g. "alpine 3.20.3"
    ecosystems: tuple[str, ...]  # Trivy's package types, e.g. ("alpine",)
    findings: tuple[Finding, ...]

    def counts(self) -> dict[str, int]:
        return {s: sum(f.severity == s for f in self.findings) for s in SEVERITIES}


@dataclass(frozen=True)
class Scan:
    """One scan of a tag: when, and against which database."""

    scanned_at: str
    db_updated_at: str


@dataclass(frozen=True)
class PromotedTag:
    """A tag discovered, mirrored, scanned, promoted and signed, then re-scanned after each
    newer database in ``scans[1:]`` with the same result (a "scanned" event each)."""

    name: str  # catalog name
    tag: str
    upstream: str  # e.g. docker.io/library/nginx
    image: ImageScan
    scanner: str  # e.g. "trivy 0.76.0"
    approved: str  # the signed identity's repository, e.g. registry.example/approved/nginx
    signer: str
    discovered_at: str
    mirrored_at: str
    promoted_at: str
    scans: tuple[Scan, ...]  # the first before the promotion, the last is the record's scan
    # Mirrored by tagging the digest another tag of the image brought into quarantine.
    from_quarantine: bool = False


def _event(at: str, kind: str, detail: str) -> str:
    return f"  - at: {scalar(at)}\n    event: {kind}\n    detail: {scalar(detail)}\n"


def record_text(t: PromotedTag) -> str:
    """The record file of ``t`` as 48582ff's ``Ledger.save`` writes it."""
    image, digest, last = t.image, t.image.digest, t.scans[-1]
    source = f"{t.upstream}:{t.tag}@{digest}"
    counts = image.counts()
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no vulnerabilities"

    def scanned(scan: Scan) -> str:
        return _event(
            scan.scanned_at,
            "scanned",
            f"{digest} with {t.scanner}, database {scan.db_updated_at}: {summary}",
        )

    findings = "".join(f"    - {f.text()}\n" for f in sorted(image.findings, key=Finding.order))
    return (
        f"name: {scalar(t.name)}\n"
        f"tag: {scalar(t.tag)}\n"
        f"source: {scalar(source)}\n"
        f"digest: {scalar(digest)}\n"
        "state: promoted\n"
        "reasons: []\n"
        "scan:\n"
        f"  digest: {scalar(digest)}\n"
        f"  scanner: {scalar(t.scanner)}\n"
        f"  db_updated_at: {scalar(last.db_updated_at)}\n"
        f"  scanned_at: {scalar(last.scanned_at)}\n"
        "  platforms: []\n"
        "  selection: all\n"
        f"  created: {scalar(image.created)}\n"
        "  covered:\n"
        f"    - {{digest: {scalar(digest)}, platform: '', created: {scalar(image.created)}, "
        f"os: {scalar(image.os)}, packages: [{', '.join(scalar(e) for e in image.ecosystems)}]}}\n"
        f"  counts: {{{', '.join(f'{s}: {n}' for s, n in counts.items())}}}\n"
        + ("  findings:\n" + findings if findings else "  findings: []\n")
        + "  licenses: []\n"
        f"signatures: [{scalar(t.signer)}]\n"
        "replicas: []\n"
        f"promoted_digest: {scalar(digest)}\n"
        "events:\n"
        + _event(t.discovered_at, "discovered", source)
        + _event(
            t.mirrored_at,
            "mirrored",
            f"{digest} (tagged from quarantine: no upstream pull)" if t.from_quarantine else digest,
        )
        + scanned(t.scans[0])
        + _event(t.promoted_at, "promoted", f"{digest} to {t.approved}:{t.tag}, signed by {t.signer}")
        + "".join(scanned(s) for s in t.scans[1:])
    )


# --- the benchmark's images -----------------------------------------------------------------

ALPINE_OS = "alpine 3.20.3"  # what Trivy reports for alpine_files' release
BASE = (("musl", "1.2.5-r0", "musl"), ("busybox", "1.36.1-r29", "busybox"))


def advisories(count: int) -> tuple[Advisory, ...]:
    """Medium and low advisories (the policies allow them) of packages pkg0 … pkg<count-1>,
    fixed in a version newer than any image here has: every image finds ``count``."""
    return tuple(
        Advisory(
            f"CVE-2020-{1000 + j}",
            "alpine 3.20",
            f"pkg{j}",
            "MEDIUM" if j % 2 else "LOW",
            "9.0.0-r0",
            title=f"pkg{j}: an out-of-bounds read in the parser of a benchmark package",
        )
        for j in range(count)
    )


@dataclass(frozen=True)
class BenchImage:
    """An Alpine image listing pkg0 … pkg<count-1> at version 1.<k>.0-r0 (plus ``extra``
    packages), so that each ``k`` is a distinct digest with the same findings."""

    image: Image
    packages: tuple[tuple[str, str, str], ...]

    @classmethod
    def build(cls, k: int, count: int, extra: Sequence[tuple[str, str, str]] = ()) -> BenchImage:
        packages = (*BASE, *((f"pkg{j}", f"1.{k}.0-r0", f"pkg{j}") for j in range(count)), *extra)
        files = alpine_files(packages)
        files["etc/bench-id"] = f"{k}\n"
        return cls(build_image(files), packages)

    def scan(self, known: Sequence[Advisory]) -> ImageScan:
        """What Trivy finds in the image with a database of ``known`` advisories (each fixed
        in a version newer than the installed one, which the images here are built to be)."""
        installed = {origin: (name, version) for name, version, origin in self.packages}
        findings = tuple(
            Finding(
                id=a.id,
                package=installed[a.package][0],
                installed=installed[a.package][1],
                fixed=a.fixed_version or "",
                severity=a.severity.key,
                title=a.title,
                url=f"https://avd.aquasec.com/nvd/{a.id.lower()}",
            )
            for a in known
            if a.package in installed
        )
        return ImageScan(self.image.digest, DEFAULT_CREATED, ALPINE_OS, ("alpine",), findings)
