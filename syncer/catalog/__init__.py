"""Loads the catalog directory into the typed model and checks it, reporting every problem at once.

Reading happens in two steps. Each file is read on its own into ``Located`` values that remember
the line of every key (so that a later check can point at ``policy:`` rather than at the entry);
then the functions in ``CHECKS`` look across files (names unique, policies and signers defined,
exceptions and approvals pointing at real images). Further cross-file checks are added by
appending to ``CHECKS``. A ``Catalog`` is returned only when no error was found.

``reader`` is the bounded, typed YAML reader; ``files`` reads each kind of file; ``checks``
looks across them.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime
from pathlib import Path

from syncer.catalog.checks import CHECKS
from syncer.catalog.files import Draft, _read_all, is_valid_signer_name
from syncer.catalog.reader import MAX_FILE_BYTES, _Reader, _Sink, display_path
from syncer.core.model import Catalog, Location
from syncer.errors import CatalogError, Diagnostic

# What the commands and tests use of the catalog room.
__all__ = [
    "CHECKS",
    "MAX_FILE_BYTES",
    "Draft",
    "check_catalog",
    "display_path",
    "is_valid_signer_name",
    "load_catalog",
    "utc_today",
]


def utc_today() -> date:
    """The date exceptions expire against: UTC, so that CI and laptops agree."""
    return datetime.now(UTC).date()


def load_catalog(root: str | os.PathLike[str] = "catalog") -> Catalog:
    """The checked catalog; raises CatalogError carrying every diagnostic when any is an error."""
    catalog, diagnostics = check_catalog(root, utc_today())
    if catalog is None:
        raise CatalogError(diagnostics)
    return catalog


def check_catalog(root: str | os.PathLike[str], today: date) -> tuple[Catalog | None, list[Diagnostic]]:
    """All errors and warnings, sorted by file and line; the Catalog only when there is no error."""
    root = Path(root)
    draft = Draft(root=root, root_display=display_path(root))
    sink = _Sink()
    if not root.is_dir():
        sink.error(
            Location(draft.root_display, 0),
            "catalog directory not found; run syncer from the repository root or pass --catalog DIR",
        )
        return None, sink.items
    reader = _Reader(sink)
    _read_all(draft, reader)
    for check in CHECKS:
        sink.items.extend(check(draft, today))
    diagnostics = sorted(sink.items, key=lambda d: (d.location.file, d.location.line))
    if any(d.level == "error" for d in diagnostics) or draft.settings is None:
        return None, diagnostics
    return _assemble(draft), diagnostics


def _assemble(draft: Draft) -> Catalog:
    assert draft.settings is not None
    return Catalog(
        root=draft.root_display,
        settings=draft.settings.value,
        images=tuple(i.value for i in draft.images),
        policies={name: p.value for name, p in sorted(draft.policies.items())},
        exceptions=tuple(e.value for e in draft.exceptions),
        approvals=tuple(a.value for a in draft.approvals),
        access=tuple(g.value for g in draft.access),
        signers=dict(sorted(draft.signers.items())),
    )
