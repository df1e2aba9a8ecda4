"""syncer codeowners through the installed console script."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unit.test_codeowners import REPO, SYNCER


def syncer(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SYNCER), *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "catalog", tmp_path / "catalog")
    return tmp_path


def test_cli_writes_checks_and_detects_staleness(repo: Path) -> None:
    target = repo / ".github" / "CODEOWNERS"

    missing = syncer("codeowners", "--check", cwd=repo)
    assert missing.returncode == 2
    assert ".github/CODEOWNERS: error: is missing" in missing.stderr
    assert not target.exists()

    written = syncer("codeowners", cwd=repo)
    assert written.returncode == 0, written.stderr
    assert written.stdout.strip() == "wrote .github/CODEOWNERS"
    text = target.read_text()
    web = next(line.split() for line in text.splitlines() if line.startswith("/catalog/images/web.yaml"))
    assert web == ["/catalog/images/web.yaml", "@acme/web", "@acme/security"]

    assert syncer("codeowners", "--check", cwd=repo).returncode == 0
    again = syncer("codeowners", cwd=repo)
    assert again.stdout.strip() == ".github/CODEOWNERS is up to date"

    web_yaml = repo / "catalog" / "images" / "web.yaml"
    web_yaml.write_text(web_yaml.read_text().replace('"@acme/web"', '"@acme/frontend"'))
    stale = syncer("codeowners", "--check", cwd=repo)
    assert stale.returncode == 2
    assert "out of date with the catalog's owners" in stale.stderr
    assert "run `syncer codeowners`" in stale.stderr
    assert target.read_text() == text  # --check writes nothing


def test_cli_with_catalog_elsewhere_writes_next_to_it(repo: Path, tmp_path_factory) -> None:
    elsewhere = tmp_path_factory.mktemp("cwd")
    result = syncer("codeowners", "--catalog", str(repo / "catalog"), "--json", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert '"written": true' in result.stdout
    assert (repo / ".github" / "CODEOWNERS").is_file()
    assert not (elsewhere / ".github").exists()
