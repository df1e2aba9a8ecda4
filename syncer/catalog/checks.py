"""The checks across files, run on the ``Draft`` once every file is read; further cross-file
checks are added to ``CHECKS``."""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import date

from syncer.catalog.files import Draft, is_valid_signer_name
from syncer.catalog.reader import Located
from syncer.core.model import (
    ImageEntry,
    Location,
)
from syncer.core.refs import (
    is_valid_tag,
)
from syncer.errors import Diagnostic

Check = Callable[[Draft, date], Iterable[Diagnostic]]


def check_policies_defined(draft: Draft, today: date) -> Iterator[Diagnostic]:
    defined = sorted(draft.policies)

    def missing(policy: str, where: Location) -> Diagnostic:
        others = f"use one of: {', '.join(defined)}" if defined else "no policies are defined yet"
        return Diagnostic(
            where,
            f"policy '{policy}' is not defined in "
            f"{draft.path('policies')}/; define "
            f"{draft.path('policies', policy + '.yaml')} or {others}",
        )

    settings = draft.settings
    if settings is not None and settings.value.default_policy not in draft.policies:
        yield missing(settings.value.default_policy, settings.where("defaults.policy"))
    for image in draft.images:
        explicit = "policy" in image.at
        if image.value.policy not in draft.policies and explicit:
            yield missing(image.value.policy, image.where("policy"))


def check_policy_choices(draft: Draft, today: date) -> Iterator[Diagnostic]:
    """A policy other than the default is named only in files whose owners it lists in
    ``teams``. GitHub takes a review from any one code owner of a file, and an image file
    belongs to its entries' owners as well as the content admins, so without this a team
    alone could move its images to a weaker policy; a policy's ``teams`` are in
    ``policies/``, which only the content admins own."""
    settings = draft.settings
    if settings is None:
        return
    admins = set(settings.value.content_admins)
    default = settings.value.default_policy
    file_owners: dict[str, set[str]] = {}
    for image in draft.images:
        file_owners.setdefault(image.where().file, set()).update(image.value.owners)
    for image in draft.images:
        chosen = draft.policies.get(image.value.policy)
        # A broken policy file is reported already; who may use it is read once it is fixed.
        if (
            "policy" not in image.at
            or chosen is None
            or image.value.policy == default
            or image.value.policy in draft.broken_policies
        ):
            continue
        file = image.where().file
        barred = sorted(file_owners[file] - admins - set(chosen.value.teams))
        if barred:
            yield Diagnostic(
                image.where("policy"),
                f"policy '{image.value.policy}' is not open to {', '.join(barred)}, "
                f"who own{'s' if len(barred) == 1 else ''} {file} and could approve "
                "this change without the content admins; a content admin adds "
                f"them to 'teams' in {draft.path('policies', image.value.policy + '.yaml')}, "
                "or remove 'policy' to use the default",
            )


def check_signers_have_keys(draft: Draft, today: date) -> Iterator[Diagnostic]:
    def missing(signer: str, where: Location) -> Diagnostic:
        return Diagnostic(
            where,
            f"signer '{signer}' has no public key; add "
            f"{draft.path('signers', signer + '.pub')} "
            f"(syncer keygen {signer}) or remove the signer",
        )

    settings = draft.settings
    if settings is not None:
        signer = settings.value.signing.signer
        if is_valid_signer_name(signer) and signer not in draft.signer_files:
            yield missing(signer, settings.where("signing.signer"))
    for policy in draft.policies.values():
        for signer in policy.value.signers:
            if signer not in draft.signer_files:
                yield missing(signer, policy.where(f"signers.{signer}"))


def check_unique_names(draft: Draft, today: date) -> Iterator[Diagnostic]:
    first: dict[str, Located[ImageEntry]] = {}
    for image in draft.images:
        entry = image.value
        earlier = first.setdefault(entry.name, image)
        if earlier is image:
            continue
        where = image.where("name") if "name" in image.at else image.where("source")
        if earlier.value.source == entry.source:
            yield Diagnostic(
                where,
                f"{entry.source} is listed twice as '{entry.name}' (also "
                f"at {earlier.where()}); merge the two entries into one",
            )
        else:
            yield Diagnostic(
                where,
                f"name '{entry.name}' is already used by "
                f"{earlier.value.source} at {earlier.where()}; give one "
                "of them a different 'name'",
            )


