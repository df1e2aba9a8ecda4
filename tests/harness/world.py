"""A whole world for end-to-end tests: a registry playing Docker Hub, a trusted registry, a
generated Trivy database, a signing key, a catalog and a reports directory — and the real
``syncer`` CLI run as a subprocess against them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from syncer.core import cosign
from syncer.core.model import Record
from syncer.trail.ledger import Ledger
from tests.harness.images import push
from tests.harness.registry import Registry
from tests.harness.trivydb import TrivyDB

PASSPHRASE = "correct horse battery staple"
MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


@dataclass
class World:
    root: Path
    hub: Registry
    target: Registry
    db: TrivyDB
    replicas: list[Registry] = field(default_factory=list)
    policies: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.catalog = self.root / "catalog"
        self.reports = self.root / "reports"
        self.key = self.root / "ci.key"
        (self.catalog / "images").mkdir(parents=True)
        (self.catalog / "policies").mkdir()
        (self.catalog / "signers").mkdir()
        self.reports.mkdir()
        pair = cosign.generate_keypair(PASSPHRASE.encode())
        self.key.write_bytes(pair.private_pem)
        self.key.chmod(0o600)
        (self.catalog / "signers" / "ci.pub").write_bytes(pair.public_pem)
        self.write_settings()
        self.policy(
            "default",
            """
            vulnerabilities:
              max: {critical: 0, high: 0}
              ignore_unfixed: true
            signers: [ci]
        """,
        )

    # --- catalog ------------------------------------------------------------------------

    def write(self, relpath: str, text: str) -> Path:
        path = self.catalog / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    def write_settings(
        self, extra: str = "", source_extra: str = "", target_extra: str = "", other_sources: str = ""
    ) -> None:
        """settings.yaml for this world; the extras are YAML added to the top level, under
        ``sources.docker.io`` and under ``target``; ``other_sources`` are more entries of
        ``sources`` (other upstream hosts)."""

        def nest(text: str, spaces: int) -> str:
            return textwrap.indent(textwrap.dedent(text).strip(), " " * spaces) + "\n" if text.strip() else ""

        text = (
            "target:\n"
            f"  registry: {self.target.host}\n"
            "  quarantine: quarantine\n"
            "  approved: approved\n"
            # The target's tls_verify is false unless target_extra says otherwise.
            + ("" if "tls_verify" in target_extra else "  tls_verify: false\n")
            + nest(target_extra, 2)
            + "sources:\n"
            "  docker.io:\n"
            f"    endpoint: {self.hub.host}\n"
            "    tls_verify: false\n" + nest(source_extra, 4) + nest(other_sources, 2) + "signing:\n"
            "  signer: ci\n"
            "  key_env: SYNCER_SIGNING_KEY\n"
            "  passphrase_env: SYNCER_SIGNING_PASSPHRASE\n"
            "defaults:\n"
            "  policy: default\n"
            'content_admins: ["@acme/security"]\n'
        )
        if self.replicas:
            text += "replicas:\n" + "".join(
                f"  - registry: {r.host}\n    tls_verify: false\n" for r in self.replicas
            )
        self.write("settings.yaml", text + nest(extra, 0))

    def route(self, host: str, via: str) -> None:
        """Sends syncer to ``via`` (a fault proxy) wherever settings.yaml names ``host``."""
        settings = self.catalog / "settings.yaml"
        text = settings.read_text()
        assert host in text
        settings.write_text(text.replace(host, via))

    def images(self, text: str, file: str = "images/test.yaml") -> None:
        self.write(file, text)

    def policy(self, name: str, text: str) -> None:
        self.write(f"policies/{name}.yaml", text)

    # --- upstream -----------------------------------------------------------------------

    def push(self, reference: str, artifact, registry: Registry | None = None) -> str:
        """Push to the registry playing Hub (``library/nginx:1.27.3``); returns the digest."""
        work = self.root / "push"
        work.mkdir(exist_ok=True)
        return push(artifact, registry or self.hub, reference, work)

    # --- running syncer -----------------------------------------------------------------

    def run_env(self, harness_db: bool = True) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCER_", "GITHUB_", "TRIVY_"))}
        env.update(SYNCER_SIGNING_KEY=str(self.key), SYNCER_SIGNING_PASSPHRASE=PASSPHRASE)
        if harness_db:
            env["SYNCER_TRIVY_CACHE"] = str(self.db.cache_dir)
        env.update(self.env)
        return env

    def syncer(
        self, *args: str, timeout: float = 300, harness_db: bool = True
    ) -> subprocess.CompletedProcess:
        """``syncer ARGS --catalog … --reports …`` through the real CLI. ``harness_db`` points
        a run at the world's generated DB (SYNCER_TRIVY_CACHE, --skip-db-update); without it,
        the run's own options and TRIVY_* variables say where the databases are."""
        command, rest = args[0], list(args[1:])
        argv = [
            sys.executable,
            "-m",
            "syncer",
            command,
            "--catalog",
            str(self.catalog),
            "--reports",
            str(self.reports),
            *rest,
        ]
        if harness_db and command == "run" and "--dry-run" not in rest:
            argv.append("--skip-db-update")
        return subprocess.run(
            argv, cwd=self.root, env=self.run_env(harness_db), capture_output=True, text=True, timeout=timeout
        )

    def run(self, *args: str, expect: int = 0, harness_db: bool = True) -> subprocess.CompletedProcess:
        proc = self.syncer("run", *args, harness_db=harness_db)
        assert proc.returncode == expect, (
            f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
        return proc

    # --- looking at the results ---------------------------------------------------------

    def record(self, name: str, tag: str) -> Record:
        rec = Ledger(str(self.reports)).load(name, tag)
        assert rec is not None, f"no record for {name}:{tag}"
        return rec

    def digest_at(self, registry: Registry, repository: str, reference: str) -> str | None:
        """The digest ``registry`` serves for ``repository:reference`` (HEAD), None if absent."""
        resp = requests.head(
            f"{registry.url}/v2/{repository}/manifests/{reference}",
            headers={"Accept": MANIFEST_ACCEPT},
            timeout=10,
        )
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        return resp.headers["Docker-Content-Digest"]

    def tags(self, registry: Registry, repository: str) -> list[str]:
        resp = requests.get(f"{registry.url}/v2/{repository}/tags/list", timeout=10)
        if resp.status_code == 404:
            return []
        resp.raise_for_status()
        return sorted(json.loads(resp.text).get("tags") or [])

    def tree(self) -> dict[str, bytes]:
        """Every file under reports/, for before/after comparisons."""
        return {
            str(p.relative_to(self.reports)): p.read_bytes()
            for p in sorted(self.reports.rglob("*"))
            if p.is_file()
        }


@pytest.fixture
def world(tmp_path, registry_factory, trivy_db) -> World:
    return World(root=tmp_path, hub=registry_factory(), target=registry_factory(delete=True), db=trivy_db)
