"""How hard the property-based tests search: every example count of the suite in full under
``bash scripts/test`` (and so in CI), which sets ``SYNCER_HYPOTHESIS=thorough``; a sixth of
it when a developer runs ``pytest tests/unit`` alone, so that the unit tier stays a quick
loop. The properties and their assertions are the same in both."""

from __future__ import annotations

import os

from hypothesis import settings

THOROUGH = os.environ.get("SYNCER_HYPOTHESIS", "quick") == "thorough"

settings.register_profile("thorough", max_examples=100)
settings.register_profile("quick", max_examples=20)
settings.load_profile("thorough" if THOROUGH else "quick")


def examples(thorough: int) -> int:
    """The example count of a test whose full search is ``thorough`` examples."""
    return thorough if THOROUGH else max(10, thorough // 6)
