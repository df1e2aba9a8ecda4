"""The promotion decision: does one scanned digest pass its policy?

``evaluate`` is a pure function of its inputs (no I/O, no clock: the caller passes ``today``),
so the same scan, catalog and day always give the same decision with the same reasons in the
same order, whatever order findings and exceptions arrive in.

Counting: a vulnerability id counts once per severity at which it is reported, however many
packages or platforms of an index carry it (a CVE in openssl and libssl3 on amd64 and arm64 is
one). An id that Trivy rates differently in two packages counts at each of those severities;
counting it only at its worst would let a new, worse finding lower another severity's count,
and a policy must never get easier to pass by finding more.

Fail closed: a scan of another digest, an OCI artifact or a manifest that could not be scanned,
package data the database cannot match (unless the policy says ``unassessed: allow``), a
creation date that is unknown (or the Unix epoch of reproducible builds) under
``max_age_days``, or a missing manual approval all hold.
"""

from __future__ import annotations

import enum
import fnmatch
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from syncer.core.model import (
    Approval,
    Finding,
    LicenseFinding,
    PlatformScan,
    Policy,
    ScanResult,
    Severity,
    State,
    VulnException,
)

# Past this many ids or packages a reason line lists the first ones and "and N more";
# the record keeps every finding.
MAX_LISTED = 10
MAX_PACKAGES_PER_ID = 3

_SEVERITIES_DESC = tuple(sorted(Severity, reverse=True))


class Rule(str, enum.Enum):
    """A policy rule that can hold an image, in the order reasons are reported."""

    SCAN = "scan"
    LAYERS = "layers"
    UNASSESSED = "unassessed"
    VULNERABILITIES = "vulnerabilities"
    LICENSES = "licenses"
    AGE = "age"
    APPROVAL = "approval"


# Rules whose failure after a promotion means the image itself got worse (a re-scan found
# something, or found its earlier scan analysed other bytes), as opposed to time passing
# (age) or the catalog changing (approval).
_REGRESSION_RULES = frozenset({Rule.LAYERS, Rule.VULNERABILITIES, Rule.LICENSES})


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: tuple[str, ...]  # why held first, then notes on expired and applied exceptions
    counts: dict[str, int]  # severity key -> distinct ids still counting, worst severity first
    excepted: tuple[str, ...] = ()  # ids let through by an unexpired exception
    expired_exceptions: tuple[str, ...] = ()  # ids present whose only exceptions have expired
    failed: tuple[Rule, ...] = ()  # the rules that hold the image; empty when promoted
    approval: Approval | None = None  # the approval a manual policy found for the digest

    @property
    def regressed(self) -> bool:
        """Held because of what the scan found: the only kind of hold that counts against an
        image already promoted. Holds for age or a withdrawn approval are not regressions: the
        image did not get worse, and ``on_regression: demote`` must not pull it for that."""
        return not self.promote and any(rule in _REGRESSION_RULES for rule in self.failed)


def evaluate(
    *,
    name: str,
    digest: str,
    scan: ScanResult,
    policy: Policy,
    exceptions: Sequence[VulnException],
    approvals: Sequence[Approval],
    today: date,
) -> Decision:
    """Decide whether ``digest`` of catalog image ``name`` may be promoted under ``policy``.

    Every failing rule is reported, not only the first. An exception applies to findings of
    its vulnerability id when one of its ``images`` globs matches ``name`` and it has not
    expired; ``expires == today`` still applies (the date is the last day it is valid).
    """
    holds: list[tuple[Rule, str]] = []
    if scan.digest != digest:
        holds.append(
            (Rule.SCAN, f"the scan is of {scan.digest}, not of {digest}: re-scan the digest being promoted")
        )
    if scan.artifact:
        holds.append(
            (
                Rule.SCAN,
                f"not a container image but an OCI artifact ({scan.artifact}): syncer "
                "scans and promotes container images only; remove the entry",
            )
        )
    for part in scan.covered:
        if part.problem:
            holds.append(
                (
                    Rule.SCAN,
                    f"{_which(part)} could not be scanned: it is {part.problem}; "
                    "list the platforms you need in the entry's `platforms`",
                )
            )
    unassessed = [f"{_which(part)}: {line}" for part in scan.covered for line in part.unassessed]
    if unassessed and policy.unassessed == "hold":
        holds.append(
            (
                Rule.UNASSESSED,
                "not assessed, so not known to be clean: "
                + "; ".join(unassessed)
                + " (a policy with `unassessed: allow` accepts this)",
            )
        )

    live, expired = _exceptions_for(name, exceptions, today)
    present_ids = {f.id for f in scan.findings}
    counted = [f for f in scan.findings if not (policy.ignore_unfixed and not f.fixed)]
    excepted = sorted({f.id for f in counted if f.id in live})
    remaining = [f for f in counted if f.id not in live]
    by_severity = _group_by_severity(remaining)
    counts = {s.key: len(by_severity.get(s, {})) for s in _SEVERITIES_DESC}

    for severity in _SEVERITIES_DESC:
        limit = policy.max.get(severity)
        if limit is not None and counts[severity.key] > limit:
            holds.append(
                (Rule.VULNERABILITIES, _vulnerability_reason(severity, limit, by_severity[severity]))
            )

    holds.extend((Rule.LICENSES, line) for line in _license_reasons(scan.licenses, policy.deny_licenses))

    age_reason = _age_reason(scan.created, policy.max_age_days, today)
    if age_reason:
        holds.append((Rule.AGE, age_reason))

    approval = next((a for a in approvals if a.image == name and a.digest == digest), None)
    if policy.approval == "manual" and approval is None:
        holds.append(
            (
                Rule.APPROVAL,
                f"manual approval required: add {{image: {name}, digest: {digest}}} to catalog/approvals/",
            )
        )

    expired_ids = sorted(i for i in present_ids if i in expired and i not in live)
    notes = (
        ["allowed unassessed (`unassessed: allow`): " + "; ".join(unassessed)]
        if unassessed and policy.unassessed == "allow"
        else []
    )
    notes += [f"exception for {i} expired on {expired[i].isoformat()}" for i in expired_ids]
    notes += [
        f"exception for {i} applied (expires {live[i].expires.isoformat()}): {live[i].reason}"
        for i in excepted
    ]

    failed = tuple(dict.fromkeys(rule for rule, _ in holds))
    return Decision(
        promote=not holds,
        reasons=tuple(line for _, line in holds) + tuple(notes),
        counts=counts,
        excepted=tuple(excepted),
        expired_exceptions=tuple(expired_ids),
        failed=failed,
        approval=approval if policy.approval == "manual" else None,
    )


