"""`syncer keygen` through the installed console script, as a user runs it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from syncer.core import cosign
from syncer.errors import SigningError

SYNCER = Path(sys.executable).parent / "syncer"
PASSPHRASE = "plover-xyzzy-42"


def keygen(
    cwd: Path, *args: str, env: dict[str, str] | None = None, umask: int = 0o022
) -> subprocess.CompletedProcess[str]:
    environment = {
        k: v for k, v in os.environ.items() if k not in ("SYNCER_SIGNING_PASSPHRASE", "TEAM_PASSPHRASE")
    }
    environment.update(env if env is not None else {"SYNCER_SIGNING_PASSPHRASE": PASSPHRASE})
    # stdin is not a terminal here, so the command may never fall back to a prompt.
    return subprocess.run(
        [str(SYNCER), "keygen", *args],
        cwd=cwd,
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: os.umask(umask),
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "catalog").mkdir()
    return tmp_path


def files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_writes_encrypted_key_0600_outside_and_public_key_inside(repo):
    result = keygen(repo, "ci", umask=0)  # a permissive umask must not loosen the key file
    assert result.returncode == 0, result.stderr
    key, pub = repo / "ci.key", repo / "catalog" / "signers" / "ci.pub"
    assert files(repo) == {"ci.key", "catalog/signers/ci.pub"}
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_bytes().startswith(b"-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n")
    private = cosign.load_private_key(key.read_bytes(), PASSPHRASE.encode())
    public = cosign.load_public_key(pub.read_bytes())
    payload = cosign.make_payload("registry.example.com/approved/nginx", "sha256:" + "1" * 64)
    assert cosign.verify(public, payload, cosign.sign(private, payload))
    assert "ci.key" in result.stdout and "catalog/signers/ci.pub" in result.stdout
    assert cosign.key_id(public) in result.stdout
    assert "commit catalog/signers/ci.pub" in result.stdout
    assert "SYNCER_SIGNING_KEY" in result.stdout  # ci is the pipeline's signer by default
    assert PASSPHRASE not in result.stdout + result.stderr


def test_key_out_and_json_summary(repo):
    (repo / "keys").mkdir()
    result = keygen(repo, "alice", "--key-out", "keys/alice.pem", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["private_key"] == "keys/alice.pem"
    assert summary["public_key"] == "catalog/signers/alice.pub"
    public = cosign.load_public_key((repo / "catalog/signers/alice.pub").read_bytes())
    assert summary["key_id"] == cosign.key_id(public)
    assert stat.S_IMODE((repo / "keys/alice.pem").stat().st_mode) == 0o600


def test_passphrase_comes_from_the_variable_named_in_settings(repo):
    (repo / "catalog" / "settings.yaml").write_text(
        "target: {registry: registry.example.com}\nsigning: {signer: ci, passphrase_env: TEAM_PASSPHRASE}\n"
    )
    result = keygen(
        repo, "ci", env={"TEAM_PASSPHRASE": "team-secret", "SYNCER_SIGNING_PASSPHRASE": PASSPHRASE}
    )
    assert result.returncode == 0, result.stderr
    key = (repo / "ci.key").read_bytes()
    cosign.load_private_key(key, b"team-secret")
    with pytest.raises(SigningError, match="wrong passphrase"):
        cosign.load_private_key(key, PASSPHRASE.encode())


@pytest.mark.parametrize("key_out", ["catalog/ci.key", "catalog/../catalog/ci.key", "inside/ci.key"])
def test_refuses_a_private_key_path_inside_the_catalog(repo, key_out):
    (repo / "inside").symlink_to(repo / "catalog")  # a symlink must not smuggle it in
    result = keygen(repo, "ci", "--key-out", key_out)
    assert result.returncode == 2
    assert "inside the catalog directory" in result.stderr
    assert files(repo) == set()


def test_refuses_to_overwrite_an_existing_key_unless_forced(repo):
    assert keygen(repo, "ci").returncode == 0
    key, pub = repo / "ci.key", repo / "catalog/signers/ci.pub"
    before = key.read_bytes(), pub.read_bytes()

    again = keygen(repo, "ci")
    assert again.returncode == 2
    assert "ci.key already exists" in again.stderr and "--force" in again.stderr
    assert (key.read_bytes(), pub.read_bytes()) == before

    forced = keygen(repo, "ci", "--force")
    assert forced.returncode == 0, forced.stderr
    assert key.read_bytes() != before[0] and pub.read_bytes() != before[1]
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_refuses_to_replace_another_signers_public_key(repo):
    (repo / "catalog/signers").mkdir()
    (repo / "catalog/signers/bob.pub").write_text("bob's key")
    result = keygen(repo, "bob")
    assert result.returncode == 2
    assert "catalog/signers/bob.pub already exists" in result.stderr
    assert (repo / "catalog/signers/bob.pub").read_text() == "bob's key"
    assert not (repo / "bob.key").exists()


def test_without_passphrase_or_terminal_nothing_is_written(repo):
    result = keygen(repo, "ci", env={})
    assert result.returncode == 2
    assert "set the environment variable SYNCER_SIGNING_PASSPHRASE" in result.stderr
    assert files(repo) == set()


def test_an_empty_passphrase_is_refused(repo):
    result = keygen(repo, "ci", env={"SYNCER_SIGNING_PASSPHRASE": ""})
    assert result.returncode == 2
    assert "SYNCER_SIGNING_PASSPHRASE is empty" in result.stderr
    assert files(repo) == set()


@pytest.mark.parametrize("name", ["../evil", "a/b", ".hidden", "-x", "ci key"])
def test_unsafe_names_are_refused(repo, name):
    result = keygen(repo, "--", name)
    assert result.returncode == 2
    assert "signer name" in result.stderr
    assert files(repo) == set()
    assert not (repo.parent / "evil.key").exists()


def test_missing_catalog_directory_is_a_usage_error(tmp_path):
    result = keygen(tmp_path, "ci")
    assert result.returncode == 2
    assert "catalog directory 'catalog' not found" in result.stderr
    assert files(tmp_path) == set()


def test_a_secret_pasted_as_the_variable_name_is_not_echoed(repo):
    (repo / "catalog" / "settings.yaml").write_text("signing: {passphrase_env: 'hunter2 is my passphrase'}\n")
    result = keygen(repo, "ci")
    assert result.returncode == 2
    assert "signing block is invalid" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    assert files(repo) == {"catalog/settings.yaml"}
