"""The GitHub workflows and Dependabot's configuration: clean under actionlint and zizmor, and
shaped as SPEC.md says.

actionlint (with ShellCheck for the ``run:`` scripts) and zizmor run offline from the test
extra's wheels. Each linter is also shown a known-bad workflow, so that a linter that silently
checks nothing fails here instead of passing everything.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from syncer.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"
DEPENDABOT = REPO / ".github" / "dependabot.yml"
BIN = Path(sys.executable).parent
TOOLS_PATH = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"

# Every action the workflows may use, pinned by commit; the comment names the release.
PINS = {
    "actions/checkout": ("de0fac2e4500dabe0009e67214ff5f5447ce83dd", "v6.0.2"),
    "actions/setup-python": ("a309ff8b426b58ec0e2a45f0f869d46889d02405", "v6.2.0"),
    "actions/upload-artifact": ("b7c566a772e6b6bfb58ed0dc250532a479d7789f", "v6.0.0"),
    "actions/download-artifact": ("37930b1c2abaa49bbe596cd826c3c89aef350131", "v7.0.0"),
    "actions/cache/restore": ("27d5ce7f107fe9357f9df03efb73ab90386fccae", "v5.0.5"),
    "actions/cache/save": ("27d5ce7f107fe9357f9df03efb73ab90386fccae", "v5.0.5"),
}
SYNC_SECRETS = {
    "TARGET_USERNAME",
    "TARGET_PASSWORD",
    "HUB_USERNAME",
    "HUB_TOKEN",
    "SYNCER_SIGNING_KEY",
    "SYNCER_SIGNING_PASSPHRASE",
}

BAD_WORKFLOW = """\
on: pull_request
jobs:
  greet:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: echo "${{ github.event.pull_request.title }}"
      - run: cp $SOURCE /tmp
