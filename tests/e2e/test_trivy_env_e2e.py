"""Trivy runs in an environment syncer chooses, end to end: `syncer run` through real
registries, skopeo and Trivy (a real `trivy server` too) with generated databases.

A variable that would change what Trivy finds is ignored, said once on stderr; the variables
that say where Trivy's databases live are honoured; no secret but the pull credential reaches
Trivy; images with jars are matched through the Java DB.
"""

from __future__ import annotations

import json
import stat
import sys
import textwrap
from datetime import UTC
from pathlib import Path

import pytest

from syncer.core.model import State
from tests.harness.images import build_image, debian_files, java_archive
from tests.harness.trivydb import Advisory, JavaArtifact, db_artifact

pytestmark = pytest.mark.e2e

REAL_TRIVY = str(Path(sys.executable).parent / "trivy")
VULNERABLE_DEBIAN = (("base-files", "12.4+deb12u8", "base-files"), ("libssl3", "3.0.11-1", "openssl"))
# Unfixed, so that TRIVY_IGNORE_UNFIXED would drop it too; the policy below counts it.
CRITICAL = Advisory("CVE-2099-1001", "debian 12", "openssl", "CRITICAL", title="openssl: planted")
STRICT_POLICY = """
    vulnerabilities:
      max: {critical: 0, high: 0}
      ignore_unfixed: false
    signers: [ci]
"""


def critical_nginx(world) -> str:
    world.db.write([CRITICAL])
    world.policy("default", STRICT_POLICY)
    digest = world.push("library/nginx:1.27.3", build_image(debian_files(VULNERABLE_DEBIAN)))
    world.images("""
        images:
          - source: nginx
            tags: ["1.27.3"]
    """)
    return digest


def assert_held_with(world, finding_id: str, digest: str) -> None:
    rec = world.record("nginx", "1.27.3")
    assert rec.state is State.HELD, rec.reasons
    assert rec.digest == digest
    assert finding_id in {f.id for f in rec.scan.findings}, rec.scan.findings
    assert world.digest_at(world.target, "approved/nginx", "1.27.3") is None


def make_stale(cache_dir: Path, db: str) -> None:
    """A DB that Trivy would download again: NextUpdate and the last download long past."""
    path = cache_dir / db / "metadata.json"
    meta = json.loads(path.read_text())
    meta.update(NextUpdate="2025-01-02T00:00:00Z", DownloadedAt="2025-01-01T00:00:00Z")
    path.write_text(json.dumps(meta))


# --- variables that would change the findings --------------------------------------------------


def _trivyignore(tmp: Path) -> str:
    (tmp / "ignore").write_text("CVE-2099-1001\n")
    return str(tmp / "ignore")


def _trivy_yaml(tmp: Path) -> str:
    (tmp / "trivy.yaml").write_text(
        textwrap.dedent("""
        severity: [LOW]
        vulnerability:
          ignore-unfixed: true
    """)
    )
    return str(tmp / "trivy.yaml")


IGNORED = {
    "TRIVY_SEVERITY": lambda tmp: "LOW",
    "TRIVY_IGNOREFILE": _trivyignore,
    "TRIVY_CONFIG": _trivy_yaml,
    "TRIVY_PKG_TYPES": lambda tmp: "library",
    "TRIVY_SKIP_DIRS": lambda tmp: "/var",
    "TRIVY_IGNORE_UNFIXED": lambda tmp: "true",
    "TRIVY_SERVER": lambda tmp: "http://127.0.0.1:1",
}


@pytest.mark.parametrize("name", IGNORED)
def test_a_variable_that_would_drop_findings_is_ignored_and_named_once(world, tmp_path, name):
    digest = critical_nginx(world)
    world.env[name] = IGNORED[name](tmp_path)
    proc = world.run()
    assert_held_with(world, "CVE-2099-1001", digest)
    assert proc.stderr.count(name) == 1, proc.stderr
    warning = next(line for line in proc.stderr.splitlines() if name in line)
    assert "ignoring" in warning and "catalog/exceptions/" in warning


# --- variables that say where the databases live -----------------------------------------------


