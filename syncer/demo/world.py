"""The built-in demo: the whole pipeline, offline, on this machine.

A registry process plays Docker Hub (seeded with small images carrying real package
metadata), another is the trusted registry, a generated database stands in for Trivy's, and
a git repository with a bare remote holds the catalog and receives the audit trail. The first
invocation runs the pipeline, then moves one upstream tag to a vulnerable digest and runs it
again, so that every state a reviewer meets shows up. Later invocations change nothing.

With ``access=True`` the trusted registry runs in ``auth: token`` mode behind a real
``syncer auth-server`` enforcing the demo catalog's access.yaml; the pipeline logs in as the
robot ``syncer``, and the demo ends by showing what people may and may not do there.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from syncer.core import cosign
from syncer.demo.images import (
    Artifact,
    alpine_files,
    build_image,
    build_index,
    debian_files,
    push,
    python_package_files,
)
from syncer.demo.registry import Registry, free_port
from syncer.demo.tokenauth import AccessCheck, AccessResult, Robot, TokenAuth, try_access, write_users
from syncer.demo.trivydb import Advisory, write_java_db, write_trivy_db
from syncer.errors import UsageError
from syncer.trail.ledger import Ledger

PASSPHRASE = "syncer-demo-passphrase"
DB_UPDATED_AT = datetime(2026, 11, 1, tzinfo=UTC)
TOKEN_SERVICE = "syncer-demo"
# The people of CATALOG's access.yaml, with demo passwords (bcrypt-hashed for the auth server).
PEOPLE = {"dev1": "dev1-demo-password", "dev2": "dev2-demo-password", "admin": "admin-demo-password"}
ROBOT = "syncer"
# What the demo tries at the end, and what access.yaml says must happen.
ACCESS_CHECKS = (
    AccessCheck("dev1", "pull", "approved/nginx", "1.27.4", expected=True),
    AccessCheck("dev1", "pull", "quarantine/nginx", "1.27.3", expected=False),
    AccessCheck("dev1", "push", "approved/nginx", expected=False),
    AccessCheck("admin", "pull", "quarantine/nginx", "1.27.3", expected=True),
)

DEBIAN = [
    ("base-files", "12.4+deb12u8", "base-files"),
    ("libc6", "2.36-9+deb12u9", "glibc"),
    ("libssl3", "3.0.15-1~deb12u1", "openssl"),
    ("zlib1g", "1:1.2.13.dfsg-1", "zlib"),
]
ALPINE = [
    ("musl", "1.2.5-r0", "musl"),
    ("busybox", "1.36.1-r29", "busybox"),
    ("libcrypto3", "3.3.2-r1", "openssl"),
]


def _debian(**replace: str) -> list[tuple[str, str, str]]:
    return [(n, replace.get(n, v), s) for n, v, s in DEBIAN]


def _alpine(**replace: str) -> list[tuple[str, str, str]]:
    return [(n, replace.get(n, v), s) for n, v, s in ALPINE]


ADVISORIES = (
    Advisory(
        "CVE-2026-10001",
        "debian 12",
        "openssl",
        "CRITICAL",
        "3.0.15-1~deb12u1",
        title="openssl: buffer overread in X.509 name checks",
    ),
    Advisory(
        "CVE-2026-10002",
        "debian 12",
        "glibc",
        "HIGH",
        "2.36-9+deb12u9",
        title="glibc: heap overflow in iconv",
    ),
    Advisory(
        "CVE-2026-10003", "debian 12", "zlib", "HIGH", title="zlib: inflate window overflow (no fix yet)"
    ),
    Advisory(
        "CVE-2026-10004",
        "debian 12",
        "base-files",
        "LOW",
        "12.4+deb12u9",
        title="base-files: world-readable example file",
    ),
    Advisory(
        "CVE-2026-20001",
        "alpine 3.20",
        "openssl",
        "HIGH",
        "3.3.2-r1",
        title="openssl: timing side channel in RSA decryption",
    ),
    Advisory(
        "CVE-2026-20002",
        "alpine 3.20",
        "busybox",
        "LOW",
        "1.36.1-r30",
        title="busybox: awk out-of-bounds read",
    ),
    Advisory(
        "GHSA-demo-0001-requests",
        "pip",
        "requests",
        "MEDIUM",
        "2.32.0",
        title="requests: Proxy-Authorization header kept on redirect",
    ),
)


def upstream_images() -> dict[str, Artifact]:
    """What the registry playing Hub serves on the first run."""
    return {
        "library/alpine:3.20": build_image(alpine_files(ALPINE), created="2026-10-20T00:00:00Z"),
        "library/nginx:1.27.3": build_image(
            debian_files(_debian(libssl3="3.0.13-1~deb12u1")), created="2026-09-01T00:00:00Z"
        ),
        "library/nginx:1.27.4": build_image(debian_files(DEBIAN), created="2026-10-15T00:00:00Z"),
        "library/nginx:1.27.4-alpine": build_image(alpine_files(ALPINE), created="2026-10-15T00:00:00Z"),
        "library/redis:7.4": build_index(
            {"linux/amd64": debian_files(DEBIAN), "linux/arm64": debian_files(DEBIAN, arch="arm64")},
            created="2026-10-10T00:00:00Z",
        ),
        "library/python:3.12-slim": build_image(
            {**debian_files(DEBIAN), **python_package_files("requests", "2.31.0")},
            created="2026-10-05T00:00:00Z",
        ),
        "library/postgres:16": build_image(
            debian_files(_debian(libc6="2.36-9+deb12u7")), created="2026-10-01T00:00:00Z"
        ),
    }


def moved_alpine() -> Artifact:
    """alpine:3.20 re-pushed upstream with an older, vulnerable libcrypto3."""
    return build_image(alpine_files(_alpine(libcrypto3="3.3.1-r0")), created="2026-11-20T00:00:00Z")


CATALOG = {
    "images/base.yaml": """
        images:
          - source: docker.io/library/alpine
            tags: ["3.20"]
            owners: ["@acme/platform"]
          - source: python
            tags: ["3.12-slim"]
            owners: ["@acme/data"]
    """,
    "images/web.yaml": """
        images:
          - source: nginx
            match: '^1\\.27\\.\\d+(-alpine)?$'
            exclude: ['-alpine$']
            newest: 3
            owners: ["@acme/web"]
    """,
    "images/data.yaml": """
        images:
          - source: redis
            tags: ["7.4"]
            platforms: [linux/amd64, linux/arm64]
            policy: lenient
            owners: ["@acme/data"]
          - source: postgres
            tags: ["16"]
            owners: ["@acme/data"]
    """,
    "policies/default.yaml": """
        # Promote only with zero critical and zero high vulnerabilities that have a fix.
        vulnerabilities:
          max: {critical: 0, high: 0}
          ignore_unfixed: true
        max_age_days: 365
        signers: [ci]
        on_regression: flag
    """,
    "policies/lenient.yaml": """
        vulnerabilities:
          max: {critical: 0, high: 5}
          ignore_unfixed: true
        signers: [ci]
        on_regression: flag
        teams: ["@acme/data"]  # who may choose it for their images
    """,
    "exceptions/data.yaml": """
        exceptions:
          - vulnerability: CVE-2026-10002
            images: ["postgres"]
            expires: 2027-06-30
            reason: "iconv is not reachable from the database server's code paths"
    """,
    "approvals/approvals.yaml": """
        approvals: []
    """,
    "access.yaml": """
        groups:
          developers: {members: [dev1, dev2], pull: ["approved/*"]}
          content-admins: {members: [admin], pull: ["quarantine/*", "approved/*"]}
          pipeline: {members: [syncer], pull: ["*"], push: ["*"]}
    """,
}


_TARGET_AUTH = """\
  # Tokens from syncer auth-server, granting what access.yaml gives the robot 'syncer'.
  # (The replica below stays open: the demo shows access control on the trusted registry.)
  auth: {username_env: TARGET_USERNAME, password_env: TARGET_PASSWORD}
