"""``decision_key``: equal keys give equal decisions, and what changes a decision changes the key.

The cases come from the policy properties' strategies (small pools, so that exceptions,
approvals and ages collide often); a scan's stored-result key stands for its content here as
the ledger's content hash does in a run.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
from datetime import UTC, date, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from syncer.core.model import (
    Approval,
    Finding,
    PlatformScan,
    Policy,
    ScanResult,
    Severity,
    State,
    VulnException,
)
from syncer.core.policy import decision_key, evaluate, next_state
from tests.unit.test_policy_properties import TODAY, approvals, exceptions, fast, policies
from tests.unit.test_policy_properties import cases as policy_cases

# What a scan covered, which the policy properties leave out: package data the database
# cannot match (`unassessed`) and a manifest that could not be scanned.
covered = st.lists(
    st.builds(
        PlatformScan,
        digest=st.sampled_from(["sha256:" + "c" * 64, "sha256:" + "d" * 64]),
        platform=st.sampled_from(["", "linux/amd64"]),
        unassessed=st.sampled_from([(), ("python-pkg",)]),
        problem=st.sampled_from(["", "a nested index"]),
    ),
    max_size=2,
)


@st.composite
def cases(draw):
    case = draw(policy_cases())
    policy = dataclasses.replace(case["policy"], unassessed=draw(st.sampled_from(["hold", "allow"])))
    scan = dataclasses.replace(case["scan"], covered=tuple(draw(covered)))
    return {**case, "policy": policy, "scan": scan}


def content_key(scan: ScanResult) -> str:
    """What the stored result's hash covers: the scan's content, not its database or time."""
    content = (
        scan.digest,
        scan.findings,
        scan.licenses,
        scan.created,
        scan.covered,
        scan.selection,
        scan.artifact,
    )
    return hashlib.sha256(repr(content).encode()).hexdigest()


def key(case: dict) -> str:
    scan = case["scan"]
    return decision_key(
        name=case["name"],
        digest=case["digest"],
        scan_result_key=content_key(scan),
        created=scan.created,
        policy=case["policy"],
        exceptions=case["exceptions"],
        approvals=case["approvals"],
        today=case["today"],
    )


def decided(case: dict) -> tuple:
    """What a run acts on: the decision and the state it leads to from each starting point."""
    d = evaluate(**case)
    states = tuple(
        next_state(d, current=current, in_approved=in_approved, on_regression=case["policy"].on_regression)
        for current in (State.HELD, State.DEMOTED, State.PROMOTED)
        for in_approved in (False, True)
    )
    return d, states


days = st.integers(min_value=-400, max_value=400)


@fast
@given(cases(), days)
def test_the_same_key_on_another_day_is_the_same_decision(case, shift):
    # Days pass: exceptions expire and images age past max_age_days; while the key stays, so
    # does the decision.
    later = {**case, "today": TODAY + timedelta(days=shift)}
    if key(later) == key(case):
        assert decided(later) == decided(case)


PARTS = ("name", "digest", "scan", "policy", "exceptions", "approvals")


@fast
@given(cases(), cases(), st.sets(st.sampled_from(PARTS), min_size=1, max_size=2), days)
def test_equal_keys_of_mixed_inputs_give_equal_decisions(a, b, parts, shift):
    # One or two parts of another case swapped in, so that a key blind to a part collides.
    mixed = {**a, **{k: b[k] for k in parts}, "today": TODAY + timedelta(days=shift % 7 - 3)}
    if key(mixed) == key(a):
        assert decided(mixed) == decided(a)


@fast
@given(cases(), exceptions)
def test_a_matching_exception_expiring_changes_the_key(case, exc):
    if not any(fnmatch.fnmatchcase(case["name"], g) for g in exc.images):
        return
    case = {**case, "exceptions": [*case["exceptions"], exc]}
    last_day = {**case, "today": exc.expires}
    next_day = {**case, "today": exc.expires + timedelta(days=1)}
    assert key(last_day) != key(next_day)


@fast
@given(cases(), approvals)
def test_an_approval_of_the_digest_changes_the_key(case, approval):
    approval = dataclasses.replace(approval, image=case["name"], digest=case["digest"])
    without = {**case, "approvals": [a for a in case["approvals"] if a != approval]}
    if any(a.image == case["name"] and a.digest == case["digest"] for a in without["approvals"]):
        return  # already approved by another entry: one more changes nothing
    assert key(without) != key({**without, "approvals": [*without["approvals"], approval]})


POLICY_FIELDS = (
    "max",
    "ignore_unfixed",
    "deny_licenses",
    "max_age_days",
    "approval",
    "on_regression",
    "unassessed",
)


@fast
@given(
    cases(),
    policies,
    st.sampled_from(POLICY_FIELDS),
    st.sampled_from(["flag", "demote"]),
    st.sampled_from(["hold", "allow"]),
)
def test_a_policy_change_that_can_change_the_decision_changes_the_key(
    case, drawn, field, on_regression, unassessed
):
    drawn = dataclasses.replace(drawn, on_regression=on_regression, unassessed=unassessed)
    changed = {**case, "policy": dataclasses.replace(case["policy"], **{field: getattr(drawn, field)})}
    if decided(changed) != decided(case):
        assert key(changed) != key(case)


def test_what_the_decision_does_not_see_does_not_change_the_key():
    scan = ScanResult(
        "sha256:" + "a" * 64, "trivy", "", "", findings=(Finding("CVE-1", "zlib", "1", None, Severity.HIGH),)
    )
    case = {
        "name": "nginx",
        "digest": scan.digest,
        "scan": scan,
        "policy": Policy("strict", max={Severity.HIGH: 0}),
        "exceptions": [VulnException("CVE-1", ("nginx",), TODAY + timedelta(days=5), "why")],
        "approvals": [],
        "today": TODAY,
    }
    base = key(case)
    renamed = dataclasses.replace(case["policy"], name="other", teams=("@t",), signers=("ci",))
    assert key({**case, "policy": renamed}) == base
    # Another image's exception or approval, the next day while nothing expires.
    unrelated = VulnException("CVE-1", ("redis",), TODAY, "elsewhere")
    assert key({**case, "exceptions": [*case["exceptions"], unrelated]}) == base
    assert key({**case, "approvals": [Approval("redis", scan.digest, "@a")]}) == base
    assert key({**case, "today": TODAY + timedelta(days=1)}) == base


def test_max_age_crossing_changes_the_key_and_each_day_past_it_too():
    built = datetime(2026, 1, 1, tzinfo=UTC)
    scan = ScanResult("sha256:" + "a" * 64, "trivy", "", "", created=built)
    case = {
        "name": "nginx",
        "digest": scan.digest,
        "scan": scan,
        "policy": Policy("p", max_age_days=30),
        "exceptions": [],
        "approvals": [],
        "today": date(2026, 1, 20),
    }
    within = [key({**case, "today": date(2026, 1, d)}) for d in (20, 31)]
    past = [key({**case, "today": date(2026, 2, d)}) for d in (1, 2)]
    assert within[0] == within[1]
    # The reason names the age in days: each day past the limit is a new decision.
    assert len({within[0], *past}) == 3
