"""The registry fixtures, exercised through real clients (requests, skopeo)."""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from syncer.demo import registry as registry_module
from tests.harness import docker as harness_docker
from tests.harness.docker import docker_mode
from tests.harness.images import debian_files
from tests.harness.registry import Registry, Request

pytestmark = [pytest.mark.e2e, pytest.mark.docker]


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=60, check=False)


def test_registry_answers_v2_and_logs_each_request(registry: Registry) -> None:
    with registry.session() as session:
        assert session.get(f"{registry.url}/v2/").status_code == 200
        assert session.head(f"{registry.url}/v2/library/nginx/manifests/1.27").status_code == 404

    # The harness's own readiness polls and log barriers are not counted.
    assert registry.requests() == [
        Request("GET", "/v2/", 200),
        Request("HEAD", "/v2/library/nginx/manifests/1.27", 404),
    ]
    assert registry.count("HEAD", path_contains="/manifests/") == 1
    assert registry.count("GET", path_contains="/manifests/") == 0


def test_counts_what_skopeo_asks_for(registry: Registry, push_image) -> None:
    digest = push_image(registry, "library/debian:12", debian_files())
    gets_before = registry.count("GET", path_contains="/library/debian/manifests/")

    result = skopeo(
        "inspect", "--raw", *registry.skopeo_flags(), f"docker://{registry.host}/library/debian:12"
    )

    assert result.returncode == 0, result.stderr
    assert "sha256:" + hashlib.sha256(result.stdout.encode()).hexdigest() == digest
    assert registry.count("GET", path_contains="/library/debian/manifests/") == gets_before + 1


def test_auth_registry_refuses_anonymous_and_wrong_password(auth_registry: Registry) -> None:
    url = f"{auth_registry.url}/v2/"
    with auth_registry.session(auth=False) as anonymous:
        refused = anonymous.get(url)
        wrong = anonymous.get(url, auth=(auth_registry.username, "not-the-password"))
    with auth_registry.session() as session:
        accepted = session.get(url)

    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Basic")
    assert wrong.status_code == 401
    assert accepted.status_code == 200
    assert [r.status for r in auth_registry.requests()] == [401, 401, 200]


def test_auth_registry_works_with_skopeo_and_keeps_the_password_out_of_sight(
    auth_registry: Registry, push_image
) -> None:
    digest = push_image(auth_registry, "team/app:1", debian_files())
    flags = auth_registry.skopeo_flags()
    ref = f"docker://{auth_registry.host}/team/app:1"

    with_creds = skopeo("inspect", "--raw", *flags, ref)
    without = skopeo("inspect", "--raw", "--tls-verify=false", "--no-creds", ref)

    assert with_creds.returncode == 0, with_creds.stderr
    assert "sha256:" + hashlib.sha256(with_creds.stdout.encode()).hexdigest() == digest
    assert without.returncode != 0
    assert "authentication required" in without.stderr.lower() or "unauthorized" in without.stderr.lower()
    assert auth_registry.password not in " ".join(flags)
    assert auth_registry.password not in auth_registry.log_file.read_text()


def test_tls_registry_is_trusted_only_with_its_ca(tls_registry: Registry, push_image) -> None:
    assert tls_registry.url.startswith("https://127.0.0.1:")
    assert tls_registry.ca_file is not None and tls_registry.cert_dir is not None
    assert sorted(p.name for p in tls_registry.cert_dir.iterdir()) == ["ca.crt"]
    with tls_registry.session() as session:
        assert session.get(f"{tls_registry.url}/v2/").status_code == 200
        with pytest.raises(requests.exceptions.SSLError):
            session.get(f"{tls_registry.url}/v2/", verify=True)

    push_image(tls_registry, "secure/app:1", debian_files())
    ref = f"docker://{tls_registry.host}/secure/app:1"
    trusted = skopeo("inspect", "--raw", *tls_registry.skopeo_flags(), ref)
    untrusted = skopeo("inspect", "--raw", ref)

    assert trusted.returncode == 0, trusted.stderr
    assert untrusted.returncode != 0
    assert "certificate" in untrusted.stderr


