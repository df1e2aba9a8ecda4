"""Unit tests of the promotion decision: each rule alone, then rules together."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

from syncer.core.model import Approval, Finding, LicenseFinding, Policy, ScanResult, Severity, VulnException
from syncer.core.policy import Decision, Rule, count_by_severity, evaluate, unscannable

DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64
TODAY = date(2026, 3, 1)
STRICT = Policy(name="strict", max={Severity.CRITICAL: 0, Severity.HIGH: 0})


def finding(
    vid: str,
    severity: Severity = Severity.CRITICAL,
    package: str = "openssl",
    installed: str = "3.0.1",
    fixed: str | None = "3.0.2",
    platform: str = "",
) -> Finding:
    return Finding(
        id=vid, package=package, installed=installed, fixed=fixed, severity=severity, platform=platform
    )


def scan(
    *findings: Finding,
    licenses: tuple[LicenseFinding, ...] = (),
    created: datetime | None = None,
    digest: str = DIGEST,
) -> ScanResult:
    return ScanResult(
        digest=digest,
        scanner="trivy 0.76.0",
        db_updated_at="2026-02-28T00:00:00Z",
        scanned_at="2026-03-01T00:00:00Z",
        findings=findings,
        licenses=licenses,
        created=created,
    )


def exception(
    vid: str,
    images: tuple[str, ...] = ("nginx",),
    expires: date = date(2027, 1, 31),
    reason: str = "not reachable",
) -> VulnException:
    return VulnException(vulnerability=vid, images=images, expires=expires, reason=reason)


def decide(
    result: ScanResult,
    policy: Policy = STRICT,
    exceptions=(),
    approvals=(),
    name: str = "nginx",
    digest: str = DIGEST,
    today: date = TODAY,
) -> Decision:
    return evaluate(
        name=name,
        digest=digest,
        scan=result,
        policy=policy,
        exceptions=exceptions,
        approvals=approvals,
        today=today,
    )


# --- vulnerabilities -----------------------------------------------------------------------


def test_clean_scan_promotes_with_zero_counts():
    d = decide(scan())
    assert d.promote and d.reasons == () and d.failed == ()
    assert d.counts == {"critical": 0, "high": 0, "medium": 0, "low": 0, "unknown": 0}


def test_critical_over_max_holds_listing_ids_packages_and_fixes():
    d = decide(
        scan(finding("CVE-2024-2", package="zlib", installed="1.2.11", fixed=None), finding("CVE-2024-1"))
    )
    assert not d.promote and d.failed == (Rule.VULNERABILITIES,)
    assert d.reasons == (
        "2 critical vulnerabilities (max 0): CVE-2024-1 (openssl 3.0.1, fixed in 3.0.2), "
        "CVE-2024-2 (zlib 1.2.11, no fix yet)",
    )


def test_one_vulnerability_is_singular():
    d = decide(scan(finding("CVE-2024-1", Severity.HIGH)))
    assert d.reasons == ("1 high vulnerability (max 0): CVE-2024-1 (openssl 3.0.1, fixed in 3.0.2)",)


def test_id_in_several_packages_and_platforms_counts_once():
    d = decide(
        scan(
            finding("CVE-2024-1", package="openssl", platform="linux/amd64"),
            finding("CVE-2024-1", package="openssl", platform="linux/arm64"),
            finding("CVE-2024-1", package="libssl3", platform="linux/amd64"),
        )
    )
    assert d.counts["critical"] == 1
    assert d.reasons == (
        "1 critical vulnerability (max 0): CVE-2024-1 (libssl3 3.0.1, fixed in 3.0.2; "
        "openssl 3.0.1, fixed in 3.0.2)",
    )


def test_id_at_two_severities_counts_at_each():
    d = decide(
        scan(
            finding("CVE-2024-1", Severity.CRITICAL, package="a"),
            finding("CVE-2024-1", Severity.HIGH, package="b"),
        )
    )
    assert d.counts["critical"] == 1 and d.counts["high"] == 1
    assert [r.split(" (")[0] for r in d.reasons] == ["1 critical vulnerability", "1 high vulnerability"]


def test_at_max_promotes_and_above_holds():
    policy = Policy(name="p", max={Severity.HIGH: 2})
    two = scan(finding("CVE-1", Severity.HIGH), finding("CVE-2", Severity.HIGH))
    assert decide(two, policy).promote
    three = scan(*two.findings, finding("CVE-3", Severity.HIGH))
    assert decide(three, policy).reasons[0].startswith("3 high vulnerabilities (max 2): CVE-1 ")


def test_severity_absent_from_max_is_unlimited_but_counted():
    d = decide(scan(finding("CVE-1", Severity.MEDIUM), finding("CVE-2", Severity.UNKNOWN)))
    assert d.promote
    assert d.counts == {"critical": 0, "high": 0, "medium": 1, "low": 0, "unknown": 1}


def test_long_lists_are_truncated_with_and_n_more():
    d = decide(scan(*(finding(f"CVE-2024-{i:02d}") for i in range(13))))
    reason = d.reasons[0]
    assert reason.startswith("13 critical vulnerabilities (max 0): CVE-2024-00 (")
    assert "CVE-2024-09" in reason and "CVE-2024-10" not in reason
    assert reason.endswith(" and 3 more")


def test_many_packages_of_one_id_are_truncated():
    d = decide(scan(*(finding("CVE-1", package=f"pkg{i}") for i in range(5))))
    assert d.reasons[0].endswith("pkg2 3.0.1, fixed in 3.0.2 and 2 more)")


def test_ignore_unfixed_drops_findings_without_a_fix():
    policy = Policy(name="p", max={Severity.CRITICAL: 0}, ignore_unfixed=True)
    d = decide(scan(finding("CVE-1", fixed=None), finding("CVE-2", fixed="")), policy)
    assert d.promote and d.counts["critical"] == 0
    assert not decide(
        scan(finding("CVE-1", fixed=None)), Policy(name="p", max={Severity.CRITICAL: 0})
    ).promote


def test_ignore_unfixed_keeps_an_id_that_is_fixed_in_one_package():
    policy = Policy(name="p", max={Severity.CRITICAL: 0}, ignore_unfixed=True)
    d = decide(
        scan(finding("CVE-1", package="a", fixed=None), finding("CVE-1", package="b", fixed="2")), policy
    )
    assert d.reasons == ("1 critical vulnerability (max 0): CVE-1 (b 3.0.1, fixed in 2)",)


# --- exceptions ----------------------------------------------------------------------------


def test_exception_lets_a_vulnerability_through_and_says_so():
    d = decide(scan(finding("CVE-1")), exceptions=[exception("CVE-1")])
    assert d.promote and d.counts["critical"] == 0 and d.excepted == ("CVE-1",)
    assert d.reasons == ("exception for CVE-1 applied (expires 2027-01-31): not reachable",)


def test_exception_applies_only_to_matching_image_globs():
    exc = exception("CVE-1", images=("redis*", "bitnami/*"))
    assert decide(scan(finding("CVE-1")), exceptions=[exc], name="redis-stack").promote
    assert decide(scan(finding("CVE-1")), exceptions=[exc], name="bitnami/redis").promote
    held = decide(scan(finding("CVE-1")), exceptions=[exc], name="nginx")
    assert not held.promote and held.excepted == ()
    # Globs are case-sensitive like repository names.
    assert not decide(scan(finding("CVE-1")), exceptions=[exc], name="Redis").promote


def test_exception_for_another_id_does_not_apply():
    assert not decide(scan(finding("CVE-1")), exceptions=[exception("CVE-2")]).promote


def test_exception_expiring_today_still_applies():
    d = decide(scan(finding("CVE-1")), exceptions=[exception("CVE-1", expires=TODAY)])
    assert d.promote and d.expired_exceptions == ()


def test_expired_exception_does_not_apply_and_is_reported():
    d = decide(scan(finding("CVE-1")), exceptions=[exception("CVE-1", expires=TODAY - timedelta(days=1))])
    assert not d.promote and d.excepted == () and d.expired_exceptions == ("CVE-1",)
    assert d.reasons == (
        "1 critical vulnerability (max 0): CVE-1 (openssl 3.0.1, fixed in 3.0.2)",
        "exception for CVE-1 expired on 2026-02-28",
    )


def test_expired_exception_for_absent_vulnerability_is_not_reported():
    d = decide(scan(), exceptions=[exception("CVE-1", expires=date(2025, 1, 1))])
    assert d.promote and d.reasons == () and d.expired_exceptions == ()


def test_expired_exception_reported_even_when_the_finding_no_longer_counts():
    policy = Policy(name="p", max={Severity.CRITICAL: 0}, ignore_unfixed=True)
    d = decide(
        scan(finding("CVE-1", fixed=None)), policy, exceptions=[exception("CVE-1", expires=date(2025, 1, 1))]
    )
    assert d.promote and d.reasons == ("exception for CVE-1 expired on 2025-01-01",)


def test_renewed_exception_hides_the_expired_one():
    exceptions = [exception("CVE-1", expires=date(2025, 1, 1)), exception("CVE-1", expires=date(2027, 6, 1))]
    d = decide(scan(finding("CVE-1")), exceptions=exceptions)
    assert d.promote and d.expired_exceptions == ()
    assert d.reasons == ("exception for CVE-1 applied (expires 2027-06-01): not reachable",)


def test_latest_expiry_is_reported_among_expired_exceptions():
    exceptions = [exception("CVE-1", expires=date(2026, 2, 1)), exception("CVE-1", expires=date(2025, 1, 1))]
    assert (
        decide(scan(finding("CVE-1")), exceptions=exceptions).reasons[-1]
        == "exception for CVE-1 expired on 2026-02-01"
    )


def test_exception_on_unfixed_ignored_finding_is_not_listed_as_applied():
    policy = Policy(name="p", max={Severity.CRITICAL: 0}, ignore_unfixed=True)
    d = decide(scan(finding("CVE-1", fixed=None)), policy, exceptions=[exception("CVE-1")])
    assert d.promote and d.excepted == () and d.reasons == ()


# --- licenses ------------------------------------------------------------------------------


def test_denied_license_holds_naming_the_package():
    policy = Policy(name="p", deny_licenses=("AGPL-3.0-only",))
    d = decide(scan(licenses=(LicenseFinding("AGPL-3.0-only", "foo"), LicenseFinding("MIT", "bar"))), policy)
    assert not d.promote and d.failed == (Rule.LICENSES,)
    assert d.reasons == ("denied license AGPL-3.0-only in package foo",)


def test_denied_license_groups_packages_and_matches_case_insensitively():
    policy = Policy(name="p", deny_licenses=("AGPL-3.0-only", "SSPL-1.0"))
    lics = (
        LicenseFinding("agpl-3.0-only", "b", "linux/amd64"),
        LicenseFinding("AGPL-3.0-only", "a"),
        LicenseFinding("AGPL-3.0-only", "a", "linux/arm64"),
        LicenseFinding("SSPL-1.0", "mongo"),
    )
    assert decide(scan(licenses=lics), policy).reasons == (
        "denied license AGPL-3.0-only in packages a, b",
        "denied license SSPL-1.0 in package mongo",
    )


def test_denied_license_inside_an_expression_holds():
    policy = Policy(name="p", deny_licenses=("AGPL-3.0-only",))
    d = decide(scan(licenses=(LicenseFinding("(MIT OR AGPL-3.0-only)", "dual"),)), policy)
    assert d.reasons == ("denied license AGPL-3.0-only in package dual",)
    # A longer id that merely starts like a denied one is another license.
    assert decide(scan(licenses=(LicenseFinding("AGPL-3.0-only-variant", "x"),)), policy).promote


# --- age -----------------------------------------------------------------------------------


def test_old_image_is_held_with_its_build_date_and_age():
    policy = Policy(name="p", max_age_days=365)
    created = datetime(2025, 1, 1, 12, tzinfo=UTC)
    d = decide(scan(created=created), policy, today=date(2026, 2, 5))
    assert not d.promote and d.failed == (Rule.AGE,)
    assert d.reasons == ("image built 2025-01-01, 400 days ago (max 365)",)


def test_image_exactly_max_age_promotes():
    policy = Policy(name="p", max_age_days=365)
    assert decide(scan(created=datetime(2025, 3, 1, tzinfo=UTC)), policy, today=date(2026, 3, 1)).promote


def test_build_date_is_taken_in_utc():
    policy = Policy(name="p", max_age_days=0)
    # 2026-02-28 23:30 at UTC-2 is 2026-03-01 in UTC: built today.
    created = datetime(2026, 2, 28, 23, 30, tzinfo=timezone(timedelta(hours=-2)))
    assert decide(scan(created=created), policy).promote


def test_unknown_or_epoch_creation_date_fails_closed_under_max_age():
    policy = Policy(name="p", max_age_days=365)
    for created in (None, datetime(1970, 1, 1, tzinfo=UTC)):
        d = decide(scan(created=created), policy)
        assert not d.promote and d.failed == (Rule.AGE,)
        assert d.reasons[0].startswith("image creation date unknown")
    assert decide(scan(created=None), Policy(name="p")).promote


# --- approval and scanned digest -----------------------------------------------------------


def test_manual_approval_requires_the_exact_name_and_digest():
    policy = Policy(name="p", approval="manual")
    d = decide(scan(), policy)
    assert not d.promote and d.failed == (Rule.APPROVAL,)
    assert d.reasons == (
        f"manual approval required: add {{image: nginx, digest: {DIGEST}}} to catalog/approvals/",
    )
    assert decide(scan(), policy, approvals=[Approval("nginx", DIGEST, "@alice")]).promote
    assert not decide(scan(), policy, approvals=[Approval("nginx", OTHER, "@alice")]).promote
    assert not decide(scan(), policy, approvals=[Approval("redis", DIGEST, "@alice")]).promote


def test_auto_approval_ignores_approvals():
    assert decide(scan(), Policy(name="p"), approvals=[]).promote


def test_scan_of_another_digest_holds():
    d = decide(scan(digest=OTHER), Policy(name="p"))
    assert not d.promote and d.failed == (Rule.SCAN,)
    assert OTHER in d.reasons[0] and DIGEST in d.reasons[0]


# --- rules together ------------------------------------------------------------------------


def test_every_failing_rule_is_reported_in_rule_order_then_notes():
    policy = Policy(
        name="p",
        max={Severity.CRITICAL: 0, Severity.HIGH: 0},
        deny_licenses=("GPL-3.0-only",),
        max_age_days=30,
        approval="manual",
    )
    result = scan(
        finding("CVE-9", Severity.HIGH),
        finding("CVE-1"),
        finding("CVE-5"),
        licenses=(LicenseFinding("GPL-3.0-only", "bash"),),
        created=datetime(2025, 1, 1, tzinfo=UTC),
    )
    exceptions = [exception("CVE-5"), exception("CVE-1", expires=date(2026, 1, 1))]
    d = decide(result, policy, exceptions=exceptions)
    assert not d.promote
    assert d.failed == (Rule.VULNERABILITIES, Rule.LICENSES, Rule.AGE, Rule.APPROVAL)
    assert d.reasons == (
        "1 critical vulnerability (max 0): CVE-1 (openssl 3.0.1, fixed in 3.0.2)",
        "1 high vulnerability (max 0): CVE-9 (openssl 3.0.1, fixed in 3.0.2)",
        "denied license GPL-3.0-only in package bash",
        "image built 2025-01-01, 424 days ago (max 30)",
        f"manual approval required: add {{image: nginx, digest: {DIGEST}}} to catalog/approvals/",
        "exception for CVE-1 expired on 2026-01-01",
        "exception for CVE-5 applied (expires 2027-01-31): not reachable",
    )
    assert d.counts == {"critical": 1, "high": 1, "medium": 0, "low": 0, "unknown": 0}
    assert d.excepted == ("CVE-5",) and d.expired_exceptions == ("CVE-1",)


def test_input_order_does_not_change_the_decision():
    findings = [finding("CVE-3"), finding("CVE-1", package="b"), finding("CVE-1", package="a", fixed=None)]
    exceptions = [exception("CVE-3", reason="x"), exception("CVE-3", reason="y")]
    a = decide(scan(*findings), exceptions=exceptions)
    b = decide(scan(*reversed(findings)), exceptions=list(reversed(exceptions)))
    assert a == b


# --- helpers -------------------------------------------------------------------------------


def test_count_by_severity_counts_distinct_ids_worst_first():
    counts = count_by_severity(
        [finding("CVE-1"), finding("CVE-1", package="x"), finding("CVE-2", Severity.LOW)]
    )
    assert list(counts.items()) == [("critical", 1), ("high", 0), ("medium", 0), ("low", 1), ("unknown", 0)]


def test_regression_is_a_scan_failure_after_a_promotion():
    promoted = decide(scan())
    vulnerable = decide(scan(finding("CVE-1")))
    licensed = decide(
        scan(licenses=(LicenseFinding("AGPL-3.0-only", "x"),)),
        Policy(name="p", deny_licenses=("AGPL-3.0-only",)),
    )
    aged = decide(scan(created=None), Policy(name="p", max_age_days=1))
    assert vulnerable.regressed and licensed.regressed
    assert not aged.regressed and not aged.promote  # time passing is not the image getting worse
    assert not promoted.regressed


def test_layers_that_cannot_be_scanned_hold_and_count_as_a_regression():
    decision = unscannable("layer 1 of 1 (sha256:…) has diff_id …")
    assert not decision.promote and decision.failed == (Rule.LAYERS,)
    assert decision.reasons == ("layer 1 of 1 (sha256:…) has diff_id …",)
    assert decision.regressed, "a promoted image whose scan analysed other bytes got worse"
