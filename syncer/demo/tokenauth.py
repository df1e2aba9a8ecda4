"""A registry in ``auth: token`` mode behind a real ``syncer auth-server``, on this machine.

Wired the way docs/access.md tells an operator to: ``syncer access-config`` writes the token
signing key and prints the registry's ``auth`` section, which goes into the registry's config
unchanged; ``syncer auth-server`` runs as its own process with a bcrypt htpasswd file
(``htpasswd -B``), the robot's secret in its environment only, and a catalog whose
``access.yaml`` it enforces (and reloads when it changes). The demo (``syncer demo --access``)
and the tests use it. Everything listens on 127.0.0.1 and ``stop()`` ends it all.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from syncer.access.authserver import MIN_BCRYPT_COST
from syncer.demo.registry import Registry, terminate
from syncer.errors import RegistryAuthError, RegistryError
from syncer.tools.registry import Credentials, RegistryClient

ROBOT_VAR = "SYNCER_ROBOT"
STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
COMMAND_TIMEOUT = 60
# The port the auth server took for --listen 127.0.0.1:0, from its first line.
_LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)/token")
# The realm of the first access-config run, made only for the key: no registry ever sees it.
_PLACEHOLDER_URL = "http://127.0.0.1:1"


@dataclass(frozen=True)
class Robot:
    """A robot account of the token service (the pipeline): its name in access.yaml, its secret."""

    name: str
    secret: str = field(repr=False)


class AuthServerStartError(RuntimeError):
    """``syncer auth-server`` did not come up; the message carries its log."""


def write_users(path: Path, users: dict[str, str], *, cost: int = MIN_BCRYPT_COST) -> None:
    """An htpasswd file with bcrypt hashes of ``cost``, as ``--users`` requires, mode 0600."""
    lines = []
    for name, password in users.items():
        # -i: the password comes on stdin, never on a command line.
        done = subprocess.run(
            ["htpasswd", "-iBn", "-C", str(cost), name],
            input=password,
            text=True,
            capture_output=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        if done.returncode:
            raise RuntimeError(f"htpasswd failed for user {name!r}: {done.stderr.strip()}")
        lines.append(done.stdout.strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def access_config(auth_url: str, service: str, out: Path) -> dict:
    """Runs ``syncer access-config --json``; returns ``{"auth": …, "key": …, "cert": …}``.

    A second run with the same ``out`` reuses the key, as it does for an operator.
    """
    command = [
        sys.executable,
        "-m",
        "syncer",
        "access-config",
        "--json",
        "--auth-url",
        auth_url,
        "--service",
        service,
        "--out",
        str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)
    if done.returncode:
        raise RuntimeError(f"{shlex.join(command)} failed: {done.stderr.strip()}")
    return json.loads(done.stdout)


class AuthServer:
    """``syncer auth-server`` on a free port of 127.0.0.1; its stderr (the audit log) is
    appended to ``log_file``, so that the log of a kept directory spans its restarts."""

    def __init__(
        self,
        log_file: Path,
        *,
        key: Path,
        cert: Path,
        catalog: Path,
        users: Path,
        robot: Robot,
        extra: tuple[str, ...] = (),
    ):
        self.log_file = log_file
        command = [
            sys.executable,
            "-m",
            "syncer",
            "auth-server",
            "--listen",
            "127.0.0.1:0",
            "--key",
            str(key),
            "--cert",
            str(cert),
            "--catalog",
            str(catalog),
            "--users",
            str(users),
            "--robots-env",
            ROBOT_VAR,
            *extra,
        ]
        env = {**os.environ, ROBOT_VAR: f"{robot.name}:{robot.secret}"}
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("ab") as log:
            self._offset = log.tell()
            self._process: subprocess.Popen[bytes] | None = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        self.port = self._wait_for_port(command)

    def _wait_for_port(self, command: list[str]) -> int:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            found = _LISTENING.search(self.log())
            if found:
                return int(found.group(1))
            if self._process is None or self._process.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise AuthServerStartError(f"{shlex.join(command)} did not start; log:\n{self.log()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        process, self._process = self._process, None
        terminate(process, STOP_TIMEOUT)

    def log(self) -> str:
        """What this process logged (not earlier runs into the same file)."""
        with self.log_file.open("rb") as log:
            log.seek(self._offset)
            return log.read().decode(errors="replace")

    def events(self) -> list[dict[str, str]]:
        """The audit lines as dicts: ``{"time": …, "event": "grant", "user": "dev1", …}``."""
        return parse_events(self.log())


def parse_events(log: str) -> list[dict[str, str]]:
    """Audit lines (``TIME event=… key=value key="quoted value"``) as dicts."""
    found = []
    for line in log.splitlines():
        time_text, _, rest = line.partition(" ")
        if not rest.startswith("event="):
            continue
        fields = dict(re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', rest))
        found.append(
            {"time": time_text, **{k: json.loads(v) if v.startswith('"') else v for k, v in fields.items()}}
        )
    return found


class TokenAuth:
    """A token-mode registry (``registry``) and the auth server (``auth``) it trusts.

    ``realm_host`` names the auth server in the registry's token realm. Trivy (its
    go-containerregistry) refuses a realm at a private or loopback IP literal, so anything
    that is scanned through this registry needs ``localhost``, as production needs a DNS name.
    ``port`` is the registry's preferred port (another is taken if it is busy).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        catalog: Path,
        users: Path,
        robot: Robot,
        service: str,
        realm_host: str = "localhost",
        port: int | None = None,
        server_args: tuple[str, ...] = (),
    ):
        keys = workdir / "token-keys"
        first = access_config(_PLACEHOLDER_URL, service, keys)
        self.key, self.cert = Path(first["key"]), Path(first["cert"])
        self.bundle = Path(first["auth"]["token"]["rootcertbundle"])
        self.auth = AuthServer(
            workdir / "auth-server.log",
            key=self.key,
            cert=self.cert,
            catalog=catalog,
            users=users,
            robot=robot,
            extra=server_args,
        )
        try:
            config = access_config(self.auth.url.replace("127.0.0.1", realm_host), service, keys)
            self.registry = Registry(workdir / "registry", delete=True, auth=config["auth"], port=port)
        except BaseException:
            self.auth.stop()
            raise

    def stop(self) -> None:
        self.registry.stop()
        self.auth.stop()