def check_report_paths(draft: Draft, today: date) -> Iterator[Diagnostic]:
    """Names whose files under reports/ would collide: a record (records/<name>/<tag>.yaml)
    or page (images/<name>.md) of one name is a directory of another's, so the run could
    write neither. Checked for any tag, since `match` finds tags nobody listed. Also tags of
    one entry that differ only in case: one file on a case-insensitive checkout (macOS)."""
    first: dict[str, Located[ImageEntry]] = {}
    for image in draft.images:
        first.setdefault(image.value.name, image)
    for image in first.values():
        name = image.value.name
        where = _name_where(image)
        parts = name.split("/")
        for k, part in enumerate(parts):
            if k and part.endswith(".yaml") and is_valid_tag(part[:-5]):
                other = first.get("/".join(parts[:k]))
                if other is not None:
                    yield Diagnostic(
                        where,
                        _collision(
                            name,
                            f"the record of {other.value.name}:{part[:-5]} "
                            f"(reports/records/{other.value.name}/{part})",
                            other,
                        ),
                    )
            if k < len(parts) - 1 and part.endswith(".md") and part[:-3]:
                other = first.get("/".join([*parts[:k], part[:-3]]))
                if other is not None:
                    yield Diagnostic(
                        where,
                        _collision(
                            name,
                            f"the page of {other.value.name} (reports/images/{other.value.name}.md)",
                            other,
                        ),
                    )
        folded: dict[str, list[str]] = {}
        for tag in dict.fromkeys(image.value.tags):  # a tag listed twice is one file
            folded.setdefault(tag.casefold(), []).append(tag)
        for same in (tags for tags in folded.values() if len(tags) > 1):
            yield Diagnostic(
                image.where("tags"),
                f"tags {', '.join(repr(t) for t in same)} of "
                f"'{name}' differ only in case: their records would be one file "
                "on a case-insensitive checkout; keep one of them",
            )


def _name_where(image: Located[ImageEntry]) -> Location:
    return image.where("name") if "name" in image.at else image.where("source")


def _collision(name: str, theirs: str, other: Located[ImageEntry]) -> str:
    return (
        f"name '{name}' collides with {theirs}, defined at {_name_where(other)}: one would be "
        "a directory where the other is a file under reports/; give one of them a "
        "different 'name'"
    )


def check_exceptions(draft: Draft, today: date) -> Iterator[Diagnostic]:
    names = [i.value.name for i in draft.images]
    for exception in draft.exceptions:
        value = exception.value
        if value.expires < today:
            yield Diagnostic(
                exception.where("expires"),
                f"exception for {value.vulnerability} expired on "
                f"{value.expires.isoformat()} and no longer applies; remove it "
                "or extend it",
                "warning",
            )
        unmatched = [p for p in value.images if not any(fnmatch.fnmatchcase(n, p) for n in names)]
        if unmatched and len(unmatched) == len(value.images):
            # It excepts nothing: a misspelt name, or an image removed since. Either way the
            # pull request does not do what its reviewers were told.
            yield Diagnostic(
                exception.where("images"),
                f"exception for {value.vulnerability} matches no image in the "
                f"catalog ({', '.join(repr(p) for p in unmatched)}); fix the names "
                "or remove the exception",
            )
            continue
        for pattern in unmatched:
            yield Diagnostic(
                exception.where(f"images.{pattern}"),
                f"'{pattern}' matches no image in the catalog; fix the name or remove it",
                "warning",
            )


def check_approvals(draft: Draft, today: date) -> Iterator[Diagnostic]:
    names = sorted({i.value.name for i in draft.images})
    for approval in draft.approvals:
        image = approval.value.image
        if image not in names:
            close = difflib.get_close_matches(image, names, n=1)
            hint = f"did you mean '{close[0]}'?" if close else "use a name from catalog/images/"
            yield Diagnostic(
                approval.where("image"),
                f"approval names image '{image}', which is not in the catalog; {hint}",
            )


# A user name as a token service sees it: htpasswd's `user:` field, no spaces.
_USER_RE = re.compile(r"[^\s:]+")


def check_access(draft: Draft, today: date) -> Iterator[Diagnostic]:
    """access.yaml as `syncer auth-server` will apply it: valid user names, and no grant that
    cannot work or that is silently ignored."""
    from syncer.core.access import ANONYMOUS_GROUP, glob_matches  # the rules the server applies

    groups = [g.value for g in draft.access]
    for located in draft.access:
        group = located.value
        for member in group.members:
            if not _USER_RE.fullmatch(member):
                yield Diagnostic(
                    located.where("members"),
                    f"group '{group.name}' lists '{member}', which is not a user name "
                    "(no spaces or ':'); use the name people log in with",
                )
        if group.name == ANONYMOUS_GROUP and group.members:
            yield Diagnostic(
                located.where("members"),
                f"group '{ANONYMOUS_GROUP}' applies to everyone, logged in or not; "
                "its members are ignored: remove them",
                level="warning",
            )
        # The registry checks pull as well as push on every upload: a push without pull fails.
        for member in group.members:
            pulls = [p for g in groups if g.name == ANONYMOUS_GROUP or member in g.members for p in g.pull]
            for pattern in group.push:
                if not any(glob_matches(pull, pattern) for pull in pulls):
                    yield Diagnostic(
                        located.where("push"),
                        f"'{member}' may push {pattern} (group '{group.name}') but not "
                        "pull it, and a registry checks both on every push: add the "
                        f"pattern to 'pull' too",
                        level="warning",
                    )


CHECKS: list[Check] = [
    check_policies_defined,
    check_policy_choices,
    check_signers_have_keys,
    check_unique_names,
    check_report_paths,
    check_exceptions,
    check_approvals,
    check_access,
]