def test_trivy_cache_dir_and_skip_db_update_are_honoured(world, tmp_path):
    digest = critical_nginx(world)
    # Due for a download, which would fail offline: only the variables prevent it.
    make_stale(world.db.cache_dir, "db")
    make_stale(world.db.cache_dir, "java-db")
    world.env.update(
        HOME=str(tmp_path / "home"),
        TRIVY_CACHE_DIR=str(world.db.cache_dir),
        TRIVY_SKIP_DB_UPDATE="true",
        TRIVY_SKIP_JAVA_DB_UPDATE="1",
    )
    proc = world.run(harness_db=False)
    assert_held_with(world, "CVE-2099-1001", digest)
    assert world.record("nginx", "1.27.3").scan.db_updated_at == "2025-01-02T00:00:00Z"
    assert "ignoring" not in proc.stderr
    assert (world.db.cache_dir / "scan-slots").is_dir()  # the scan used that cache
    assert not (tmp_path / "home" / ".cache").exists()


def test_a_due_java_db_is_fetched_from_its_repository_and_the_flag_wins(world):
    critical_nginx(world)
    make_stale(world.db.cache_dir, "java-db")
    world.env.update(TRIVY_CACHE_DIR=str(world.db.cache_dir), TRIVY_JAVA_DB_REPOSITORY="127.0.0.1:9/mirror:1")
    proc = world.run(expect=1, harness_db=False)
    assert "updating its Java DB" in proc.stderr and "127.0.0.1:9/mirror" in proc.stderr
    assert "nothing will be scanned" in proc.stderr
    assert world.record("nginx", "1.27.3").state is State.FAILED

    proc = world.run("--java-db-repository", "127.0.0.1:7/flagged:1", expect=1, harness_db=False)
    assert "127.0.0.1:7/flagged" in proc.stderr and "127.0.0.1:9" not in proc.stderr


def test_a_bad_boolean_variable_is_a_usage_error(world):
    critical_nginx(world)
    world.env["TRIVY_SKIP_DB_UPDATE"] = "yes"
    proc = world.syncer("run", harness_db=False)
    assert proc.returncode == 2, proc.stderr
    assert "TRIVY_SKIP_DB_UPDATE='yes' is not a boolean" in proc.stderr
    assert not (world.reports / "records").exists()


# --- secrets -------------------------------------------------------------------------------------


def test_no_secret_but_the_pull_credential_reaches_trivy(tmp_path, registry_factory, trivy_db):
    from tests.harness.world import World

    target = registry_factory(htpasswd=("syncer", "target-pull-password"), delete=True)
    world = World(root=tmp_path / "world", hub=registry_factory(), target=target, db=trivy_db)
    world.write_settings(target_extra="auth: {username_env: TARGET_USERNAME, password_env: TARGET_PASSWORD}")
    digest = critical_nginx(world)
    dump = tmp_path / "trivy-env"
    wrapper = tmp_path / "trivy"
    wrapper.write_text(f"#!/bin/sh\nenv >> '{dump}'\necho ---- >> '{dump}'\nexec '{REAL_TRIVY}' \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    secrets = {
        "EU_PASSWORD": "replica-password-123",
        "HUB_TOKEN": "hub-token-456",
        "AWS_SECRET_ACCESS_KEY": "aws-secret-789",
        "GITHUB_TOKEN": "ghs_token-000",
        "TRIVY_TOKEN": "trivy-server-token-111",
    }
    world.env.update(
        SYNCER_TRIVY=str(wrapper), TARGET_USERNAME="syncer", TARGET_PASSWORD="target-pull-password", **secrets
    )
    world.run()
    rec = world.record("nginx", "1.27.3")
    assert (rec.state, rec.digest) == (State.HELD, digest)
    assert "CVE-2099-1001" in {f.id for f in rec.scan.findings}

    seen = dump.read_text()
    scans = [block for block in seen.split("----\n") if "TRIVY_USERNAME=" in block]
    assert scans, "the wrapper saw no scan"
    for value in [*secrets.values(), "correct horse battery staple", str(world.key)]:
        assert value not in seen
    for name in [
        *secrets,
        "SYNCER_SIGNING_PASSPHRASE",
        "SYNCER_SIGNING_KEY",
        "TARGET_PASSWORD",
        "TARGET_USERNAME",
    ]:
        assert f"\n{name}=" not in f"\n{seen}"
    for block in scans:  # the pull credential for the registry scanned, and nothing more
        names = {line.split("=", 1)[0] for line in block.splitlines() if "=" in line}
        assert "TRIVY_PASSWORD=target-pull-password" in block.splitlines()
        assert {n for n in names if n.startswith("TRIVY_")} == {"TRIVY_USERNAME", "TRIVY_PASSWORD"}


# --- a Trivy server ------------------------------------------------------------------------------