"""


def settings_yaml(hub: str, target: str, replica: str, *, access: bool = False) -> str:
    # Dedented before the values go in: the auth block has an indentation of its own.
    return (
        textwrap.dedent("""
        # The demo's registries run on this machine: {hub} plays Docker Hub.
        target:
          registry: {target}
          quarantine: quarantine
          approved: approved
          tls_verify: false
        {target_auth}sources:
          docker.io:
            endpoint: {hub}
            tls_verify: false
        signing:
          signer: ci
          key_env: SYNCER_SIGNING_KEY
          passphrase_env: SYNCER_SIGNING_PASSPHRASE
        replicas:                 # a second region, kept in step with approved/
          - registry: {replica}
            tls_verify: false
        defaults:
          policy: default
        content_admins: ["@acme/security"]
    """)
        .lstrip()
        .format(hub=hub, target=target, replica=replica, target_auth=_TARGET_AUTH if access else "")
    )


def format_access(results: list[AccessResult], registry: str, audit_log: Path) -> str:
    """The demo's closing section: what each person tried on the trusted registry."""
    lines = ["", f"Access control on {registry} (catalog/access.yaml, enforced by syncer auth-server):", ""]
    for result in results:
        check = result.check
        outcome = {True: "ok", False: "refused", None: "failed"}[result.allowed]
        line = f"  {check.user:<6} {check.action:<5} {check.target:<26} {outcome:<8}"
        if result.allowed and result.detail:
            line += f" {result.detail[:19]}"
        if not result.as_expected:
            line += f" UNEXPECTED, should be {'ok' if check.expected else 'refused'}"
            if result.allowed is None:
                line += f": {result.detail}"
        lines.append(line.rstrip())
    lines += ["", f"Audit log:   {audit_log} (one line per token decision, never a password)"]
    return "\n".join(lines)


