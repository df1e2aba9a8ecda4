"""A distribution registry in ``auth: token`` mode behind a real ``syncer auth-server``.

Wired the way docs/access.md tells an operator to: ``syncer access-config`` writes the
signing key and prints the registry's ``auth`` section, which goes into the registry's
config unchanged; ``syncer auth-server`` runs as its own process with a bcrypt htpasswd
file written by ``htpasswd -B``, a robot secret from the environment, and a catalog of its
own whose ``access.yaml`` tests may rewrite (``set_access``). Everything listens on
127.0.0.1 and is stopped at teardown.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import secrets
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from ruamel.yaml import YAML

from syncer import cli
from syncer.registry import Credentials, RegistryClient
from tests.harness.registry import Registry

SERVICE = "syncer-token-test"
ROBOT_VAR = "SYNCER_TEST_ROBOT"
STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
SKOPEO_TIMEOUT = 60

SPEC_ACCESS = """\
groups:
  developers: {members: [dev1, dev2], pull: ["approved/*"]}
  content-admins: {members: [admin], pull: ["quarantine/*", "approved/*"]}
  pipeline: {members: [syncer], pull: ["*"], push: ["*"]}
"""
_LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)/token")


def write_catalog(root: Path, access: str) -> None:
    """The smallest catalog ``syncer validate`` accepts, with ``access`` as access.yaml."""
    (root / "policies").mkdir(parents=True)
    (root / "signers").mkdir()
    (root / "settings.yaml").write_text("target: {registry: 127.0.0.1:5000}\n")
    (root / "policies" / "default.yaml").write_text("vulnerabilities: {max: {critical: 0}}\n")
    public = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (root / "signers" / "ci.pub").write_bytes(public)
    (root / "access.yaml").write_text(access)


def write_users(path: Path, users: dict[str, str]) -> None:
    lines = []
    for name, password in users.items():
        # -i: the password comes on stdin, never on a command line.
        result = subprocess.run(["htpasswd", "-iBn", name], input=password, text=True,
                                capture_output=True, timeout=30, check=True)
        lines.append(result.stdout.strip())
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def access_config(auth_url: str, out: Path, catalog: Path) -> dict:
    """Runs ``syncer access-config`` and returns what it printed, parsed as YAML."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(["access-config", "--auth-url", auth_url, "--service", SERVICE,
                         "--out", str(out), "--catalog", str(catalog)])
    assert code == 0, stdout.getvalue()
    return YAML(typ="safe").load(stdout.getvalue())


