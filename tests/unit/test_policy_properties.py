"""Properties of the promotion decision that must hold for every input, checked with hypothesis.

The pools of ids, packages and globs are small on purpose, so that generated findings and
exceptions collide often: that is where counting and exception bugs live.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from syncer.core.model import Approval, Finding, LicenseFinding, Policy, ScanResult, Severity, VulnException
from syncer.core.policy import Decision, evaluate
from tests.harness.properties import examples

TODAY = date(2026, 3, 1)
DIGESTS = ["sha256:" + c * 64 for c in "ab"]
NAMES = ["nginx", "redis", "bitnami/redis"]

# A decorator, not a profile: loading a profile would change every other module's settings.
fast = settings(max_examples=examples(150), deadline=None)

ids = st.sampled_from(["CVE-2024-1", "CVE-2024-2", "CVE-2024-3", "GHSA-aaaa-bbbb-cccc"])
severities = st.sampled_from(list(Severity))

findings = st.builds(
    Finding,
    id=ids,
    package=st.sampled_from(["openssl", "zlib", "libc"]),
    installed=st.sampled_from(["1.0", "2.0"]),
    fixed=st.sampled_from([None, "", "1.1", "2.1"]),
    severity=severities,
    platform=st.sampled_from(["", "linux/amd64", "linux/arm64"]),
)

licenses = st.builds(
    LicenseFinding,
    license=st.sampled_from(["MIT", "AGPL-3.0-only", "MIT OR GPL-3.0-only"]),
    package=st.sampled_from(["a", "b"]),
    platform=st.sampled_from(["", "linux/amd64"]),
)

expiries = st.dates(min_value=TODAY - timedelta(days=3), max_value=TODAY + timedelta(days=3))

exceptions = st.builds(
    VulnException,
    vulnerability=ids,
    images=st.lists(st.sampled_from(["nginx", "redis*", "*", "bitnami/*"]), min_size=1, max_size=2).map(
        tuple
    ),
    expires=expiries,
    reason=st.sampled_from(["unreachable", "vendor says no"]),
)

policies = st.builds(
    Policy,
    name=st.just("p"),
    max=st.dictionaries(severities, st.integers(min_value=0, max_value=2)),
    ignore_unfixed=st.booleans(),
    deny_licenses=st.sampled_from([(), ("AGPL-3.0-only",), ("gpl-3.0-only",)]),
    max_age_days=st.sampled_from([None, 30, 400]),
    approval=st.sampled_from(["auto", "manual"]),
)

approvals = st.builds(
    Approval, image=st.sampled_from(NAMES), digest=st.sampled_from(DIGESTS), by=st.just("@a")
)

# Hypothesis takes naive bounds and attaches the timezone itself.
EARLIEST, LATEST = datetime(1970, 1, 1), datetime(2026, 3, 1)  # noqa: DTZ001
created = st.one_of(st.none(), st.datetimes(min_value=EARLIEST, max_value=LATEST, timezones=st.just(UTC)))


@st.composite
def cases(draw):
    """Keyword arguments of one ``evaluate`` call."""
    digest = draw(st.sampled_from(DIGESTS))
    return {
        "name": draw(st.sampled_from(NAMES)),
        "digest": digest,
        "scan": ScanResult(
            digest=draw(st.sampled_from([digest, digest, DIGESTS[0]])),
            scanner="trivy",
            db_updated_at="",
            scanned_at="",
            findings=tuple(draw(st.lists(findings, max_size=8))),
            licenses=tuple(draw(st.lists(licenses, max_size=3))),
            created=draw(created),
        ),
        "policy": draw(policies),
        "exceptions": draw(st.lists(exceptions, max_size=5)),
        "approvals": draw(st.lists(approvals, max_size=3)),
        "today": TODAY,
    }


def with_scan(case: dict, **changes) -> dict:
    scan = case["scan"]
    return {**case, "scan": ScanResult(**{**scan.__dict__, **changes})}


def no_easier(before: Decision, after: Decision) -> None:
    """``after`` holds whenever ``before`` does, and no severity count went down."""
    assert before.promote or not after.promote
    assert all(after.counts[k] >= before.counts[k] for k in before.counts)


@fast
@given(cases(), findings, st.integers(min_value=0, max_value=8))
def test_adding_a_finding_never_turns_a_hold_into_a_promotion(case, extra, at):
    found = list(case["scan"].findings)
    found.insert(min(at, len(found)), extra)
    no_easier(evaluate(**case), evaluate(**with_scan(case, findings=tuple(found))))


@fast
@given(cases(), st.data())
def test_removing_an_exception_never_turns_a_hold_into_a_promotion(case, data):
    if not case["exceptions"]:
        case["exceptions"] = [data.draw(exceptions)]
    index = data.draw(st.integers(min_value=0, max_value=len(case["exceptions"]) - 1))
    fewer = case["exceptions"][:index] + case["exceptions"][index + 1 :]
    no_easier(evaluate(**case), evaluate(**{**case, "exceptions": fewer}))


@fast
@given(cases(), exceptions, st.integers(min_value=1, max_value=400))
def test_an_expired_exception_behaves_as_absent(case, exc, days_ago):
    expired = VulnException(exc.vulnerability, exc.images, TODAY - timedelta(days=days_ago), exc.reason)
    without = evaluate(**case)
    with_it = evaluate(**{**case, "exceptions": [*case["exceptions"], expired]})
    assert (with_it.promote, with_it.counts, with_it.failed, with_it.excepted) == (
        without.promote,
        without.counts,
        without.failed,
        without.excepted,
    )
    # Only the note saying that it expired may be added.
    expired_notes = tuple(r for r in with_it.reasons if " expired on " in r)
    assert tuple(r for r in with_it.reasons if r not in expired_notes) == tuple(
        r for r in without.reasons if " expired on " not in r
    )


@fast
@given(cases(), st.randoms(use_true_random=False))
def test_evaluation_is_deterministic_and_ignores_input_order(case, rnd):
    first = evaluate(**case)
    assert evaluate(**case) == first
    shuffled_findings = list(case["scan"].findings)
    shuffled_licenses = list(case["scan"].licenses)
    rnd.shuffle(shuffled_findings)
    rnd.shuffle(shuffled_licenses)
    shuffled = with_scan(case, findings=tuple(shuffled_findings), licenses=tuple(shuffled_licenses))
    shuffled["exceptions"] = rnd.sample(case["exceptions"], len(case["exceptions"]))
    shuffled["approvals"] = rnd.sample(case["approvals"], len(case["approvals"]))
    assert evaluate(**shuffled) == first


@fast
@given(cases())
def test_promote_exactly_when_no_rule_fails(case):
    d = evaluate(**case)
    assert d.promote == (d.failed == ())
    assert d.promote or d.reasons
    assert list(d.counts) == ["critical", "high", "medium", "low", "unknown"]
