"""The ``trivy_db`` fixture over ``syncer.sandbox.trivydb`` (Trivy's on-disk DB written in Python)."""

from __future__ import annotations

import pytest

from syncer.sandbox.trivydb import (  # noqa: F401 - re-exported for tests
    PAGE_SIZE,
    Bucket,
    encode_bbolt,
    ECOSYSTEMS,
    Advisory,
    trivy_buckets,
    write_trivy_db,
    JavaArtifact,
    write_java_db,
    DEFAULT_UPDATED_AT,
    DEFAULT_ADVISORIES,
    TrivyDB,
)


@pytest.fixture
def trivy_db(tmp_path_factory) -> TrivyDB:
    """A fresh cache directory holding DEFAULT_ADVISORIES, UpdatedAt DEFAULT_UPDATED_AT, and an
    empty Java DB: with both fresh, a run that may update them downloads nothing."""
    db = TrivyDB(tmp_path_factory.mktemp("trivy-cache"), DEFAULT_ADVISORIES)
    return db.write(updated_at=DEFAULT_UPDATED_AT).write_java()