class AuthServerProcess:
    """``syncer auth-server`` on a free port, its stderr (the audit log) in ``log_file``."""

    def __init__(self, workdir: Path, *, key: Path, cert: Path, catalog: Path, users: Path,
                 robot: str, extra: tuple[str, ...] = ()):
        self.log_file = workdir / "auth-server.log"
        command = [sys.executable, "-m", "syncer", "auth-server", "--listen", "127.0.0.1:0",
                   "--key", str(key), "--cert", str(cert), "--catalog", str(catalog),
                   "--users", str(users), "--robots-env", ROBOT_VAR, *extra]
        env = {**os.environ, ROBOT_VAR: robot}
        with self.log_file.open("wb") as log:
            self._process: subprocess.Popen[bytes] | None = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.port = self._wait_for_port(command)

    def _wait_for_port(self, command: list[str]) -> int:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            found = _LISTENING.search(self.log_file.read_text(errors="replace"))
            if found:
                return int(found.group(1))
            if self._process is not None and self._process.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{shlex.join(command)} did not start; log:\n"
                           f"{self.log_file.read_text(errors='replace')}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def events(self) -> list[dict[str, str]]:
        """The audit lines as dicts: ``{"time": …, "event": "grant", "user": "dev1", …}``."""
        found = []
        for line in self.log().splitlines():
            time_text, _, rest = line.partition(" ")
            if not rest.startswith("event="):
                continue
            fields = dict(re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', rest))
            found.append({"time": time_text,
                          **{k: json.loads(v) if v.startswith('"') else v
                             for k, v in fields.items()}})
        return found


class TokenAuthRegistry(Registry):
    """The harness registry with the ``auth`` section ``syncer access-config`` printed."""

    def __init__(self, workdir: Path, auth: dict):
        self._auth = auth
        super().__init__(workdir, delete=True)

    def _write_config(self) -> None:
        super()._write_config()
        config = json.loads(self.config_file.read_text())
        config["auth"] = self._auth
        self.config_file.write_text(json.dumps(config, indent=2))


class TokenWorld:
    """The registry, its token service, the people and robot of SPEC_ACCESS, and helpers."""

    def __init__(self, workdir: Path, *, server_args: tuple[str, ...] = (), realm_host: str = "127.0.0.1"):
        """``realm_host`` names the auth server in the registry's token realm. Trivy (its
        go-containerregistry) refuses a realm at a private or loopback IP literal, so tests
        that scan through this registry use ``localhost``, as production uses a DNS name."""
        self.workdir = workdir
        self.catalog = workdir / "catalog"
        write_catalog(self.catalog, SPEC_ACCESS)
        self.passwords = {name: f"pw-{secrets.token_urlsafe(12)}"
                          for name in ("dev1", "dev2", "admin", "outsider")}
        self.passwords["syncer"] = f"robot-{secrets.token_urlsafe(24)}"
        self.users_file = workdir / "users.htpasswd"
        write_users(self.users_file, {n: p for n, p in self.passwords.items() if n != "syncer"})
        keys = workdir / "token-keys"
        # The key is made once; the second run (with the real URL) reuses it, as it would
        # when an operator runs access-config again.
        first = access_config("http://127.0.0.1:1", keys, self.catalog)
        self.bundle = Path(first["auth"]["token"]["rootcertbundle"])
        self.key, self.cert = keys / "token-signing.key", keys / "token-signing.crt"
        self.auth = AuthServerProcess(workdir, key=self.key, cert=self.cert,
                                      catalog=self.catalog, users=self.users_file,
                                      robot=f"syncer:{self.passwords['syncer']}",
                                      extra=server_args)
        self.registry: TokenAuthRegistry | None = None
        try:
            config = access_config(self.auth.url.replace("127.0.0.1", realm_host), keys, self.catalog)
            self.registry = TokenAuthRegistry(workdir / "registry", config["auth"])
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.registry is not None:
            self.registry.stop()
        self.auth.stop()

    @property
    def host(self) -> str:
        assert self.registry is not None
        return self.registry.host

    def set_access(self, text: str) -> None:
        (self.catalog / "access.yaml").write_text(text)

    def credentials(self, user: str, password: str | None = None) -> Credentials:
        return Credentials(user, self.passwords[user] if password is None else password)

    def client(self, user: str | None, password: str | None = None) -> RegistryClient:
        creds = self.credentials(user, password) if user else None
        return RegistryClient(self.host, tls_verify=False, credentials=creds)

    def token(self, user: str | None, *scopes: str, password: str | None = None,
              service: str = SERVICE) -> requests.Response:
        """Asks the token service directly, as a registry client would."""
        auth = (user, self.passwords[user] if password is None else password) if user else None
        return requests.get(f"{self.auth.url}/token", params={"service": service,
                                                               "scope": list(scopes)},
                            auth=auth, timeout=10)

    def authfile(self, user: str, password: str | None = None) -> Path:
        """A containers-auth.json for ``user``: credentials reach skopeo through a file."""
        secret = self.passwords[user] if password is None else password
        path = self.workdir / f"auth-{user}-{secrets.token_hex(4)}.json"
        path.touch(mode=0o600)
        token = base64.b64encode(f"{user}:{secret}".encode()).decode()
        path.write_text(json.dumps({"auths": {self.host: {"auth": token}}}))
        return path

    def skopeo_copy(self, source: str, dest: str, *, src_user: str | None = None,
                    src_password: str | None = None, dest_user: str | None = None,
                    ) -> subprocess.CompletedProcess[str]:
        """``skopeo copy`` between ``oci:``/``docker://`` references; registry refs may be
        written as ``docker://REPO:TAG`` and get this registry's host."""
        flags: list[str] = []
        for prefix, user, password, ref in (("src", src_user, src_password, source),
                                            ("dest", dest_user, None, dest)):
            if ref.startswith("docker://"):
                flags.append(f"--{prefix}-tls-verify=false")
                if user:
                    flags += [f"--{prefix}-authfile", str(self.authfile(user, password))]
        command = ["skopeo", "--insecure-policy", "copy", "--quiet", "--retry-times", "0",
                   *flags, self._expand(source), self._expand(dest)]
        return subprocess.run(command, capture_output=True, text=True, timeout=SKOPEO_TIMEOUT,
                              check=False)

    def _expand(self, ref: str) -> str:
        return f"docker://{self.host}/{ref.removeprefix('docker://')}" \
            if ref.startswith("docker://") else ref


@pytest.fixture
def token_world(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[TokenWorld]:
    """A token-mode registry and ``syncer auth-server``; ``indirect`` params are extra
    auth-server arguments (e.g. ``("--token-lifetime", "30")``)."""
    world = TokenWorld(tmp_path, server_args=tuple(getattr(request, "param", ())))
    try:
        yield world
    finally:
        world.stop()
