"""Who may do what in the trusted registry, decided from the catalog's ``access.yaml`` groups.

Pure functions: the token service asks ``granted_actions`` for every scope a client requests
and puts exactly the answer into the token. The rules:

- a user's groups are those listing the user among ``members``; the group named
  ``anonymous`` applies to every request, with or without credentials, so that logging in
  never gives less than not logging in;
- ``pull`` globs grant ``pull``; ``push`` globs grant ``push`` and ``delete`` (the pipeline
  demotes by deleting a manifest, and a pusher can already replace what a tag points at);
  neither implies the other;
- what is granted is the intersection of the requested actions and the union over the
  user's groups; ``*`` asked for means every action.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

import re2

from syncer.core.model import AccessGroup
from syncer.core.selection import compile_pattern

ANONYMOUS_GROUP = "anonymous"
# In the order tokens list them; distribution checks each action separately.
ACTIONS = ("pull", "push", "delete")
_PUSH_ACTIONS = frozenset({"push", "delete"})


@lru_cache(maxsize=1024)
def _glob_regex(pattern: str) -> re2._Regexp:
    # Only '*' is special, and it crosses '/': "approved/*" covers approved/bitnami/redis and
    # "*" covers everything. Every other character, '?' and '[' included, is literal. RE2,
    # because under Python's re "*a*a*a*a*a*a*b" takes seconds against a 60-character name,
    # and names come from clients of the token service as well as from access.yaml.
    return compile_pattern(".*".join(re2.escape(part) for part in pattern.split("*")))


def glob_matches(pattern: str, repository: str) -> bool:
    """Whether the repository glob ``pattern`` covers the whole of ``repository``."""
    return _glob_regex(pattern).fullmatch(repository) is not None


def groups_of(user: str | None, groups: Iterable[AccessGroup]) -> tuple[AccessGroup, ...]:
    """The groups whose rules apply to ``user`` (None: a request without credentials)."""
    return tuple(g for g in groups if g.name == ANONYMOUS_GROUP or (user is not None and user in g.members))


def allowed_actions(user: str | None, repository: str, groups: Iterable[AccessGroup]) -> frozenset[str]:
    """Every action ``user`` may perform on ``repository``."""
    allowed: set[str] = set()
    for group in groups_of(user, groups):
        if any(glob_matches(p, repository) for p in group.pull):
            allowed.add("pull")
        if any(glob_matches(p, repository) for p in group.push):
            allowed |= _PUSH_ACTIONS
    return frozenset(allowed)


def granted_actions(
    user: str | None, repository: str, requested: Sequence[str], groups: Iterable[AccessGroup]
) -> tuple[str, ...]:
    """The requested actions ``user`` may perform on ``repository``, in ``ACTIONS`` order.

    Unknown actions are never granted.
    """
    wanted = set(ACTIONS) if "*" in requested else set(requested)
    allowed = allowed_actions(user, repository, groups)
    return tuple(a for a in ACTIONS if a in wanted and a in allowed)