"""


def tool(name: str) -> str:
    path = shutil.which(name, path=TOOLS_PATH)
    assert path, f"{name} is not installed; run `bash scripts/setup` (it comes with the test extra)"
    return path


def load(name: str) -> dict[str, Any]:
    return YAML(typ="safe").load((WORKFLOWS / name).read_text())


def text(name: str) -> str:
    return (WORKFLOWS / name).read_text()


def walk(node: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, (*path, index))


def steps(workflow: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for job_id, job in workflow["jobs"].items():
        for step in job["steps"]:
            yield job_id, step


def runs(workflow: dict[str, Any], job_id: str) -> str:
    return "\n".join(s.get("run", "") for s in workflow["jobs"][job_id]["steps"])


def actionlint(*files: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("actionlint"), "-no-color", *map(str, files)],
        cwd=cwd,
        env={**os.environ, "PATH": TOOLS_PATH},
        capture_output=True,
        text=True,
        timeout=60,
    )


def zizmor(*targets: Path) -> tuple[int, list[dict[str, Any]]]:
    # auditor: every audit at every confidence; --no-config so that no config file can quietly
    # switch audits off. Inline `# zizmor: ignore[...]` comments (each with its reason) count.
    result = subprocess.run(
        [
            tool("zizmor"),
            "--offline",
            "--no-config",
            "--persona=auditor",
            "--format=json",
            "--no-progress",
            *map(str, targets),
        ],
        env={**os.environ, "PATH": TOOLS_PATH},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.returncode, json.loads(result.stdout or "[]")


# --- linters --------------------------------------------------------------------------------


def test_actionlint_with_shellcheck_finds_nothing() -> None:
    tool("shellcheck")
    result = actionlint(*sorted(WORKFLOWS.glob("*.yml")), cwd=REPO)
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_zizmor_offline_finds_nothing() -> None:
    code, findings = zizmor(WORKFLOWS, DEPENDABOT)
    assert findings == [] and code == 0, json.dumps(findings, indent=1)[:3000]


def test_the_linters_do_catch_a_bad_workflow(tmp_path: Path) -> None:
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(BAD_WORKFLOW)

    linted = actionlint(bad, cwd=tmp_path)
    assert linted.returncode == 1
    assert "potentially untrusted" in linted.stdout and "SC2086" in linted.stdout

    code, findings = zizmor(bad)
    assert code != 0
    assert {"template-injection", "unpinned-uses", "artipacked"} <= {f["ident"] for f in findings}


# --- every workflow -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["validate.yml", "sync.yml", "ci.yml"])
def test_actions_are_pinned_to_known_commits(name: str) -> None:
    uses = re.findall(r"uses:\s*(\S+)@(\S+)(.*)", text(name))
    assert uses
    for action, ref, comment in uses:
        assert action in PINS, f"{name}: {action} is not in PINS; pin it by commit and add it"
        sha, release = PINS[action]
        assert (ref, comment.strip()) == (sha, f"# {release}"), f"{name}: {action}@{ref}"


@pytest.mark.parametrize("name", ["validate.yml", "sync.yml", "ci.yml"])
def test_no_expressions_inside_scripts(name: str) -> None:
    for job_id, step in steps(load(name)):
        assert "${{" not in step.get("run", ""), f"{name}: job {job_id} interpolates into run:"


@pytest.mark.parametrize("name", ["validate.yml", "sync.yml", "ci.yml"])
def test_jobs_are_bounded_and_checkouts_keep_no_token(name: str) -> None:
    workflow = load(name)
    for job_id, job in workflow["jobs"].items():
        assert 0 < job["timeout-minutes"] <= 120, f"{name}: job {job_id}"
        pushes = "--push" in runs(workflow, job_id)
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is pushes, f"{name}: job {job_id}"


def test_setup_uses_python_311_everywhere() -> None:
    for name in ("validate.yml", "sync.yml", "ci.yml"):
        for _, step in steps(load(name)):
            if step.get("uses", "").startswith("actions/setup-python@"):
                assert step["with"]["python-version"] == "3.11"


def test_every_job_installs_syncer_from_the_runtime_lock_only() -> None:
    """The jobs that hold secrets, tokens or pull requests' code get no test tools and nothing
    unpinned: `scripts/setup --runtime` installs requirements/runtime.txt by hash."""
    for name in ("validate.yml", "sync.yml"):
        for job_id, job in load(name)["jobs"].items():
            installs = [s["run"] for s in job["steps"] if "scripts/setup" in s.get("run", "")]
            assert installs == ["bash scripts/setup --runtime"], f"{name}: job {job_id}"
    setup = (REPO / "scripts" / "setup").read_text()
    assert "--require-hashes --no-deps" in setup and "--no-deps --no-build-isolation" in setup
    assert re.search(r"--runtime\) mode=runtime", setup)


def test_dependabot_updates_the_actions_and_the_python_locks_after_a_cooldown() -> None:
    config = YAML(typ="safe").load(DEPENDABOT.read_text())
    updates = {u["package-ecosystem"]: u for u in config["updates"]}
    assert set(updates) == {"github-actions", "pip"}
    for update in updates.values():
        assert update["directory"] == "/" and update["cooldown"]["default-days"] >= 7


# --- validate.yml ---------------------------------------------------------------------------


def test_validate_runs_on_catalog_pull_requests_read_only_without_secrets() -> None:
    workflow = load("validate.yml")
    assert workflow["on"] == {"pull_request": {"paths": ["catalog/**"]}}
    assert workflow["permissions"] == {"contents": "read"}
    assert all("permissions" not in job for job in workflow["jobs"].values())
    assert "secrets." not in text("validate.yml")
    assert [s.get("run") for _, s in steps(workflow) if "run" in s] == [
        "bash scripts/setup --runtime",
        ".venv/bin/syncer validate",
        '.venv/bin/syncer plan >> "$GITHUB_STEP_SUMMARY"',
    ]


# --- ci.yml ---------------------------------------------------------------------------------


def test_ci_runs_the_project_tests_read_only() -> None:
    workflow = load("ci.yml")
    assert set(workflow["on"]) == {"push", "pull_request"}
    assert workflow["permissions"] == {"contents": "read"}
    assert "secrets." not in text("ci.yml")
    assert runs(workflow, "test").strip() == "bash .ci/run"


def test_the_test_command_runs_the_static_checks_before_the_tests() -> None:
    lines = (REPO / "scripts" / "test").read_text().splitlines()
    assert lines.index("bash scripts/setup") < lines.index("bash scripts/lint")
    runs_pytest = next(
        i for i, line in enumerate(lines) if "-m pytest" in line and not line.lstrip().startswith("#")
    )
    assert lines.index("bash scripts/lint") < runs_pytest


CHECKS = {
    "check": "ruff check",
    "format": "ruff format",
    "mypy": "mypy syncer",
}  # a tool and its first argument


@pytest.mark.parametrize("failing", [(), ("check",), ("format",), ("mypy",), ("check", "mypy")])
def test_lint_runs_every_check_and_fails_when_one_fails(tmp_path: Path, failing: tuple[str, ...]) -> None:
    """The real script under bash, with stand-in ruff and mypy that record their arguments."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "lint").write_text((REPO / "scripts" / "lint").read_text())
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("ruff", "mypy"):
        fake = bin_dir / name
        fake.write_text(
            f'#!/bin/sh\necho "{name} $*" >> calls\n'
            f'case "{name} $1" in {" | ".join(f"{CHECKS[w]!r}" for w in failing) or "none"}) exit 1;; esac\n'
        )
        fake.chmod(0o755)
    result = subprocess.run(
        ["bash", "scripts/lint"], cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert (tmp_path / "calls").read_text().splitlines() == [
        "ruff check --quiet syncer tests benchmarks",
        "ruff format --check --output-format concise syncer tests benchmarks",
        "mypy syncer",
    ]
    assert result.returncode == (1 if failing else 0), result.stderr
    for word, check in CHECKS.items():
        assert (f"failed: {check.removesuffix(' syncer')}" in result.stderr) == (word in failing), (
            result.stderr
        )


# --- sync.yml -------------------------------------------------------------------------------


def test_sync_triggers_and_one_run_at_a_time() -> None:
    workflow = load("sync.yml")
    (cron,) = [entry["cron"] for entry in workflow["on"]["schedule"]]
    minute, hour, *rest = cron.split()
    assert minute.isdigit() and hour == "*" and rest == ["*", "*", "*"]
    assert set(workflow["on"]["workflow_dispatch"]["inputs"]) == {"only", "dry_run"}
    assert workflow["on"]["workflow_dispatch"]["inputs"]["dry_run"]["type"] == "boolean"
    assert workflow["on"]["push"] == {"branches": ["main"], "paths": ["catalog/**"]}
    assert workflow["concurrency"] == {"group": "syncer-sync", "cancel-in-progress": False}


def test_sync_only_the_pushing_job_may_write() -> None:
    workflow = load("sync.yml")
    assert workflow["permissions"] == {}
    writers = {
        job_id for job_id, job in workflow["jobs"].items() if "write" in job.get("permissions", {}).values()
    }
    pushers = {job_id for job_id in workflow["jobs"] if "--push" in runs(workflow, job_id)}
    assert writers == pushers == {"commit"}
    assert workflow["jobs"]["commit"]["permissions"] == {"contents": "write"}


def test_sync_secrets_only_reach_step_env_in_the_gated_environment() -> None:
    workflow = load("sync.yml")
    seen = set()
    for path, value in walk(workflow):
        if isinstance(value, str) and "secrets." in value:
            # jobs.<job>.steps.<n>.env.<NAME>: a step's own environment, nothing wider.
            assert path[0] == "jobs" and path[2] == "steps" and path[4] == "env", path
            assert workflow["jobs"][path[1]]["environment"] == "syncer"
            seen.update(re.findall(r"secrets\.(\w+)", value))
    assert seen == SYNC_SECRETS


def test_sync_writes_the_signing_key_privately() -> None:
    (step,) = [s for _, s in steps(load("sync.yml")) if "SIGNING_KEY" in s.get("env", {})]
    script = step["run"]
    assert script.lstrip().startswith("umask 077")
    assert '"$RUNNER_TEMP/' in script and "SYNCER_SIGNING_KEY=" in script


def test_sync_shards_hand_their_reports_to_the_commit_job() -> None:
    workflow = load("sync.yml")
    shard, commit = workflow["jobs"]["shard"], workflow["jobs"]["commit"]
    assert commit["needs"] == "shard"
    assert "!cancelled()" in commit["if"]
    assert shard["strategy"]["fail-fast"] is False
    upload = next(s for s in shard["steps"] if s.get("uses", "").startswith("actions/upload"))
    download = next(s for s in commit["steps"] if s.get("uses", "").startswith("actions/down"))
    prefix = upload["with"]["name"].split("${{")[0]
    assert download["with"]["pattern"] == prefix + "*"
    assert download["with"]["merge-multiple"] is True


# Where the shards' restored databases are, and that they are not updated.
DBS = ["--trivy-cache", "/runner/temp/trivy", "--skip-db-update", "--skip-java-db-update"]


def shard_script() -> tuple[str, dict[str, str]]:
    (step,) = [s for _, s in steps(load("sync.yml")) if s.get("id") == "run"]
    return step["run"], step["env"]


@pytest.mark.parametrize(
    "inputs, exit_code, step_code, expected",
    [
        ({}, 0, 0, ["run", "--shard", "2/3", *DBS]),
        (
            {"ONLY": "nginx", "DRY_RUN": "true"},
            0,
            0,
            ["run", "--shard", "2/3", *DBS, "--only=nginx", "--dry-run"],
        ),
        ({"ONLY": "-x; rm -rf /"}, 1, 0, ["run", "--shard", "2/3", *DBS, "--only=-x; rm -rf /"]),
        ({}, 2, 2, ["run", "--shard", "2/3", *DBS]),
    ],
)
def test_sync_shard_script(
    tmp_path: Path, inputs: dict[str, str], exit_code: int, step_code: int, expected: list[str]
) -> None:
    """The real run: script under bash, with a stand-in syncer that records its arguments."""
    script, env = shard_script()
    assert env["SHARD"] == "${{ matrix.shard }}/${{ strategy.job-total }}"
    fake = tmp_path / ".venv" / "bin" / "syncer"
    fake.parent.mkdir(parents=True)
    fake.write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > argv\nexit {exit_code}\n')
    fake.chmod(0o755)
    output = tmp_path / "github_output"
    # The shell GitHub uses for `run:` on Linux.
    result = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env={
            "PATH": os.environ["PATH"],
            "GITHUB_OUTPUT": str(output),
            "RUNNER_TEMP": "/runner/temp",
            "SHARD": "2/3",
            "ONLY": "",
            "DRY_RUN": "false",
            **inputs,
        },
    )
    argv = (tmp_path / "argv").read_text().splitlines()
    assert argv == expected
    assert result.returncode == step_code, result.stderr
    assert output.read_text() == f"status={exit_code}\n"
    parsed = build_parser("run").parse_args(argv)
    assert parsed.shard == (2, 3)
    assert parsed.skip_db_update and parsed.skip_java_db_update