@dataclass
class DemoState:
    ports: dict[str, int] = field(default_factory=dict)
    seeded: bool = False
    moved: bool = False
    access: bool = False  # the trusted registry is behind syncer auth-server

    @classmethod
    def load(cls, path: Path) -> DemoState:
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            return cls()

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")


def _git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "syncer demo",
        "GIT_AUTHOR_EMAIL": "demo@example.invalid",
        "GIT_COMMITTER_NAME": "syncer demo",
        "GIT_COMMITTER_EMAIL": "demo@example.invalid",
    }
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"git {' '.join(args)} failed in {cwd}: {done.stderr.strip()}")
    return done.stdout


class Demo:
    def __init__(self, workdir: Path, out: TextIO = sys.stderr, *, access: bool = False):
        self.dir = workdir.resolve()
        self.out = out
        self.access = access
        self.state_file = self.dir / "state.json"
        self.repo = self.dir / "repo"
        self.remote = self.dir / "remote.git"
        self.cache = self.dir / "trivy-cache"
        self.key = self.dir / "ci.key"
        self.access_dir = self.dir / "access"
        self.users_file = self.access_dir / "users.htpasswd"
        # A fresh secret per invocation: only this auth server and this pipeline know it.
        self.robot = Robot(ROBOT, secrets.token_urlsafe(24))
        self.dev1_auth = self.access_dir / "dev1-auth.json"
        self.registries: dict[str, Registry] = {}
        self.tokens: TokenAuth | None = None

    def say(self, text: str) -> None:
        print(f"demo: {text}", file=self.out, flush=True)

    def check_mode(self, state: DemoState) -> None:
        if state.seeded and state.access != self.access:
            made = "with" if state.access else "without"
            raise UsageError(
                f"{self.dir} holds a demo made {made} --access; run it {made} "
                f"--access, pass another --dir, or delete {self.dir} to start over"
            )

    def start(self, state: DemoState) -> None:
        """The Hub stand-in and the replica; the trusted registry's port is chosen here, but
        in access mode it can only start once the catalog its auth server enforces exists."""
        for role in ("hub", "replica"):
            reg = Registry(self.dir / "registries" / role, delete=True, port=state.ports.get(role))
            self.registries[role] = reg
            state.ports[role] = reg.port
        if "target" not in state.ports:
            state.ports["target"] = free_port()

    def start_target(self, state: DemoState) -> None:
        if self.access:
            self.tokens = TokenAuth(
                self.access_dir,
                catalog=self.repo / "catalog",
                users=self.users_file,
                robot=self.robot,
                service=TOKEN_SERVICE,
                port=state.ports["target"],
            )
            reg = self.tokens.registry
            write_authfile(self.dev1_auth, reg.host, "dev1", PEOPLE["dev1"])
        else:
            reg = Registry(self.dir / "registries" / "target", delete=True, port=state.ports["target"])
        self.registries["target"] = reg
        state.ports["target"] = reg.port
        self.say(
            f"registry playing Docker Hub at {self.hub.host}, trusted registry at {self.target.host}, "
            f"replica at {self.replica.host}"
        )
        if self.tokens is not None:
            self.say(
                f"the trusted registry takes tokens from syncer auth-server at {self.tokens.auth.url}, "
                f"which enforces {self.repo / 'catalog' / 'access.yaml'}"
            )

    @property
    def hub(self) -> Registry:
        return self.registries["hub"]

    @property
    def target(self) -> Registry:
        return self.registries["target"]

    @property
    def replica(self) -> Registry:
        return self.registries["replica"]

    def stop(self) -> None:
        for reg in self.registries.values():
            reg.stop()
        if self.tokens is not None:
            self.tokens.stop()

    def settings(self, state: DemoState) -> str:
        target = self.target.host if "target" in self.registries else f"127.0.0.1:{state.ports['target']}"
        return settings_yaml(self.hub.host, target, self.replica.host, access=self.access)

    def seed(self, state: DemoState) -> None:
        self.say(
            "seeding the Hub stand-in with images (Debian and Alpine package metadata, one multi-platform)"
        )
        work = self.dir / "push"
        for ref, artifact in upstream_images().items():
            push(artifact, self.hub, ref, work)
        write_trivy_db(self.cache, ADVISORIES, updated_at=DB_UPDATED_AT)
        write_java_db(self.cache, updated_at=DB_UPDATED_AT)  # offline: the run must not fetch one
        pair = cosign.generate_keypair(PASSPHRASE.encode())
        self.key.write_bytes(pair.private_pem)
        self.key.chmod(0o600)
        if self.access:
            write_users(self.users_file, PEOPLE)
        _git(self.dir, "init", "-q", "--bare", "-b", "main", str(self.remote))
        _git(self.dir, "clone", "-q", str(self.remote), str(self.repo))
        catalog = self.repo / "catalog"
        for rel, text in CATALOG.items():
            path = catalog / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text).lstrip())
        (catalog / "settings.yaml").write_text(self.settings(state))
        (catalog / "signers").mkdir(exist_ok=True)
        (catalog / "signers" / "ci.pub").write_bytes(pair.public_pem)
        (self.repo / "reports").mkdir(exist_ok=True)
        (self.repo / "reports" / "README.md").write_text("# Image audit trail\n\nNo runs yet.\n")
        (self.repo / ".gitignore").write_text(".syncer-run.lock\n")
        _git(self.repo, "symbolic-ref", "HEAD", "refs/heads/main")
        _git(self.repo, "add", "-A")
        _git(self.repo, "commit", "-q", "-m", "catalog: demo images, policies, exception and signer")
        _git(self.repo, "push", "-q", "origin", "main")

    def keep_settings_current(self, state: DemoState) -> None:
        """Ports may change if a kept one was taken; the catalog must name the live ones."""
        settings = self.repo / "catalog" / "settings.yaml"
        wanted = self.settings(state)
        if settings.read_text() != wanted:
            settings.write_text(wanted)
            _git(self.repo, "commit", "-q", "-am", "catalog: demo registry addresses")

    def _env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "SYNCER_SIGNING_KEY": str(self.key),
            "SYNCER_SIGNING_PASSPHRASE": PASSPHRASE,
            "SYNCER_TRIVY_CACHE": str(self.cache),
            "SYNCER_GIT_NAME": "syncer demo",
            "SYNCER_GIT_EMAIL": "demo@example.invalid",
        }
        if self.access:
            env.update(TARGET_USERNAME=self.robot.name, TARGET_PASSWORD=self.robot.secret)
        return env

    def syncer(self, *args: str) -> int:
        argv = [sys.executable, "-m", "syncer", *args]
        self.say("$ syncer " + " ".join(args))
        return subprocess.run(argv, cwd=self.repo, env=self._env()).returncode

    def verify_all(self) -> tuple[str, bool]:
        """`syncer verify` on every approved tag (must pass) and every held quarantined digest
        (must fail): the signatures a node would check."""
        checks = []
        for rec in Ledger(str(self.repo / "reports")).all():
            if rec.promoted_digest:
                checks.append((f"{self.target.host}/approved/{rec.name}:{rec.tag}", 0))
            if rec.digest != rec.promoted_digest:
                checks.append((f"{self.target.host}/quarantine/{rec.name}@{rec.digest}", 1))
        lines, as_expected = ["", "Signatures (`syncer verify`, as a node would check them):", ""], True
        for ref, want in checks:
            done = subprocess.run(
                [sys.executable, "-m", "syncer", "verify", ref],
                cwd=self.repo,
                env=self._env(),
                capture_output=True,
                text=True,
            )
            verdict = "verified" if done.returncode == 0 else "refused"
            ok = done.returncode == want
            as_expected &= ok
            shown = ref.split("/", 1)[1]
            lines.append(f"  {verdict:<9} {shown[:60]}" + ("" if ok else "   UNEXPECTED"))
        return "\n".join(lines), as_expected

    def run_pipeline(self) -> int:
        return self.syncer("run", "--skip-db-update", "--jobs", "2", "--commit", "--push")

    def move_alpine(self) -> None:
        self.say("upstream moves alpine:3.20 to a new digest with a vulnerable libcrypto3")
        push(moved_alpine(), self.hub, "library/alpine:3.20", self.dir / "push")

    def summary(self) -> str:
        lines = ["", "What happened (from the records in reports/records/):", ""]
        for rec in Ledger(str(self.repo / "reports")).all():
            line = f"  {rec.name + ':' + rec.tag:<20} {rec.state.value}"
            if rec.promoted_digest and rec.promoted_digest != rec.digest:
                line += f" (approved/ keeps the last approved digest {rec.promoted_digest[7:19]})"
            lines.append(line.rstrip())
            lines.extend(f"      - {reason}" for reason in rec.reasons)
            lines.extend(
                f"      replica {st.registry}: "
                + ("lagging" if st.lagging else f"has {st.digest[7:19]}" if st.digest else "nothing")
                for st in rec.replicas
            )
        return "\n".join(lines)

    def where_to_look(self) -> str:
        login = f"--authfile {self.dev1_auth} " if self.access else ""
        lines = [
            "",
            f"Reports:     {self.repo / 'reports' / 'README.md'}",
            f"Audit trail: git -C {self.repo} log --stat",
            f"Try:         skopeo inspect --tls-verify=false {login}docker://{self.target.host}/approved/nginx:1.27.4",
        ]
        return "\n".join(lines)

    def access_control(self) -> tuple[str, bool]:
        """The closing section of access mode, tried for real; and whether all went as
        access.yaml says."""
        assert self.tokens is not None
        results = [try_access(self.target.host, check, PEOPLE[check.user]) for check in ACCESS_CHECKS]
        return (
            format_access(results, self.target.host, self.tokens.auth.log_file),
            all(r.as_expected for r in results),
        )


