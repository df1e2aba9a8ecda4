"""A distribution registry in ``auth: token`` mode behind a real ``syncer auth-server``.

The wiring is ``syncer.demo.tokenauth`` (the demo's too); this adds a catalog of its own
whose ``access.yaml`` tests may rewrite (``set_access``), the people and robot of
SPEC_ACCESS with random passwords, and clients for them. Everything listens on 127.0.0.1
and is stopped at teardown.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from syncer.demo.tokenauth import Robot, TokenAuth, write_users
from syncer.tools.registry import Credentials, RegistryClient

SERVICE = "syncer-token-test"
SKOPEO_TIMEOUT = 60

SPEC_ACCESS = """\
groups:
  developers: {members: [dev1, dev2], pull: ["approved/*"]}
  content-admins: {members: [admin], pull: ["quarantine/*", "approved/*"]}
  pipeline: {members: [syncer], pull: ["*"], push: ["*"]}
"""


def write_catalog(root: Path, access: str) -> None:
    """The smallest catalog ``syncer validate`` accepts, with ``access`` as access.yaml."""
    (root / "policies").mkdir(parents=True)
    (root / "signers").mkdir()
    (root / "settings.yaml").write_text("target: {registry: 127.0.0.1:5000}\n")
    (root / "policies" / "default.yaml").write_text("vulnerabilities: {max: {critical: 0}}\n")
    public = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (root / "signers" / "ci.pub").write_bytes(public)
    (root / "access.yaml").write_text(access)


class TokenWorld:
    """The registry, its token service, the people and robot of SPEC_ACCESS, and helpers."""

    def __init__(self, workdir: Path, *, server_args: tuple[str, ...] = (), realm_host: str = "127.0.0.1"):
        """``realm_host`` names the auth server in the registry's token realm. Trivy (its
        go-containerregistry) refuses a realm at a private or loopback IP literal, so tests
        that scan through this registry use ``localhost``, as production uses a DNS name."""
        self.workdir = workdir
        self.catalog = workdir / "catalog"
        write_catalog(self.catalog, SPEC_ACCESS)
        self.passwords = {
            name: f"pw-{secrets.token_urlsafe(12)}" for name in ("dev1", "dev2", "admin", "outsider")
        }
        self.passwords["syncer"] = f"robot-{secrets.token_urlsafe(24)}"
        self.users_file = workdir / "users.htpasswd"
        write_users(self.users_file, {n: p for n, p in self.passwords.items() if n != "syncer"})
        self.tokens = TokenAuth(
            workdir,
            catalog=self.catalog,
            users=self.users_file,
            robot=Robot("syncer", self.passwords["syncer"]),
            service=SERVICE,
            realm_host=realm_host,
            server_args=server_args,
        )
        self.auth, self.registry = self.tokens.auth, self.tokens.registry
        self.key, self.cert, self.bundle = self.tokens.key, self.tokens.cert, self.tokens.bundle

    def stop(self) -> None:
        self.tokens.stop()

    @property
    def host(self) -> str:
        return self.registry.host

    def set_access(self, text: str) -> None:
        (self.catalog / "access.yaml").write_text(text)

    def credentials(self, user: str, password: str | None = None) -> Credentials:
        return Credentials(user, self.passwords[user] if password is None else password)

    def client(self, user: str | None, password: str | None = None) -> RegistryClient:
        creds = self.credentials(user, password) if user else None
        return RegistryClient(self.host, tls_verify=False, credentials=creds)

    def token(
        self,
        user: str | None,
        *scopes: str,
        password: str | None = None,
        service: str = SERVICE,
        forwarded_for: str | None = None,
    ) -> requests.Response:
        """Asks the token service directly, as a registry client would; ``forwarded_for``
        plays a proxy in front (the auth server needs ``--trusted-proxy 127.0.0.1``)."""
        auth = (user, self.passwords[user] if password is None else password) if user else None
        headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
        return requests.get(
            f"{self.auth.url}/token",
            params={"service": service, "scope": list(scopes)},
            auth=auth,
            headers=headers,
            timeout=10,
        )

    def authfile(self, user: str, password: str | None = None) -> Path:
        """A containers-auth.json for ``user``: credentials reach skopeo through a file."""
        secret = self.passwords[user] if password is None else password
        path = self.workdir / f"auth-{user}-{secrets.token_hex(4)}.json"
        path.touch(mode=0o600)
        token = base64.b64encode(f"{user}:{secret}".encode()).decode()
        path.write_text(json.dumps({"auths": {self.host: {"auth": token}}}))
        return path

    def skopeo_copy(
        self,
        source: str,
        dest: str,
        *,
        src_user: str | None = None,
        src_password: str | None = None,
        dest_user: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``skopeo copy`` between ``oci:``/``docker://`` references; registry refs may be
        written as ``docker://REPO:TAG`` and get this registry's host."""
        flags: list[str] = []
        for prefix, user, password, ref in (
            ("src", src_user, src_password, source),
            ("dest", dest_user, None, dest),
        ):
            if ref.startswith("docker://"):
                flags.append(f"--{prefix}-tls-verify=false")
                if user:
                    flags += [f"--{prefix}-authfile", str(self.authfile(user, password))]
        command = [
            "skopeo",
            "--insecure-policy",
            "copy",
            "--quiet",
            "--retry-times",
            "0",
            *flags,
            self._expand(source),
            self._expand(dest),
        ]
        return subprocess.run(command, capture_output=True, text=True, timeout=SKOPEO_TIMEOUT, check=False)

    def _expand(self, ref: str) -> str:
        return f"docker://{self.host}/{ref.removeprefix('docker://')}" if ref.startswith("docker://") else ref


@pytest.fixture
def token_world(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[TokenWorld]:
    """A token-mode registry and ``syncer auth-server``; ``indirect`` params are extra
    auth-server arguments (e.g. ``("--token-lifetime", "30")``)."""
    world = TokenWorld(tmp_path, server_args=tuple(getattr(request, "param", ())))
    try:
        yield world
    finally:
        world.stop()
