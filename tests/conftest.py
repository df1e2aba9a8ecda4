"""Fixtures of real parts, shared by every test.

Each harness module defines its own fixtures; they are loaded here as plugins so that any
test can ask for them by name.
"""

pytest_plugins = [
    "tests.harness.registry",
    "tests.harness.docker",
    "tests.harness.images",
    "tests.harness.gitrepo",
    "tests.harness.trivydb",
    "tests.harness.world",
    "tests.harness.tokenregistry",
]