def test_a_named_trivy_server_scans_and_its_database_is_recorded(world, trivy_server):
    from datetime import datetime

    digest = critical_nginx(world)  # the local DB, UpdatedAt 2025-01-02, has CVE-2099-1001 only
    server = trivy_server(
        [
            Advisory(
                "CVE-2099-7001",
                "debian 12",
                "openssl",
                "CRITICAL",
                "3.0.99-1",
                title="openssl: only the server knows",
            )
        ],
        updated_at=datetime(2025, 3, 3, tzinfo=UTC),
    )
    world.run("--trivy-server", server.url)
    assert_held_with(world, "CVE-2099-7001", digest)
    rec = world.record("nginx", "1.27.3")
    assert {f.id for f in rec.scan.findings} == {"CVE-2099-7001"}
    assert rec.scan.db_updated_at == "2025-03-03T00:00:00Z"
    assert rec.scan.scanner == f"trivy 0.76.0 server {server.url}"

    world.run("--trivy-server", server.url)  # the same server DB: nothing to re-scan
    assert world.record("nginx", "1.27.3").events == rec.events


def test_an_unreachable_trivy_server_scans_nothing(world):
    critical_nginx(world)
    proc = world.run("--trivy-server", "http://127.0.0.1:1", expect=1)
    assert "Trivy server at http://127.0.0.1:1 did not answer" in proc.stderr
    assert world.record("nginx", "1.27.3").state is State.FAILED


# --- Java archives -------------------------------------------------------------------------------


def test_both_dbs_are_downloaded_from_the_named_mirrors_and_jars_are_matched(
    world, registry_factory, tmp_path
):
    """An empty TRIVY_CACHE_DIR; the DBs come from a local registry playing the mirrors of
    TRIVY_DB_REPOSITORY and TRIVY_JAVA_DB_REPOSITORY. The jars are matched by pom.properties
    and by SHA-1 in the downloaded Java DB."""
    bare = java_archive("org.example", "bare", "1.9", pom_properties=False)
    world.db.write(
        [
            Advisory(
                "GHSA-jjjj-0000-0001",
                "maven",
                "org.apache.logging.log4j:log4j-core",
                "CRITICAL",
                "2.15.0",
                vulnerable_versions=(">=2.0, <2.15.0",),
                title="log4j: planted",
            ),
            Advisory("GHSA-jjjj-0000-0002", "maven", "org.example:bare", "HIGH", "1.10"),
        ]
    )
    world.db.write_java(JavaArtifact.of(bare, "org.example", "bare", "1.9"))
    mirror = registry_factory()
    world.push("aquasecurity/trivy-db:2", db_artifact(world.db.cache_dir, "db"), registry=mirror)
    world.push("aquasecurity/trivy-java-db:1", db_artifact(world.db.cache_dir, "java-db"), registry=mirror)
    digest = world.push(
        "library/app:1",
        build_image(
            {
                **debian_files(VULNERABLE_DEBIAN),
                "opt/app/lib/log4j-core-2.14.1.jar": java_archive(
                    "org.apache.logging.log4j", "log4j-core", "2.14.1"
                ),
                "opt/app/lib/bare.jar": bare,  # no pom.properties: known by its SHA-1 only
            }
        ),
    )
    world.images("""
        images:
          - source: app
            tags: ["1"]
    """)
    cache = tmp_path / "empty-cache"
    world.env.update(
        HOME=str(tmp_path / "home"),
        TRIVY_CACHE_DIR=str(cache),
        TRIVY_DB_REPOSITORY=f"{mirror.host}/aquasecurity/trivy-db:2",
        TRIVY_JAVA_DB_REPOSITORY=f"{mirror.host}/aquasecurity/trivy-java-db:1",
    )
    world.run(harness_db=False)
    rec = world.record("app", "1")
    assert rec.state is State.HELD and rec.digest == digest, rec.reasons
    found = {(f.id, f.package, f.installed, f.severity.name) for f in rec.scan.findings}
    assert found == {
        ("GHSA-jjjj-0000-0001", "org.apache.logging.log4j:log4j-core", "2.14.1", "CRITICAL"),
        ("GHSA-jjjj-0000-0002", "org.example:bare", "1.9", "HIGH"),
    }
    assert any("GHSA-jjjj-0000-0001" in r for r in rec.reasons), rec.reasons
    assert rec.scan.db_updated_at == "2025-01-02T00:00:00Z"
    assert (cache / "java-db" / "trivy-java.db").is_file()