@dataclass(frozen=True)
class AccessCheck:
    """One thing a person tries against the registry, and what access.yaml says should happen."""

    user: str
    action: Literal["pull", "push"]  # a manifest GET | a blob upload
    repository: str
    tag: str = ""  # the pulled tag; a push uploads a blob and names none
    expected: bool = True

    @property
    def target(self) -> str:
        return f"{self.repository}:{self.tag}" if self.tag else self.repository


@dataclass(frozen=True)
class AccessResult:
    check: AccessCheck
    allowed: bool | None  # None: neither granted nor refused (the registry failed otherwise)
    detail: str = ""  # the pulled digest, or why the attempt failed

    @property
    def as_expected(self) -> bool:
        return self.allowed is self.check.expected


def try_access(host: str, check: AccessCheck, password: str) -> AccessResult:
    """Tries ``check`` as its user with ``password``, the way a registry client would."""
    creds = Credentials(check.user, password, origin=f"the password of {check.user}")
    with RegistryClient(host, tls_verify=False, credentials=creds, max_retries=1) as client:
        try:
            if check.action == "pull":
                return AccessResult(check, True, client.get_manifest(check.repository, check.tag).digest)
            # Content-addressed and tiny: were the push let through, it would only add a blob
            # nothing refers to.
            client.put_blob(check.repository, f"pushed by {check.user}\n".encode())
            return AccessResult(check, True)
        except RegistryAuthError:
            return AccessResult(check, False)
        except RegistryError as err:
            return AccessResult(check, None, str(err))
