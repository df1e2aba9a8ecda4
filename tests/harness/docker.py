"""Docker mode: every test registry runs as a container of tests/docker-compose.yml.

``SYNCER_TEST_REGISTRIES=docker`` (set by ``bash scripts/test --docker``, which also makes the
image and, if needed, the engine: scripts/docker-env) turns it on for the session; the native
processes are the default. pytest-docker's ``docker_services`` owns the compose project: it
checks the file at the start and ``down`` removes, at the end, any container a test left.

Each ``Registry`` is one container of the file's ``registry`` service, started with
``docker run`` (a ``docker-compose run`` costs about 4 s, ``docker run`` under 0.5 s, and a
run of the e2e tests starts hundreds) carrying compose's labels, so that the project owns
it. It serves the config.yml the harness wrote, on the host's network, with the registry's
directory and the session's temporary root mounted at their own paths; ``docker logs -f``
appends its output to the registry's log, so the access-log counting works unchanged.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pytest
import yaml

from syncer.demo.registry import Registry, terminate

MODE_VARIABLE = "SYNCER_TEST_REGISTRIES"
COMPOSE_FILE = Path(__file__).resolve().parent.parent / "docker-compose.yml"
SERVICE = "registry"
DOCKER_TIMEOUT = 60
# The service keys this harness knows how to turn into `docker run` options.
_KNOWN_KEYS = {"image", "profiles", "network_mode", "entrypoint", "command"}


def docker_mode() -> bool:
    mode = os.environ.get(MODE_VARIABLE, "native")
    if mode not in ("native", "docker"):
        raise pytest.UsageError(f"{MODE_VARIABLE}={mode!r}: use 'native' (the default) or 'docker'")
    return mode == "docker"


def _docker(*args: str) -> str:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=DOCKER_TIMEOUT, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:2])} failed: {result.stderr.strip()}")
    return result.stdout.strip()


@dataclass
class _Container:
    name: str
    logs: subprocess.Popen[bytes]

    def poll(self) -> int | None:
        # `docker logs -f` ends when the container does.
        return self.logs.poll()

    def stop(self, timeout: float) -> None:
        subprocess.run(
            ["docker", "stop", "-t", str(max(1, round(timeout))), self.name],
            capture_output=True,
            timeout=DOCKER_TIMEOUT,
            check=False,
        )
        subprocess.run(
            ["docker", "rm", "-f", self.name], capture_output=True, timeout=DOCKER_TIMEOUT, check=False
        )
        terminate(self.logs, timeout)


@dataclass(frozen=True)
class DockerLauncher:
    """``Registry.launcher`` for docker mode: the compose service as ``docker run`` options."""

    project: str
    image: str
    network_mode: str
    entrypoint: tuple[str, ...]
    mounts: tuple[Path, ...]

    @classmethod
    def from_compose(cls, compose_file: Path, project: str, mounts: tuple[Path, ...]) -> DockerLauncher:
        service = yaml.safe_load(compose_file.read_text())["services"][SERVICE]
        unknown = set(service) - _KNOWN_KEYS
        if unknown:
            raise pytest.UsageError(
                f"{compose_file}: service {SERVICE!r} uses {sorted(unknown)}, which "
                "tests/harness/docker.py does not turn into docker run options"
            )
        if service.get("network_mode") != "host":
            raise pytest.UsageError(
                f"{compose_file}: service {SERVICE!r} needs network_mode: host "
                "(registries listen on 127.0.0.1 ports the tests choose)"
            )
        return cls(project, service["image"], service["network_mode"], tuple(service["entrypoint"]), mounts)

    def __call__(self, workdir: Path, config_file: Path, log: BinaryIO) -> _Container:
        name = f"{self.project}_{SERVICE}_{uuid.uuid4().hex[:12]}"
        volumes = []
        for root in _outermost((workdir.resolve(), *self.mounts)):
            volumes += ["-v", f"{root}:{root}"]
        _docker(
            "run",
            "--detach",
            "--name",
            name,
            "--label",
            f"com.docker.compose.project={self.project}",
            "--label",
            f"com.docker.compose.service={SERVICE}",
            "--label",
            "com.docker.compose.oneoff=True",
            "--network",
            self.network_mode,
            "--user",
            f"{os.getuid()}:{os.getgid()}",
            *volumes,
            "--entrypoint",
            self.entrypoint[0],
            self.image,
            *self.entrypoint[1:],
            "serve",
            str(config_file.resolve()),
        )
        logs = subprocess.Popen(
            ["docker", "logs", "--follow", name],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return _Container(name, logs)


def _outermost(paths: tuple[Path, ...]) -> list[Path]:
    """The paths not inside another one of them: one mount each."""
    return sorted({p for p in paths if not any(o != p and p.is_relative_to(o) for o in paths)})


@pytest.fixture(scope="session")
def docker_compose_command() -> str:
    # Debian's docker-compose is Compose v1; `docker compose` (v2) where that is all there is.
    return (
        "docker-compose"
        if subprocess.run(
            ["sh", "-c", "command -v docker-compose"], capture_output=True, check=False
        ).returncode
        == 0
        else "docker compose"
    )


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(COMPOSE_FILE)


@pytest.fixture(scope="session")
def docker_setup() -> list[str]:
    # Nothing to bring up: the registry service's profile keeps it for the per-test containers.
    # `config -q` fails the session at once on a compose file the engine's compose rejects.
    return ["config -q"]


@pytest.fixture(scope="session", autouse=True)
def registries_in_docker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    if not docker_mode():
        yield
        return
    request.getfixturevalue("docker_services")
    project = request.getfixturevalue("docker_compose_project_name")
    launcher = DockerLauncher.from_compose(COMPOSE_FILE, project, (tmp_path_factory.getbasetemp().resolve(),))
    native = vars(Registry)["launcher"]
    Registry.launcher = launcher
    try:
        yield
    finally:
        Registry.launcher = native
