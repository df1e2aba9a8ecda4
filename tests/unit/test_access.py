"""The access rules of ``syncer.core.access``: globs, groups, granted actions (pure)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncer.core.access import (
    ACTIONS,
    allowed_actions,
    glob_matches,
    granted_actions,
    groups_of,
)
from syncer.core.model import AccessGroup

# SPEC.md's catalog/access.yaml.
SPEC_GROUPS = (
    AccessGroup("developers", members=("dev1", "dev2"), pull=("approved/*",)),
    AccessGroup("content-admins", members=("admin",), pull=("quarantine/*", "approved/*")),
    AccessGroup("pipeline", members=("syncer",), pull=("*",), push=("*",)),
)


@pytest.mark.parametrize(
    ("pattern", "repository", "matches"),
    [
        ("approved/*", "approved/nginx", True),
        ("approved/*", "approved/bitnami/redis", True),  # '*' crosses '/'
        ("approved/*", "approved", False),
        ("approved/*", "quarantine/nginx", False),
        ("approved/*", "approvedx/nginx", False),
        ("approved/*", "team/approved/nginx", False),  # the whole name must match
        ("*", "quarantine/bitnami/redis", True),
        ("*/nginx", "approved/nginx", True),
        ("*/nginx", "approved/nginx-extra", False),
        ("approved/nginx", "approved/nginx", True),
        ("approved/nginx", "approved/nginx2", False),
        ("approved/ng?nx", "approved/nginx", False),  # only '*' is special
        ("approved/[a-z]*", "approved/nginx", False),
        ("approved/a.b", "approved/axb", False),  # '.' is literal, not a regex dot
        ("approved/*-dev", "approved/app-dev", True),
    ],
)
def test_glob_matches(pattern: str, repository: str, matches: bool) -> None:
    assert glob_matches(pattern, repository) is matches


def test_many_stars_against_a_long_name_take_linear_time() -> None:
    # Under Python's re each '*' multiplied the backtracking: 8 of them against 60 characters
    # took minutes, in `syncer validate` (check_access) and in every token request.
    start = time.process_time()
    assert not glob_matches("*a" * 12 + "*b", "a" * 255)
    assert glob_matches("*a" * 12 + "*b", "a" * 254 + "b")
    assert time.process_time() - start < 1


@pytest.mark.parametrize(
    ("user", "repository", "requested", "granted"),
    [
        ("dev1", "approved/nginx", ["pull"], ("pull",)),
        ("dev2", "approved/bitnami/redis", ["pull", "push"], ("pull",)),
        ("dev1", "quarantine/nginx", ["pull"], ()),
        ("dev1", "approved/nginx", ["push"], ()),
        ("dev1", "approved/nginx", ["delete"], ()),
        ("admin", "quarantine/nginx", ["pull"], ("pull",)),
        ("admin", "quarantine/nginx", ["pull", "push"], ("pull",)),
        ("syncer", "quarantine/nginx", ["pull", "push"], ("pull", "push")),
        ("syncer", "approved/nginx", ["push", "pull"], ("pull", "push")),
        # push grants delete: the pipeline demotes by deleting a manifest.
        ("syncer", "approved/nginx", ["delete"], ("delete",)),
        ("syncer", "anything/else", ["*"], ("pull", "push", "delete")),
        ("admin", "approved/nginx", ["*"], ("pull",)),
        ("stranger", "approved/nginx", ["pull"], ()),
        (None, "approved/nginx", ["pull"], ()),
        ("syncer", "approved/nginx", ["pull", "fly"], ("pull",)),  # unknown actions never
        ("syncer", "approved/nginx", [], ()),
    ],
)
def test_spec_access_yaml(
    user: str | None, repository: str, requested: list[str], granted: tuple[str, ...]
) -> None:
    assert granted_actions(user, repository, requested, SPEC_GROUPS) == granted


def test_push_does_not_imply_pull() -> None:
    groups = (AccessGroup("uploaders", members=("ci",), push=("drop/*",)),)
    assert granted_actions("ci", "drop/box", ["pull", "push"], groups) == ("push",)
    assert allowed_actions("ci", "drop/box", groups) == {"push", "delete"}


def test_groups_add_up() -> None:
    groups = (
        AccessGroup("readers", members=("ann",), pull=("team/*",)),
        AccessGroup("writers", members=("ann", "bob"), push=("team/app",)),
    )
    assert granted_actions("ann", "team/app", ["pull", "push"], groups) == ("pull", "push")
    assert granted_actions("bob", "team/app", ["pull", "push"], groups) == ("push",)
    assert granted_actions("ann", "team/other", ["pull", "push"], groups) == ("pull",)


def test_anonymous_group_applies_to_everyone_and_only_it_to_anonymous() -> None:
    groups = (*SPEC_GROUPS, AccessGroup("anonymous", pull=("approved/public/*",)))
    assert [g.name for g in groups_of(None, groups)] == ["anonymous"]
    assert granted_actions(None, "approved/public/hello", ["pull"], groups) == ("pull",)
    assert granted_actions(None, "approved/nginx", ["pull"], groups) == ()
    # Logging in never gives less than not logging in.
    assert granted_actions("stranger", "approved/public/hello", ["pull"], groups) == ("pull",)
    assert [g.name for g in groups_of("dev1", groups)] == ["developers", "anonymous"]


def test_membership_is_exact() -> None:
    assert groups_of("dev", SPEC_GROUPS) == ()
    assert groups_of("DEV1", SPEC_GROUPS) == ()
    assert groups_of("", SPEC_GROUPS) == ()


_names = st.from_regex(r"[a-z]{1,3}(/[a-z*]{1,3}){0,2}", fullmatch=True)


@given(
    groups=st.lists(
        st.builds(
            AccessGroup,
            name=st.sampled_from(["a", "b", "anonymous"]),
            members=st.lists(st.sampled_from(["u", "v"]), max_size=2).map(tuple),
            pull=st.lists(_names, max_size=2).map(tuple),
            push=st.lists(_names, max_size=2).map(tuple),
        ),
        max_size=3,
    ),
    user=st.sampled_from(["u", "v", None]),
    repository=st.from_regex(r"[a-z]{1,3}(/[a-z]{1,3}){0,2}", fullmatch=True),
    requested=st.lists(st.sampled_from([*ACTIONS, "*", "x"]), max_size=4),
)
def test_never_more_than_requested_nor_than_the_groups_allow(
    groups: list[AccessGroup],
    user: str | None,
    repository: str,
    requested: list[str],
) -> None:
    granted = set(granted_actions(user, repository, requested, groups))
    assert granted <= (set(ACTIONS) if "*" in requested else set(requested))
    member_of = groups_of(user, groups)
    if "pull" in granted:
        assert any(glob_matches(p, repository) for g in member_of for p in g.pull)
    if granted & {"push", "delete"}:
        assert any(glob_matches(p, repository) for g in member_of for p in g.push)
    # Removing every group the user is in takes everything away.
    others = [g for g in groups if g not in member_of]
    assert granted_actions(user, repository, requested, others) == ()