def test_every_syncer_command_in_the_workflows_exists() -> None:
    """Literal ``.venv/bin/syncer …`` lines parse with the real command line."""
    seen = []
    for name in ("validate.yml", "sync.yml", "ci.yml"):
        for line in text(name).splitlines():
            match = re.search(r"\.venv/bin/syncer ([^>|\"$]+)", line)
            if match:
                argv = shlex.split(match.group(1))
                try:
                    build_parser(argv[0]).parse_args(argv)
                except SystemExit:
                    pytest.fail(f"{name} runs `syncer {' '.join(argv)}`, which the CLI rejects")
                seen.append(argv[0])
    assert {"validate", "plan", "report"} <= set(seen)


# --- sync.yml: one database per run ---------------------------------------------------------


def _uses(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in job["steps"] if s.get("uses", "").startswith(action + "@")]


def test_sync_fetches_the_databases_once_in_a_first_job_cached_by_their_updated_at() -> None:
    workflow = load("sync.yml")
    db_job = workflow["jobs"]["databases"]
    assert "needs" not in db_job and "environment" not in db_job
    assert db_job["permissions"] == {"contents": "read"}
    assert "secrets." not in json.dumps(db_job)
    restores = _uses(db_job, "actions/cache/restore")
    saves = _uses(db_job, "actions/cache/save")
    (fetch,) = [s for s in db_job["steps"] if s.get("id") == "fetch"]
    order = [s.get("id") or s.get("uses", "").split("@")[0] for s in db_job["steps"]]
    assert order.index("fetch") > max(order.index(r["id"]) for r in restores)
    assert order.index("fetch") < min(db_job["steps"].index(s) for s in saves)
    for which, restore, save in zip(("db", "java-db"), restores, saves, strict=True):
        path = "${{ runner.temp }}/trivy/" + which
        assert restore["with"]["path"] == save["with"]["path"] == path
        # The newest cached copy, whatever its key; saved again only under a new UpdatedAt.
        assert restore["with"]["restore-keys"] == f"trivy-{which}-"
        assert restore["with"]["key"] == f"trivy-{which}-${{{{ github.run_id }}}}"
        assert save["with"]["key"] == f"${{{{ steps.fetch.outputs.{which}-key }}}}"
        assert save["if"] == (
            f"${{{{ steps.fetch.outputs.{which}-key != steps.{restore['id']}.outputs.cache-matched-key }}}}"
        )
        assert db_job["outputs"][f"{which}-key"] == f"${{{{ steps.fetch.outputs.{which}-key }}}}"
    # The mirrors come from repository variables, as the step's environment.
    assert fetch["env"] == {
        "DB_REPOSITORY": "${{ vars.TRIVY_DB_REPOSITORY }}",
        "JAVA_DB_REPOSITORY": "${{ vars.TRIVY_JAVA_DB_REPOSITORY }}",
    }
    for flag in (
        "--download-db-only",
        "--download-java-db-only",
        "--db-repository",
        "--java-db-repository",
        ".UpdatedAt",
    ):
        assert flag in fetch["run"]
    others = "".join(runs(workflow, j) for j in workflow["jobs"] if j != "databases")
    assert "--download-" not in others and "trivy image" not in others


def test_every_shard_restores_exactly_those_databases_and_does_not_update_them() -> None:
    workflow = load("sync.yml")
    shard = workflow["jobs"]["shard"]
    assert shard["needs"] == "databases"
    restores = _uses(shard, "actions/cache/restore")
    assert [r["with"] for r in restores] == [
        {
            "path": "${{ runner.temp }}/trivy/" + which,
            "key": f"${{{{ needs.databases.outputs.{which}-key }}}}",
            "fail-on-cache-miss": True,
        }
        for which in ("db", "java-db")
    ]
    run_step = next(s for s in shard["steps"] if s.get("id") == "run")
    assert max(shard["steps"].index(r) for r in restores) < shard["steps"].index(run_step)
    assert not _uses(shard, "actions/cache/save")
    assert not _uses(workflow["jobs"]["commit"], "actions/cache/restore")
