"""sync.yml's database hand-off, end to end: the `databases` job's script downloads both
databases with the real Trivy from a local registry playing the internal mirrors and names
the cache keys by their UpdatedAt; a shard's script then scans with the real syncer against
exactly those databases, asking no registry for them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from syncer.core.model import State
from tests.e2e.test_trivy_env_e2e import make_stale
from tests.harness.images import build_image, debian_files
from tests.harness.trivydb import Advisory, db_artifact

pytestmark = pytest.mark.e2e

SYNC = Path(__file__).resolve().parents[2] / ".github" / "workflows" / "sync.yml"
PLANTED = Advisory("CVE-2099-4242", "debian 12", "openssl", "CRITICAL", "3.0.12-1")
NOWHERE = "127.0.0.1:1/nothing/here:2"  # a mirror that answers nothing


def step(job: str, step_id: str) -> dict:
    workflow = YAML(typ="safe").load(SYNC.read_text())
    (found,) = [s for s in workflow["jobs"][job]["steps"] if s.get("id") == step_id]
    return found


def run_step(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # The shell GitHub uses for `run:` on Linux.
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def test_one_download_per_run_and_every_shard_scans_against_it(world, registry_factory, tmp_path):
    world.db.write([PLANTED])
    mirror = registry_factory()
    world.push("mirror/trivy-db:2", db_artifact(world.db.cache_dir, "db"), registry=mirror)
    world.push("mirror/trivy-java-db:1", db_artifact(world.db.cache_dir, "java-db"), registry=mirror)
    expected = {
        which: json.loads((world.db.cache_dir / which / "metadata.json").read_text())["UpdatedAt"]
        for which in ("db", "java-db")
    }

    # The databases job, on a runner whose cache had nothing yet.
    runner_temp, job = tmp_path / "runner-temp", tmp_path / "databases-job"
    (job / ".venv" / "bin").mkdir(parents=True)
    (job / ".venv" / "bin" / "trivy").symlink_to(Path(sys.executable).parent / "trivy")
    runner_temp.mkdir()
    fetch = step("databases", "fetch")["run"]
    base = {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "home"), "RUNNER_TEMP": str(runner_temp)}
    first = tmp_path / "first-output"
    proc = run_step(
        fetch,
        job,
        {
            **base,
            "GITHUB_OUTPUT": str(first),
            "DB_REPOSITORY": f"{mirror.host}/mirror/trivy-db:2",
            "JAVA_DB_REPOSITORY": f"{mirror.host}/mirror/trivy-java-db:1",
        },
    )
    assert proc.returncode == 0, proc.stderr
    assert outputs(first) == {
        "db-key": f"trivy-db-{expected['db']}",
        "java-db-key": f"trivy-java-db-{expected['java-db']}",
    }
    cache = runner_temp / "trivy"
    assert (cache / "db" / "trivy.db").is_file() and (cache / "java-db" / "trivy-java.db").is_file()

    # The next run restores them from the cache: nothing is due, no mirror is asked, and the
    # keys are the same, so nothing is saved again.
    again = tmp_path / "again-output"
    proc = run_step(
        fetch,
        job,
        {**base, "GITHUB_OUTPUT": str(again), "DB_REPOSITORY": NOWHERE, "JAVA_DB_REPOSITORY": NOWHERE},
    )
    assert proc.returncode == 0, proc.stderr
    assert outputs(again) == outputs(first)

    # A shard: the real CLI in the checkout, scanning against the restored databases, even
    # when they are due again by then (the shard would update them, from nowhere, otherwise).
    make_stale(cache, "db")
    make_stale(cache, "java-db")
    digest = world.push(
        "library/nginx:1.27.3",
        build_image(
            debian_files((("base-files", "12.4+deb12u8", "base-files"), ("libssl3", "3.0.11-1", "openssl")))
        ),
    )
    world.images("""
        images:
          - source: nginx
            tags: ["1.27.3"]
    """)
    wrapper = world.root / ".venv" / "bin" / "syncer"
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m syncer "$@"\n')
    wrapper.chmod(0o755)
    shard = step("shard", "run")["run"]
    env = {
        **world.run_env(harness_db=False),
        "RUNNER_TEMP": str(runner_temp),
        "SHARD": "1/1",
        "ONLY": "",
        "DRY_RUN": "false",
        "GITHUB_OUTPUT": str(tmp_path / "shard-output"),
        "TRIVY_DB_REPOSITORY": NOWHERE,
        "TRIVY_JAVA_DB_REPOSITORY": NOWHERE,
    }
    proc = run_step(shard, world.root, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert outputs(tmp_path / "shard-output") == {"status": "0"}
    rec = world.record("nginx", "1.27.3")
    assert rec.state is State.HELD and rec.digest == digest, rec.reasons
    assert "CVE-2099-4242" in {f.id for f in rec.scan.findings}
    assert rec.scan.db_updated_at == expected["db"]