def test_tls_and_auth_together(registry_factory) -> None:
    reg = registry_factory(tls=True, htpasswd=("pipeline", "both-at-once"))
    with reg.session() as session:
        assert session.get(f"{reg.url}/v2/").status_code == 200
    with reg.session(auth=False) as anonymous:
        assert anonymous.get(f"{reg.url}/v2/").status_code == 401


def test_delete_is_enabled_only_when_asked(registry: Registry, registry_factory, push_image) -> None:
    no_delete = registry_factory()
    for reg, expected in ((registry, 202), (no_delete, 405)):
        digest = push_image(reg, "library/debian:12", debian_files())
        with reg.session() as session:
            response = session.delete(f"{reg.url}/v2/library/debian/manifests/{digest}")
        assert response.status_code == expected, (reg.delete, response.text)


def test_stop_and_start_keep_port_and_storage(registry: Registry, push_image) -> None:
    digest = push_image(registry, "library/debian:12", debian_files())
    host = registry.host
    manifest_url = f"{registry.url}/v2/library/debian/manifests/12"
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}

    registry.stop()
    assert not registry.running
    with registry.session() as session, pytest.raises(requests.ConnectionError):
        session.head(manifest_url, headers=accept, timeout=2)

    registry.start()
    assert registry.host == host
    with registry.session() as session:
        response = session.head(manifest_url, headers=accept, timeout=2)
    assert response.status_code == 200
    assert response.headers["Docker-Content-Digest"] == digest
    # The log spans both lives of the process.
    assert registry.count("HEAD", path_contains="/manifests/12") == 1
    assert registry.count("PUT", path_contains="/manifests/12") == 1


def test_registry_starts_fast_and_its_context_stops_it(tmp_path: Path) -> None:
    started = time.monotonic()
    with Registry(tmp_path / "reg") as reg:
        startup = time.monotonic() - started
        assert reg.running
        session = reg.session()
        assert session.get(f"{reg.url}/v2/", timeout=2).status_code == 200

    assert not reg.running
    with session, pytest.raises(requests.ConnectionError):
        session.get(f"{reg.url}/v2/", timeout=2)
    # Typically 15-40 ms; the bound leaves room for two shared, busy cores.
    assert startup < 3.0


def test_a_port_taken_after_it_was_chosen_is_replaced(tmp_path: Path, monkeypatch) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken, registry_module.free_port()])
        monkeypatch.setattr(registry_module, "free_port", lambda: next(ports))

        with Registry(tmp_path / "reg") as reg:
            assert reg.port != taken
            assert reg.running
        assert "address already in use" in reg.log_file.read_text()


def test_the_registry_runs_as_the_mode_says(registry: Registry) -> None:
    """Natively by default; as a container of tests/docker-compose.yml's project when
    SYNCER_TEST_REGISTRIES=docker (bash scripts/test --docker)."""
    process = registry._process
    if docker_mode():
        assert isinstance(process, harness_docker._Container)
        inspect = subprocess.run(
            [
                "docker",
                "inspect",
                "--format",
                '{{.State.Running}} {{.HostConfig.NetworkMode}} {{index .Config.Labels "com.docker.compose.service"}}',
                process.name,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert inspect.stdout.split() == ["true", "host", "registry"]
        registry.stop()
        gone = subprocess.run(
            ["docker", "inspect", process.name], capture_output=True, timeout=30, check=False
        )
        assert gone.returncode != 0, "the container outlived its registry"
    else:
        assert isinstance(process, registry_module._NativeProcess)
        assert (
            Path(f"/proc/{process.popen.pid}/exe").resolve()
            == Path(shutil.which("docker-registry")).resolve()
        )