def decision_key(
    *,
    name: str,
    digest: str,
    scan_result_key: str,
    created: datetime | None,
    policy: Policy,
    exceptions: Sequence[VulnException],
    approvals: Sequence[Approval],
    today: date,
) -> str:
    """A fingerprint of what ``evaluate`` and ``next_state`` decide from: equal keys give the
    same decision, so a run that finds a tag's key unchanged need not read its record.

    ``scan_result_key`` stands for the scan's content (the stored result's hash) and
    ``created`` is that scan's ``created``, passed apart so that the key can be made from the
    ledger index alone. Of the day only what the decision sees enters: which matching
    exceptions are live or expired, and the image's age once it passes ``max_age_days`` (the
    reason names the age in days, so such a tag is decided anew each day). Whatever does not
    enter the decision (the policy's name, teams and signers, where things are written, which
    catalog file an exception is in) does not enter the key, so editing it re-decides nothing.
    """
    matching = sorted(
        (exc.vulnerability, exc.expires.isoformat(), exc.reason, exc.expires >= today)
        for exc in exceptions
        if any(fnmatch.fnmatchcase(name, glob) for glob in exc.images)
    )
    canonical = {
        "name": name,
        "digest": digest,
        "scan": scan_result_key,
        "policy": {
            "max": sorted((s.key, n) for s, n in policy.max.items()),
            "ignore_unfixed": policy.ignore_unfixed,
            # In the order written: of two spellings of one id the reason names the last.
            "deny_licenses": list(policy.deny_licenses),
            "max_age_days": policy.max_age_days,
            "approval": policy.approval,
            "on_regression": policy.on_regression,
            "unassessed": policy.unassessed,
        },
        "exceptions": matching,
        "approved": any(a.image == name and a.digest == digest for a in approvals),
        "age": _age_reason(created, policy.max_age_days, today),
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


APPROVED_BY = "; approved by "


def approval_text(approval: Approval) -> str:
    """How a promoted event names the approval of a manual policy: who, where, and why. The
    record keeps it: an approval removed from the catalog later still shows who let the digest in."""
    where = f" ({approval.location.file})" if approval.location else ""
    return f"{APPROVED_BY}{approval.by}{where}" + (f": {approval.reason}" if approval.reason else "")


def next_state(decision: Decision, *, current: State, in_approved: bool, on_regression: str) -> State:
    """The state a decision puts a tag in: the one rule that ``syncer run`` acts on and
    ``syncer plan`` predicts with. ``in_approved``: the decided digest is the one
    ``approved/<name>:<tag>`` holds. Only a regression counts against a promoted digest (see
    ``Decision.regressed``); a demoted digest stays demoted until it passes again."""
    if in_approved:
        if decision.promote or not decision.regressed:
            return State.PROMOTED
        return State.DEMOTED if on_regression == "demote" else State.FLAGGED
    if decision.promote:
        return State.PROMOTED
    return State.DEMOTED if current is State.DEMOTED else State.HELD


def unscannable(reason: str) -> Decision:
    """The decision for a digest whose layers Trivy must not analyse (``syncer.stages.layers``): held,
    and for one already promoted a regression, since its earlier scan analysed other bytes."""
    return Decision(promote=False, reasons=(reason,), counts={}, failed=(Rule.LAYERS,))


def _which(part: PlatformScan) -> str:
    return f"platform {part.platform}" if part.platform else f"image {part.digest}"


def count_by_severity(findings: Iterable[Finding]) -> dict[str, int]:
    """Distinct vulnerability ids per severity key, worst first: the raw scan's counts."""
    by_severity = _group_by_severity(findings)
    return {s.key: len(by_severity.get(s, {})) for s in _SEVERITIES_DESC}


def counts_text(counts: dict[str, int]) -> str:
    """``count_by_severity`` in words, worst first: "1 critical, 2 high"."""
    return ", ".join(f"{n} {key}" for key, n in counts.items() if n) or "no vulnerabilities"


def live_exceptions(name: str, exceptions: Sequence[VulnException], today: date) -> dict[str, VulnException]:
    """The exception that applies to each vulnerability id of image ``name`` on ``today``:
    the one ``evaluate`` names in its reasons."""
    return _exceptions_for(name, exceptions, today)[0]


def _exceptions_for(
    name: str, exceptions: Sequence[VulnException], today: date
) -> tuple[dict[str, VulnException], dict[str, date]]:
    """Exceptions matching ``name``: the live one per id (latest expiry), the latest expired date per id."""
    live: dict[str, VulnException] = {}
    expired: dict[str, date] = {}
    for exc in exceptions:
        if not any(fnmatch.fnmatchcase(name, glob) for glob in exc.images):
            continue
        vid = exc.vulnerability
        if exc.expires >= today:
            current = live.get(vid)
            # Ties broken on the reason so that the note does not depend on catalog file order.
            if current is None or (exc.expires, exc.reason) > (current.expires, current.reason):
                live[vid] = exc
        elif vid not in expired or exc.expires > expired[vid]:
            expired[vid] = exc.expires
    return live, expired


def _group_by_severity(findings: Iterable[Finding]) -> dict[Severity, dict[str, list[Finding]]]:
    grouped: dict[Severity, dict[str, list[Finding]]] = {}
    for f in findings:
        grouped.setdefault(f.severity, {}).setdefault(f.id, []).append(f)
    return grouped


def _vulnerability_reason(severity: Severity, limit: int, by_id: dict[str, list[Finding]]) -> str:
    ids = sorted(by_id)
    noun = "vulnerability" if len(ids) == 1 else "vulnerabilities"
    listed = ", ".join(f"{i} ({_packages(by_id[i])})" for i in ids[:MAX_LISTED])
    return f"{len(ids)} {severity.key} {noun} (max {limit}): {listed}{_more(len(ids) - MAX_LISTED)}"


def _packages(findings: list[Finding]) -> str:
    variants = sorted({(f.package, f.installed, f.fixed or "") for f in findings})
    parts = [
        f"{pkg} {installed}, " + (f"fixed in {fixed}" if fixed else "no fix yet")
        for pkg, installed, fixed in variants[:MAX_PACKAGES_PER_ID]
    ]
    return "; ".join(parts) + _more(len(variants) - MAX_PACKAGES_PER_ID)


def _more(extra: int) -> str:
    return f" and {extra} more" if extra > 0 else ""


_SPDX_OPERATORS = {"and", "or", "with"}


def _license_ids(expression: str) -> set[str]:
    """The license ids in an SPDX expression, case-folded (SPDX ids are case-insensitive).

    Every id of an ``OR`` counts: the scanner cannot know which alternative applies, so a
    denied alternative holds the image until a person decides (fail closed).
    """
    tokens = re.split(r"[\s()]+", expression)
    return {t.casefold() for t in tokens if t and t.casefold() not in _SPDX_OPERATORS}


def _license_reasons(licenses: Sequence[LicenseFinding], deny: Sequence[str]) -> list[str]:
    denied = {d.casefold(): d for d in deny}
    packages: dict[str, set[str]] = {}
    for lic in licenses:
        for hit in _license_ids(lic.license) & denied.keys():
            packages.setdefault(denied[hit], set()).add(lic.package)
    lines = []
    for license_id in sorted(packages):
        names = sorted(packages[license_id])
        noun = "package" if len(names) == 1 else "packages"
        listed = ", ".join(names[:MAX_LISTED])
        lines.append(f"denied license {license_id} in {noun} {listed}{_more(len(names) - MAX_LISTED)}")
    return lines


_EPOCH = date(1970, 1, 1)


def _age_reason(created: datetime | None, max_age_days: int | None, today: date) -> str | None:
    if max_age_days is None:
        return None
    built = _utc_date(created) if created is not None else None
    if built is None or built <= _EPOCH:
        # Reproducible builds (ko, Bazel, distroless) stamp the epoch: the real age is unknown.
        return (
            f"image creation date unknown, but the policy limits age to {max_age_days} days: "
            "use a policy without max_age_days for this image"
        )
    age = (today - built).days
    if age > max_age_days:
        return f"image built {built.isoformat()}, {age} days ago (max {max_age_days})"
    return None


def _utc_date(moment: datetime) -> date:
    return moment.astimezone(UTC).date() if moment.tzinfo else moment.date()
