"""``syncer validate`` through the real command line (the installed console script)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from syncer.commands.validate import annotation
from syncer.core.model import Location
from syncer.errors import Diagnostic

REPO = Path(__file__).resolve().parents[2]
SYNCER = Path(sys.executable).parent / "syncer"


def syncer(*args: str, cwd: Path, github: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_ACTIONS"}
    if github:
        env["GITHUB_ACTIONS"] = "true"
    return subprocess.run([str(SYNCER), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def cat(tmp_path: Path) -> Path:
    root = tmp_path / "catalog"
    shutil.copytree(REPO / "catalog", root)
    return root


def edit(root: Path, relative: str, old: str, new: str) -> None:
    path = root / relative
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def break_three_ways(root: Path) -> None:
    edit(root, "images/web.yaml", "newest: 3", "newest: three")
    edit(root, "images/data.yaml", "policy: lenient", "policy: strict")
    edit(root, "access.yaml", "    members: [admin]", "    membrs: [admin]")


def test_shipped_catalog_validates() -> None:
    result = syncer("validate", cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].startswith("catalog: valid, 6 images (0 errors, ")
    assert "error:" not in result.stdout


def test_every_error_printed_with_location_and_exit_2(cat: Path) -> None:
    break_three_ways(cat)
    result = syncer("validate", cwd=cat.parent)
    assert result.returncode == 2
    assert result.stdout.splitlines() == [
        "catalog/access.yaml:7: error: unknown key 'membrs' in group 'content-admins'; did you "
        "mean 'members'?",
        "catalog/images/data.yaml:18: error: policy 'strict' is not defined in "
        "catalog/policies/; define catalog/policies/strict.yaml or use one of: default, "
        "lenient",
        "catalog/images/web.yaml:7: error: 'newest' in image entry must be a whole number >= 1, not a string",
        "catalog: invalid (3 errors, 0 warnings)",
    ], result.stdout


def test_expired_exception_warns_and_exits_0(cat: Path) -> None:
    edit(cat, "exceptions/data.yaml", "expires: 2027-06-30", "expires: 2020-01-31")
    result = syncer("validate", "--catalog", "catalog", cwd=cat.parent)
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines() == [
        "catalog/exceptions/data.yaml:5: warning: exception for CVE-2024-45491 expired on "
        "2020-01-31 and no longer applies; remove it or extend it",
        "catalog: valid, 6 images (0 errors, 1 warning)",
    ]


def test_github_annotations_when_in_actions(cat: Path) -> None:
    break_three_ways(cat)
    edit(cat, "exceptions/data.yaml", "expires: 2027-06-30", "expires: 2020-01-31")
    result = syncer("validate", cwd=cat.parent, github=True)
    assert result.returncode == 2
    commands = [line for line in result.stdout.splitlines() if line.startswith("::")]
    assert commands[0] == (
        "::error file=catalog/access.yaml,line=7::unknown key 'membrs' in "
        "group 'content-admins'; did you mean 'members'?"
    )
    assert (
        "::warning file=catalog/exceptions/data.yaml,line=5::exception for CVE-2024-45491 "
        "expired on 2020-01-31 and no longer applies; remove it or extend it"
    ) in commands
    assert len(commands) == 4


def test_no_annotations_outside_actions(cat: Path) -> None:
    break_three_ways(cat)
    assert "::error" not in syncer("validate", cwd=cat.parent).stdout


def test_json_summary_on_stdout(cat: Path) -> None:
    break_three_ways(cat)
    result = syncer("validate", "--json", cwd=cat.parent)
    assert result.returncode == 2
    summary = json.loads(result.stdout)
    assert summary["warnings"] == []
    assert summary["errors"][2] == {
        "file": "catalog/images/web.yaml",
        "line": 7,
        "message": "'newest' in image entry must be a whole number >= 1, not a string",
    }
    assert "catalog: invalid (3 errors, 0 warnings)" in result.stderr


def test_help_is_the_module_docstring() -> None:
    result = syncer("validate", "--help", cwd=REPO)
    assert result.returncode == 0
    assert "Exit status: 0 when there are no errors (warnings allowed), 2 otherwise." in result.stdout


def test_annotation_escapes_data_and_properties() -> None:
    diagnostic = Diagnostic(Location("cat,a:log/x.yaml", 3), "50% bad\r\nnext line", "warning")
    assert annotation(diagnostic) == ("::warning file=cat%2Ca%3Alog/x.yaml,line=3::50%25 bad%0D%0Anext line")
    assert annotation(Diagnostic(Location("f.pub", 0), "m")) == "::error file=f.pub::m"