def write_authfile(path: Path, registry: str, user: str, password: str) -> None:
    """A containers-auth.json (skopeo --authfile), so that the reader can try the registry as
    ``user`` without a password on the command line."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.touch(mode=0o600)
    path.write_text(json.dumps({"auths": {registry: {"auth": token}}}) + "\n")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_demo(workdir: Path, *, keep: bool = False, access: bool = False, out: TextIO = sys.stderr) -> int:
    demo = Demo(workdir, out, access=access)
    demo.dir.mkdir(parents=True, exist_ok=True)
    state = DemoState.load(demo.state_file)
    demo.check_mode(state)
    # `kill` stops the servers as Ctrl-C does; by default SIGTERM would leave them running.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        demo.start(state)
        if not state.seeded:
            demo.seed(state)
            state.seeded, state.access = True, access
            state.save(demo.state_file)
        demo.start_target(state)
        demo.keep_settings_current(state)
        state.save(demo.state_file)
        code = demo.run_pipeline()
        if not state.moved and code == 0:
            demo.move_alpine()
            state.moved = True
            state.save(demo.state_file)
            code = demo.run_pipeline()
        print(demo.summary(), file=out)
        signed, as_expected = demo.verify_all()
        print(signed, file=out)
        code = code or (0 if as_expected else 1)
        if access:
            section, as_expected = demo.access_control()
            print(section, file=out)
            code = code or (0 if as_expected else 1)
        print(demo.where_to_look(), file=out)
        if keep:
            auth = f", token service {demo.tokens.auth.url}" if demo.tokens else ""
            print(
                f"\nRegistries stay up (Hub stand-in {demo.hub.url}, trusted {demo.target.url}{auth}); "
                "Ctrl-C stops them.",
                file=out,
                flush=True,
            )
            try:
                signal.pause()
            except KeyboardInterrupt:
                pass
        return code
    finally:
        demo.stop()
        signal.signal(signal.SIGTERM, previous)
