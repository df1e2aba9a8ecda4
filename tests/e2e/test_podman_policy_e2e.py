"""The node side through the real podman: what `syncer export-policy --format containers`
writes (policy.json and registries.d/syncer.yaml) makes podman refuse what it must.

podman runs rootful on private storage (vfs under tmp_path), with the exported policy as
--signature-policy, a registries.conf allowing the plain-HTTP 127.0.0.1 registries, and a
HOME whose ~/.config/containers/registries.d is the exported one (podman has no flag for
that directory; containers/image reads the user's before /etc's).

Debian's podman 4.3.1 is built with sigstore disabled ("Debian-local change: sigstore
disabled"): it refuses every image with a sigstoreSigned requirement, signed or not. The
test asserts exactly that on a Debian build, and the pull succeeding on any other build.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from syncer.core import cosign
from syncer.stages import signatures
from syncer.tools.registry import RegistryClient
from tests.e2e.test_export_policy import make_catalog
from tests.harness.images import alpine_files, build_image, push

pytestmark = pytest.mark.e2e

PULL_TIMEOUT = 60
DEBIAN_SIGSTORE_DISABLED = "Debian-local change: sigstore disabled"
REJECTED = "is rejected by policy"
NO_SIGNATURE = "A signature was required, but no signature exists"


def _debian_build(binary: str) -> bool:
    """Whether ``binary`` is the one Debian's package installed (and patched)."""
    path = shutil.which(binary)
    if path is None:
        return False
    owner = subprocess.run(
        ["dpkg-query", "-S", os.path.realpath(path)], capture_output=True, text=True, timeout=30, check=False
    )
    return owner.returncode == 0 and owner.stdout.startswith(f"{binary}:")


class Node:
    """podman as a node would run it, confined to ``root``."""

    def __init__(
        self, root: Path, run: Path, policy: Path, registries_d: Path | None, hosts: list[str]
    ) -> None:
        self.root, self.run, self.policy = root, run, policy
        home = root / "home"
        (home / ".config" / "containers").mkdir(parents=True)
        if registries_d is not None:
            (home / ".config" / "containers" / "registries.d").symlink_to(registries_d)
        conf = root / "registries.conf"
        conf.write_text("".join(f'[[registry]]\nlocation = "{h}"\ninsecure = true\n' for h in hosts))
        (root / "tmp").mkdir()
        self.env = {
            **os.environ,
            "HOME": str(home),
            "CONTAINERS_REGISTRIES_CONF": str(conf),
            "TMPDIR": str(root / "tmp"),
        }

    def pull(self, reference: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                "podman",
                "--root",
                str(self.root / "storage"),
                "--runroot",
                str(self.run),
                "--storage-driver",
                "vfs",
                "--events-backend",
                "none",
                "--cgroup-manager",
                "cgroupfs",
                "pull",
                "--signature-policy",
                str(self.policy),
                reference,
            ],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=PULL_TIMEOUT,
            check=False,
        )


@pytest.fixture
def node() -> Iterator[Callable[..., Node]]:
    """``node(root, policy, registries_d, hosts)``; podman refuses a --runroot longer than
    50 characters, so those live in short directories under /tmp, removed afterwards."""
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: run `bash scripts/setup`")
    if os.geteuid() != 0:
        pytest.skip("this test runs podman rootful (private --root in tmp); it needs root")
    runs: list[Path] = []

    def make(root: Path, policy: Path, registries_d: Path | None, hosts: list[str]) -> Node:
        runs.append(Path(tempfile.mkdtemp(prefix="syncer-podman-")))
        return Node(root, runs[-1], policy, registries_d, hosts)

    yield make
    for run in runs:
        shutil.rmtree(run, ignore_errors=True)


def test_podman_refuses_what_the_exported_policy_refuses(tmp_path, registry_factory, node):
    trusted = registry_factory()
    system = registry_factory()  # stands in for registry.k8s.io, where a node's pause image is
    ci = cosign.generate_keypair(b"pw")
    make_catalog(
        tmp_path, trusted.host, {"ci": ci.public_pem, "alice": cosign.generate_keypair(b"pw").public_pem}
    )
    image = build_image(alpine_files((("musl", "1.2.5-r0", "musl"),)))
    digest = push(image, trusted, "approved/nginx:1.27", tmp_path)
    for reference in ("approved/busybox:1", "approved/unlisted:1", "quarantine/nginx:1.27"):
        push(image, trusted, reference, tmp_path)
    for reference in ("pause:3.9", "other:1"):
        push(image, system, reference, tmp_path)
    with RegistryClient(trusted.host, tls_verify=False) as client:
        signatures.attach(
            client,
            "approved/nginx",
            digest,
            f"{trusted.host}/approved/nginx",
            cosign.load_private_key(ci.private_pem, b"pw"),
        )
    export = subprocess.run(
        [
            sys.executable,
            "-m",
            "syncer",
            "export-policy",
            "--format",
            "containers",
            "--out",
            "policy.json",
            "--allow",
            f"{system.host}/pause",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert export.returncode == 0, export.stderr
    policy, registries_d = tmp_path / "policy.json", tmp_path / "registries.d"
    assert (registries_d / "syncer.yaml").is_file()
    podman = node(tmp_path / "node", policy, registries_d, [trusted.host, system.host])

    # Outside approved/, or not in the catalog: refused by the policy on every build.
    for reference in (
        f"{trusted.host}/quarantine/nginx:1.27",
        f"{trusted.host}/approved/unlisted:1",
        f"{system.host}/other:1",
    ):
        result = podman.pull(reference)
        assert result.returncode != 0 and REJECTED in result.stderr, (reference, result.stderr)

    # The node's own image, allowed by --allow, comes through.
    pause = podman.pull(f"{system.host}/pause:3.9")
    assert pause.returncode == 0, pause.stderr

    signed = podman.pull(f"{trusted.host}/approved/nginx:1.27")
    unsigned = podman.pull(f"{trusted.host}/approved/busybox:1")
    if _debian_build("podman"):
        # Debian's podman refuses the signed image as well: nothing it can run from approved/.
        assert signed.returncode != 0 and DEBIAN_SIGSTORE_DISABLED in signed.stderr, signed.stderr
    else:
        assert signed.returncode == 0, signed.stderr
    # An approved image nobody signed has no signature to offer, on any build.
    assert unsigned.returncode != 0 and NO_SIGNATURE in unsigned.stderr, unsigned.stderr

    # Without the registries.d file podman does not look for the .sig tag at all, and finds
    # the signed image unsigned.
    blind = node(tmp_path / "blind", policy, None, [trusted.host]).pull(f"{trusted.host}/approved/nginx:1.27")
    assert blind.returncode != 0 and NO_SIGNATURE in blind.stderr, blind.stderr
