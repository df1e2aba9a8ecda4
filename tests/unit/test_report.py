"""Markdown reports: deterministic, readable with many findings, safe with hostile text."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from syncer.catalog import load_catalog
from syncer.core.model import Event, Finding, Record, ReplicaState, ScanResult, Severity, State
from syncer.trail import report
from syncer.trail.ledger import Ledger

DIGEST = "sha256:" + "ab" * 32


def _record(findings, **kw) -> Record:
    scan = ScanResult(
        digest=DIGEST,
        scanner="trivy 0.76.0",
        db_updated_at="2026-11-01T00:00:00Z",
        scanned_at="2026-11-02T00:00:00Z",
        findings=tuple(findings),
    )
    base = dict(
        name="team/app",
        tag="1.0",
        source=f"docker.io/team/app:1.0@{DIGEST}",
        digest=DIGEST,
        state=State.HELD,
        reasons=["3 critical vulnerabilities (max 0): …"],
        scan=scan,
        events=[Event("2026-11-02T00:00:00Z", "discovered", "x"), Event("2026-11-02T00:00:01Z", "held", "y")],
    )
    base.update(kw)
    return Record(**base)


def _findings(n):
    sev = list(Severity)
    return [
        Finding(
            id=f"CVE-2026-{i:05d}",
            package=f"pkg{i % 17}",
            installed="1.0",
            fixed=None if i % 5 else "1.1",
            severity=sev[i % len(sev)],
            title="t",
        )
        for i in range(n)
    ]


def test_two_hundred_findings_render_sorted_and_collapsed():
    [(_, page)] = report.render_image("team/app", [_record(_findings(200))], None)
    rows = [line for line in page.splitlines() if line.startswith("| ") and "CVE-2026-" in line]
    assert len(rows) == 200
    order = [row.split(" | ")[0].strip("| ") for row in rows]
    assert order == sorted(order, key=lambda s: -Severity[s])  # worst first
    assert "<details><summary>200 findings" in page  # collapsed: the page stays scannable
    assert "no fix yet" in page
    assert page.count("[Back to the index](../../README.md)") == 1  # nested name, right link depth


def test_hostile_upstream_text_cannot_break_the_tables():
    evil = Finding(id="CVE-1|<script>", package="a|b\nc", installed="1", fixed="2", severity=Severity.HIGH)
    [(_, page)] = report.render_image("team/app", [_record([evil])], None)
    row = next(line for line in page.splitlines() if "CVE-1" in line)
    assert "<script>" not in page and "\\|" in row and row.count(" | ") == 5  # and the policy column


def test_rendering_is_deterministic_and_regenerates_byte_for_byte(tmp_path):
    catalog_dir = shutil.copytree(Path(__file__).resolve().parents[2] / "catalog", tmp_path / "catalog")
    catalog = load_catalog(str(catalog_dir))
    reports = tmp_path / "reports"
    ledger = Ledger(str(reports))
    ledger.save(
        _record(
            _findings(12),
            state=State.PROMOTED,
            promoted_digest=DIGEST,
            signatures=["ci"],
            replicas=[ReplicaState("eu.example.com", DIGEST, "2026-11-02T00:00:02Z")],
        )
    )
    ledger.save(
        _record(
            [],
            name="alpine",
            tag="3.20",
            source=f"docker.io/library/alpine:3.20@{DIGEST}",
            state=State.PROMOTED,
            promoted_digest=DIGEST,
        )
    )
    pages = ("README.md", "images/alpine.md", "images/team/app.md", "pages.json")
    first = report.regenerate(ledger, catalog, str(reports))
    assert sorted(first) == sorted(str(reports / p) for p in pages)
    snapshot = {p: (reports / p).read_bytes() for p in pages}
    assert report.regenerate(Ledger(str(reports)), catalog, str(reports)) == []  # nothing rewritten
    # alpine's policy (default) requires ci, which has not signed it: its page and the index say so.
    alpine_row = next(line for line in snapshot["images/alpine.md"].decode().splitlines() if "`3.20`" in line)
    cells = [c.strip() for c in alpine_row.strip("|").split("|")]
    assert cells[8:10] == ["—", "ci"], cells  # signed by nobody, missing ci
    assert (
        "- [alpine `3.20`](images/alpine.md#tag-3-20) — missing signers: ci" in snapshot["README.md"].decode()
    )
    assert "1/1 in step" in snapshot["images/team/app.md"].decode()

    shutil.rmtree(reports / "images")
    (reports / "README.md").unlink()
    proc = subprocess.run(
        [sys.executable, "-m", "syncer", "report", "--catalog", str(catalog_dir), "--reports", str(reports)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert {p: (reports / p).read_bytes() for p in pages} == snapshot


def test_advisories_link_trivys_url_else_the_issuers_page_and_nothing_else():
    def url(id_: str, given: str = "") -> str:
        return report.advisory_url(
            Finding(id=id_, package="p", installed="1", fixed=None, severity=Severity.LOW, url=given)
        )

    assert (
        url("CVE-2024-1234", "https://avd.aquasec.com/nvd/cve-2024-1234")
        == "https://avd.aquasec.com/nvd/cve-2024-1234"
    )
    # Records written before URLs were kept: the id's own issuer.
    assert url("CVE-2024-1234") == "https://nvd.nist.gov/vuln/detail/CVE-2024-1234"
    assert url("GHSA-9wx4-h78v-vm56") == "https://github.com/advisories/GHSA-9wx4-h78v-vm56"
    assert url("DSA-5555-1") == "https://security-tracker.debian.org/tracker/DSA-5555-1"
    assert url("DLA-3682-1") == "https://security-tracker.debian.org/tracker/DLA-3682-1"
    assert url("TEMP-0841856-B18BAF") == "https://security-tracker.debian.org/tracker/TEMP-0841856-B18BAF"
    assert url("CVE-2024-1234", "javascript:alert(1)") == "https://nvd.nist.gov/vuln/detail/CVE-2024-1234"
    assert url("NOT-AN-ID", "javascript:alert(1)") == ""
    assert url("CVE-1|<script>") == ""
    [(_, page)] = report.render_image(
        "team/app",
        [
            _record(
                [
                    Finding(
                        id="CVE-2024-1234",
                        package="p",
                        installed="1",
                        fixed="2",
                        severity=Severity.HIGH,
                        title="t [x](https://evil.example)",
                    )
                ]
            )
        ],
        None,
    )
    assert (
        "| [CVE-2024-1234](https://nvd.nist.gov/vuln/detail/CVE-2024-1234) t \\[x\\](https\\://evil.example) |"
        in page
    )


def _report(catalog_dir, reports) -> dict:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "syncer",
            "report",
            "--json",
            "--catalog",
            str(catalog_dir),
            "--reports",
            str(reports),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_report_renders_only_the_pages_of_what_changed(tmp_path):
    catalog_dir = shutil.copytree(Path(__file__).resolve().parents[2] / "catalog", tmp_path / "catalog")
    reports = tmp_path / "reports"
    ledger = Ledger(str(reports))
    ledger.index()  # as a run does: the index is loaded before records are saved, then flushed
    for name in ("team/app", "alpine"):
        for tag in ("1.2.0", "1.10.0"):
            ledger.save(_record(_findings(30), name=name, tag=tag, source=f"docker.io/{name}:{tag}@{DIGEST}"))
    ledger.flush()
    first = _report(catalog_dir, reports)
    assert first["records"] == 4 and str(reports / "images/team/app.md") in first["written"]
    assert _report(catalog_dir, reports)["written"] == []  # an unchanged tree renders nothing

    ledger = Ledger(str(reports))
    ledger.index()
    rec = ledger.load("team/app", "1.10.0")
    rec.state, rec.promoted_digest, rec.reasons = State.PROMOTED, DIGEST, []
    rec.events.append(Event("2026-11-03T00:00:00Z", "promoted", "approved"))
    ledger.save(rec)
    ledger.flush()
    written = _report(catalog_dir, reports)["written"]
    assert sorted(written) == sorted(
        str(reports / p) for p in ("README.md", "images/team/app.md", "pages.json")
    )

    # From scratch, the same bytes.
    pages = [*sorted(reports.rglob("*.md")), reports / "pages.json"]
    snapshot = {p: p.read_bytes() for p in pages}
    for p in pages:
        p.unlink()
    _report(catalog_dir, reports)
    assert {p: p.read_bytes() for p in pages} == snapshot
    page = snapshot[reports / "images/team/app.md"].decode()
    assert page.index("## `1.2.0`") < page.index("## `1.10.0`")  # tags sort as versions


def test_a_rescan_with_the_same_result_renders_the_index_only(tmp_path):
    reports = tmp_path / "reports"
    ledger = Ledger(str(reports))
    ledger.index()
    for tag in ("1.0", "1.1"):
        ledger.save(_record(_findings(5), tag=tag))
    ledger.flush()
    report.regenerate(ledger, None, str(reports))
    page = (reports / "images/team/app.md").read_bytes()
    assert b"database of 2026-11-01T00:00:00Z, scanned 2026-11-02T00:00:00Z" in page

    # A newer database confirmed both tags' result: the index says so, the image page stays.
    ledger = Ledger(str(reports))
    for tag in ("1.0", "1.1"):
        assert ledger.touch_scan(
            "team/app",
            tag,
            scanner="trivy 0.77.0",
            db_updated_at="2026-12-01T00:00:00Z",
            scanned_at="2026-12-02T00:00:00Z",
        )
    assert ledger.load("team/app", "1.0").scan.db_updated_at == "2026-12-01T00:00:00Z"
    assert ledger.load("team/app", "1.0", confirmed=False).scan.db_updated_at == "2026-11-01T00:00:00Z"
    written = report.regenerate(ledger, None, str(reports))
    assert sorted(written) == [str(reports / "README.md"), str(reports / "pages.json")]
    assert (reports / "images/team/app.md").read_bytes() == page
    assert "| 2026-12-01T00:00:00Z |" in (reports / "README.md").read_text()


def test_migrating_a_format_1_ledger_changes_only_what_migration_decides(tmp_path):
    catalog_dir = shutil.copytree(Path(__file__).resolve().parents[2] / "catalog", tmp_path / "catalog")
    catalog = load_catalog(str(catalog_dir))
    reports = shutil.copytree(Path(__file__).parent.parent / "data" / "ledger_format1", tmp_path / "reports")
    (reports / "README.md").unlink()  # the fixture's description, not a page
    report.regenerate(Ledger(str(reports)), catalog, str(reports))
    before = {str(p.relative_to(reports)): p.read_text() for p in reports.rglob("*.md")}
    assert len(before) == 5  # the index and four image pages

    assert Ledger(str(reports)).migrate() == 7
    report.regenerate(Ledger(str(reports)), catalog, str(reports))
    after = {str(p.relative_to(reports)): p.read_text() for p in reports.rglob("*.md")}
    assert after.keys() == before.keys()
    changed = sorted(p for p in after if after[p] != before[p])
    # Pages show the scan that first found a result: redis 7.2 shares its digest's result,
    # which 7.2.4's earlier scan found; nginx 1.27's older result lost to 1.27.3's newer one
    # (the ledger's migration rule), so 1.27 shows that result. Nothing else changes.
    assert changed == ["images/bitnami/redis.md", "images/nginx.md"]
    redis = before["images/bitnami/redis.md"]
    row = next(line for line in redis.splitlines() if line.startswith("| [`7.2`]"))
    first_scan = redis.replace(row, row.replace("2026-03-02T07:00:00Z", "2026-03-01T10:00:00Z")).replace(
        "database of 2026-03-02T06:00:00Z, scanned 2026-03-02T07:00:00Z",
        "database of 2026-02-28T06:00:00Z, scanned 2026-03-01T10:00:00Z",
    )
    assert after["images/bitnami/redis.md"] == first_scan
    old_tag, old_rest = _tag_1_27(before["images/nginx.md"])
    new_tag, new_rest = _tag_1_27(after["images/nginx.md"])
    assert old_rest == new_rest and old_tag != new_tag  # only the row and the section of 1.27 change
    assert "1 finding (1 low)" in after["images/nginx.md"].split("## `1.27` —")[1].split("## ")[0]


def _tag_1_27(page: str) -> tuple[str, str]:
    """nginx 1.27's row and section, and the page without them."""
    lines = page.splitlines(keepends=True)
    row = "".join(x for x in lines if x.startswith("| [`1.27`]"))
    head, _, rest = page.partition("## `1.27` —")
    section, sep, tail = rest.partition("\n## ")
    return row + section, head.replace(row, "") + sep + tail
