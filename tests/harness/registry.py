"""Registry fixtures: real CNCF distribution processes from ``syncer.demo.registry``."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

import pytest

from syncer.demo.registry import (  # noqa: F401 - re-exported for tests
    HARNESS_AGENT,
    STARTUP_TIMEOUT,
    STOP_TIMEOUT,
    Registry,
    RegistryStartError,
    Request,
    free_port,
    make_tls_material,
    write_htpasswd,
)


@pytest.fixture
def registry_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Registry]]:
    """Makes registries: ``registry_factory(htpasswd=(u, p), tls=True, client_auth=True,
    delete=True)``.

    Every registry made is stopped at teardown.
    """
    made: list[Registry] = []

    def make(
        *,
        htpasswd: tuple[str, str] | None = None,
        tls: bool = False,
        client_auth: bool = False,
        delete: bool = False,
    ) -> Registry:
        reg = Registry(
            tmp_path_factory.mktemp("registry"),
            htpasswd=htpasswd,
            tls=tls,
            client_auth=client_auth,
            delete=delete,
        )
        made.append(reg)
        return reg

    yield make
    for reg in made:
        reg.stop()


@pytest.fixture
def registry(registry_factory: Callable[..., Registry]) -> Registry:
    """Plain HTTP, no auth, delete enabled."""
    return registry_factory(delete=True)


@pytest.fixture
def auth_registry(registry_factory: Callable[..., Registry]) -> Registry:
    """Plain HTTP with basic auth; the password is random per test."""
    return registry_factory(htpasswd=("syncer", f"pw-{secrets.token_urlsafe(12)}"))


@pytest.fixture
def tls_registry(registry_factory: Callable[..., Registry]) -> Registry:
    """HTTPS with a CA made for this test (``ca_file``, ``cert_dir``), no auth."""
    return registry_factory(tls=True)
