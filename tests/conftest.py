"""Fixtures of real parts, shared by every test.

Each harness module defines its own fixtures; they are loaded here as plugins so that any
test can ask for them by name.
"""

pytest_plugins = [
    "tests.harness.properties",
    "tests.harness.registry",
    "tests.harness.docker",
    "tests.harness.images",
    "tests.harness.gitrepo",
    "tests.harness.trivydb",
    "tests.harness.world",
    "tests.harness.tokenregistry",
]


def pytest_collection_modifyitems(config, items):
    """The tier is the directory: tests/unit/ is fast and starts no registry, skopeo, Trivy,
    git or syncer process; tests/e2e/ runs the real registry, skopeo, Trivy, git or the CLI.
    Each test gets its tier's marker, so ``-m unit`` and ``-m e2e`` select exactly those."""
    import pytest

    for item in items:
        tier = item.path.parent.name
        if tier in ("unit", "e2e"):
            item.add_marker(getattr(pytest.mark, tier))
