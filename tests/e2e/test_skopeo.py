"""syncer.tools.skopeo: the command lines it builds (faked process boundary) and real copies
between real registries with the real skopeo."""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from syncer.commands import run as run_command
from syncer.tools import skopeo
from syncer.tools.registry import Credentials
from syncer.tools.skopeo import Kind, SkopeoCommandError
from tests.harness import skopeo_cli
from tests.harness.images import build_image, build_index

DIGEST = "sha256:" + "ab" * 32
SECRET = "Pa55-w0rd-never-shown"
CREDS = Credentials("robot", SECRET, origin="T_USER/T_PASS (target.auth)")


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """skopeo's work directories go here, so a test can see that they are removed."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith("syncer-skopeo-")]


def secret_forms(creds: Credentials) -> list[str]:
    token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
    return [creds.password, token]


# --- unit: the command line, with subprocess.run faked --------------------------------------


class FakeRun:
    """Stands in for subprocess.run: records each call and what the auth files held then."""

    def __init__(self, outcomes):
        self.outcomes = list(outcomes)  # (returncode, stderr) or an exception to raise
        self.calls: list[dict] = []

    def __call__(self, argv, *, env, timeout, **_):
        files = {}
        for flag in ("--src-authfile", "--dest-authfile", "--authfile", "--policy"):
            if flag in argv:
                path = argv[argv.index(flag) + 1]
                files[flag] = (
                    Path(path).read_text(),
                    stat.S_IMODE(os.stat(path).st_mode),
                    stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode),
                )
        self.calls.append({"argv": argv, "env": env, "timeout": timeout, "files": files})
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        code, stderr = outcome
        return subprocess.CompletedProcess(argv, code, b"{}", stderr.encode())


def fatal(msg: str) -> str:
    return f'time="2026-01-01T00:00:00Z" level=fatal msg={json.dumps(msg)}\n'


@pytest.fixture
def fake_run(monkeypatch):
    def install(*outcomes) -> FakeRun:
        fake = FakeRun(outcomes)
        monkeypatch.setattr(skopeo.subprocess, "run", fake)
        return fake

    return install


def test_credentials_reach_skopeo_only_through_private_auth_files(fake_run, private_tmp):
    fake = fake_run((0, ""))
    other = Credentials("puller", "an0ther-secret")
    skopeo.copy(
        f"docker://docker.io/library/nginx@{DIGEST}",
        "docker://reg.example:5000/q/nginx:1",
        src_creds=other,
        dst_creds=CREDS,
        retries=0,
    )
    call = fake.calls[0]
    visible = " ".join(call["argv"]) + " " + " ".join(f"{k}={v}" for k, v in call["env"].items())
    for secret in secret_forms(CREDS) + secret_forms(other) + ["robot:", "puller:"]:
        assert secret not in visible
    src_text, src_mode, dir_mode = call["files"]["--src-authfile"]
    dst_text, dst_mode, _ = call["files"]["--dest-authfile"]
    assert (src_mode, dst_mode, dir_mode) == (0o600, 0o600, 0o700)
    # Hub's references are keyed "docker.io" in containers-auth.json.
    assert base64.b64decode(json.loads(src_text)["auths"]["docker.io"]["auth"]) == b"puller:an0ther-secret"
    assert (
        base64.b64decode(json.loads(dst_text)["auths"]["reg.example:5000"]["auth"])
        == f"robot:{SECRET}".encode()
    )
    assert leftovers(private_tmp) == []


def test_command_line_is_deterministic_and_complete(fake_run, private_tmp, monkeypatch):
    monkeypatch.setenv("REGISTRY_AUTH_FILE", "/home/someone/auth.json")
    monkeypatch.setenv("DOCKER_CONFIG", "/home/someone/.docker")
    fake = fake_run((0, ""))
    skopeo.copy(
        f"docker://a.example/x@{DIGEST}",
        "docker://b.example/y:1",
        src_tls_verify=False,
        dst_cert_dir="/certs/b",
        timeout=42,
    )
    call = fake.calls[0]
    argv = call["argv"]
    assert argv[argv.index("copy") :] == [
        "copy",
        "--quiet",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--src-no-creds",
        "--dest-tls-verify=true",
        "--dest-cert-dir",
        "/certs/b",
        "--dest-no-creds",
        "--",
        f"docker://a.example/x@{DIGEST}",
        "docker://b.example/y:1",
    ]
    policy_text, _mode, _ = call["files"]["--policy"]
    assert json.loads(policy_text) == {"default": [{"type": "insecureAcceptAnything"}]}
    assert "--registries.d" in argv
    # The user's auth files and registries.conf are out of reach.
    assert "REGISTRY_AUTH_FILE" not in call["env"] and "DOCKER_CONFIG" not in call["env"]
    assert call["env"]["HOME"] == os.path.dirname(argv[argv.index("--policy") + 1])
    assert call["env"]["CONTAINERS_REGISTRIES_CONF"].startswith(call["env"]["HOME"])
    assert call["timeout"] == 42


def test_single_platform_copy_without_digest_preservation(fake_run, private_tmp):
    fake = fake_run((0, ""))
    skopeo.copy(
        "docker://a.example/x:1", "docker://b.example/y:1", all_platforms=False, preserve_digests=False
    )
    argv = fake.calls[0]["argv"]
    assert "--all" not in argv and "--preserve-digests" not in argv


def test_network_failures_are_retried_with_backoff(fake_run, private_tmp):
    refused = fatal(
        'pinging container registry a.example: Get "https://a.example/v2/": '
        "dial tcp 10.0.0.1:443: connect: connection refused"
    )
    fake = fake_run((1, refused), (1, refused), (0, ""))
    sleeps: list[float] = []
    skopeo.copy(f"docker://a.example/x@{DIGEST}", "docker://b.example/y:1", sleep=sleeps.append)
    assert len(fake.calls) == 3
    assert sleeps == [2.0, 4.0]


def test_retries_are_bounded(fake_run, private_tmp):
    refused = fatal(
        "initializing source docker://a.example/x: pinging container registry "
        "a.example: dial tcp: connect: connection refused"
    )
    fake = fake_run(*[(1, refused)] * 4)
    sleeps: list[float] = []
    with pytest.raises(SkopeoCommandError) as err:
        skopeo.copy(
            f"docker://a.example/x@{DIGEST}", "docker://b.example/y:1", retries=3, sleep=sleeps.append
        )
    assert len(fake.calls) == 4 and len(sleeps) == 3
    assert err.value.kind is Kind.NETWORK and err.value.attempts == 4
    assert err.value.registry == "a.example"
    assert "after 4 attempts" in str(err.value)


def test_auth_failure_is_not_retried_and_redacted(fake_run, private_tmp):
    token = base64.b64encode(f"robot:{SECRET}".encode()).decode()
    # Even if skopeo ever echoed a secret, it must not reach our message.
    fake = fake_run(
        (
            1,
            fatal(
                f"writing manifest to b.example/y: unauthorized: authentication required ({SECRET} {token})"
            ),
        )
    )
    with pytest.raises(SkopeoCommandError) as err:
        skopeo.copy(
            f"docker://a.example/x@{DIGEST}",
            "docker://b.example/y:1",
            dst_creds=CREDS,
            sleep=lambda s: pytest.fail("auth failures must not be retried"),
        )
    message = str(err.value)
    assert len(fake.calls) == 1
    assert err.value.kind is Kind.AUTH and err.value.registry == "b.example"
    assert SECRET not in message and token not in message
    assert "T_USER/T_PASS (target.auth)" in message and "push to b.example/y" in message


def test_timeout_is_reported_and_not_retried(fake_run, private_tmp):
    fake = fake_run(subprocess.TimeoutExpired(["skopeo"], 5))
    with pytest.raises(SkopeoCommandError) as err:
        skopeo.copy(f"docker://a.example/x@{DIGEST}", "docker://b.example/y:1", timeout=5)
    assert err.value.kind is Kind.TIMEOUT and len(fake.calls) == 1
    assert "within 5s" in str(err.value)
    assert leftovers(private_tmp) == []


def test_timeout_kills_the_real_process(tmp_path, private_tmp, monkeypatch):
    pidfile = tmp_path / "pid"
    slow = tmp_path / "slow-skopeo"
    slow.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nexec sleep 30\n")
    slow.chmod(0o755)
    monkeypatch.setattr(skopeo, "SKOPEO", str(slow))
    with pytest.raises(SkopeoCommandError) as err:
        skopeo_cli.inspect_raw("docker://a.example/x:1", timeout=0.5)
    assert err.value.kind is Kind.TIMEOUT
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_missing_skopeo_is_a_typed_error(private_tmp, monkeypatch):
    monkeypatch.setattr(skopeo, "SKOPEO", "/nonexistent/skopeo")
    with pytest.raises(SkopeoCommandError, match="install skopeo"):
        skopeo_cli.delete("docker://a.example/x:1")


@pytest.mark.parametrize(
    "ref", ["a.example/x:1", "docker://a.example/X:1", "docker://a.example/x@sha256:abc", "docker://-x"]
)
def test_invalid_references_never_reach_skopeo(ref, fake_run):
    fake = fake_run()
    with pytest.raises(SkopeoCommandError) as err:
        skopeo.copy(ref, "docker://b.example/y:1")
    assert err.value.kind is Kind.REFERENCE and fake.calls == []


# Messages skopeo 1.9.3 printed against distribution 2.8 (and Docker Hub's usual ones).
@pytest.mark.parametrize(
    "reason, kind",
    [
        (
            "copying image 1/2 from manifest list: trying to reuse blob sha256:fd at destination: "
            "checking whether a blob sha256:fd exists in 127.0.0.1:5102/lib/hello: unauthorized: "
            "authentication required",
            Kind.AUTH,
        ),
        (
            "initializing source docker://docker.io/x/y:1: reading manifest 1 in docker.io/x/y: "
            "requested access to the resource is denied",
            Kind.AUTH,
        ),
        (
            "reading manifest nope in 127.0.0.1:5101/lib/hello: manifest unknown: manifest unknown",
            Kind.NOT_FOUND,
        ),
        (
            'pinging container registry 127.0.0.1:5199: Get "http://127.0.0.1:5199/v2/": dial tcp '
            "127.0.0.1:5199: connect: connection refused",
            Kind.NETWORK,
        ),
        (
            "reading blob sha256:aa: fetching blob: received unexpected HTTP status: 503 Service Unavailable",
            Kind.NETWORK,
        ),
        (
            "reading manifest 1 in docker.io/library/nginx: toomanyrequests: You have reached your "
            "pull rate limit",
            Kind.NETWORK,
        ),
        ('Get "https://r/v2/": net/http: TLS handshake timeout', Kind.NETWORK),
        (
            'pinging container registry 127.0.0.1:5103: Get "https://127.0.0.1:5103/v2/": x509: '
            "certificate signed by unknown authority",
            Kind.TLS,
        ),
        ('Get "https://127.0.0.1:5101/v2/": http: server gave HTTP response to HTTPS client', Kind.TLS),
        (
            "writing manifest: uploading manifest 1 to r/x: manifest invalid: manifest invalid",
            Kind.MANIFEST_INVALID,
        ),
        ("Invalid source name docker://r/x@sha256:abc: invalid reference format", Kind.REFERENCE),
        ("something else entirely", Kind.OTHER),
    ],
)
def test_classify(reason, kind):
    assert skopeo.classify(reason) is kind


# --- real skopeo, real registries ---------------------------------------------------------


@pytest.fixture
def observed(tmp_path, monkeypatch) -> Path:
    """Runs skopeo through a wrapper that logs what any user could see of the process (its
    argv and environment, as /proc shows them) and the modes of the auth files it is given."""
    log = tmp_path / "observed.log"
    wrapper = tmp_path / "skopeo-wrapper"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"tr '\\0' ' ' < /proc/$$/cmdline >> {log}; echo >> {log}\n"
        f"tr '\\0' ' ' < /proc/$$/environ >> {log}; echo >> {log}\n"
        'for arg in "$@"; do case "$arg" in *-auth.json) '
        f'stat -c "mode %a %n" "$arg" "$(dirname "$arg")" >> {log};; esac; done\n'
        f'exec {shutil.which("skopeo")} "$@"\n'
    )
    wrapper.chmod(0o755)
    monkeypatch.setattr(skopeo, "SKOPEO", str(wrapper))
    return log


def test_copy_into_auth_registry_with_wrong_password(
    registry, auth_registry, push_image, observed, private_tmp
):
    digest = push_image(registry, "library/app:1", {"etc/app": "1"})
    wrong = Credentials(auth_registry.username, "not-" + auth_registry.password, origin="U/P")
    with pytest.raises(SkopeoCommandError) as err:
        skopeo.copy(
            f"docker://{registry.host}/library/app@{digest}",
            f"docker://{auth_registry.host}/quarantine/app:1",
            src_tls_verify=False,
            dst_tls_verify=False,
            dst_creds=wrong,
            retries=0,
        )
    assert err.value.kind is Kind.AUTH and err.value.registry == auth_registry.host
    message = str(err.value)
    assert auth_registry.host in message and "U/P" in message and "push to" in message
    for secret in secret_forms(wrong):
        assert secret not in message and secret not in observed.read_text()
    assert leftovers(private_tmp) == []


def test_stopped_registry_is_a_network_error_after_bounded_retries(registry, private_tmp):
    registry.stop()
    sleeps: list[float] = []
    with pytest.raises(SkopeoCommandError) as err:
        skopeo.copy(
            f"docker://{registry.host}/lib/app@{DIGEST}",
            f"docker://{registry.host}/quarantine/app:1",
            src_tls_verify=False,
            dst_tls_verify=False,
            retries=2,
            sleep=sleeps.append,
        )
    assert err.value.kind is Kind.NETWORK and err.value.attempts == 3
    assert err.value.registry == registry.host and len(sleeps) == 2
    assert "connection refused" in str(err.value)


def test_tls_registry_needs_its_ca(tls_registry, private_tmp):
    ref = f"docker://{tls_registry.host}/lib/app:1"
    with pytest.raises(SkopeoCommandError) as err:
        skopeo_cli.inspect_raw(ref, retries=0)
    assert err.value.kind is Kind.TLS and err.value.registry == tls_registry.host
    # With the CA the TLS handshake succeeds and the registry answers: no such manifest.
    with pytest.raises(SkopeoCommandError) as err:
        skopeo_cli.inspect_raw(ref, cert_dir=str(tls_registry.cert_dir), retries=0)
    assert err.value.kind is Kind.NOT_FOUND


@pytest.mark.parametrize("media_types", ["oci", "docker"])
def test_copy_by_digest_keeps_the_index_digest(registry_factory, push_image, private_tmp, media_types):
    upstream, target = registry_factory(), registry_factory()
    index = build_index(
        {"linux/amd64": {"etc/os": "amd64"}, "linux/arm64": {"etc/os": "arm64"}}, media_types=media_types
    )
    digest = push_image(upstream, "library/app:1.0", index)
    skopeo.copy(
        f"docker://{upstream.host}/library/app@{digest}",
        f"docker://{target.host}/quarantine/app:1.0",
        src_tls_verify=False,
        dst_tls_verify=False,
    )
    raw = skopeo_cli.inspect_raw(f"docker://{target.host}/quarantine/app:1.0", tls_verify=False)
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest
    # Every platform came along, not just the one matching this machine.
    for image in index.images:
        child = skopeo_cli.inspect_raw(
            f"docker://{target.host}/quarantine/app@{image.digest}", tls_verify=False
        )
        assert child == image.manifest.data
    assert leftovers(private_tmp) == []


def test_copy_between_auth_and_plain_registries(auth_registry, registry, push_image, observed, private_tmp):
    creds = Credentials(auth_registry.username, auth_registry.password, origin="U/P")
    digest = push_image(
        auth_registry, "library/app:1", build_index({"linux/amd64": {"a": "1"}, "linux/arm64": {"a": "2"}})
    )
    skopeo.copy(
        f"docker://{auth_registry.host}/library/app@{digest}",
        f"docker://{registry.host}/quarantine/app:1",
        src_tls_verify=False,
        dst_tls_verify=False,
        src_creds=creds,
    )
    skopeo.copy(
        f"docker://{registry.host}/quarantine/app@{digest}",
        f"docker://{auth_registry.host}/approved/app:1",
        src_tls_verify=False,
        dst_tls_verify=False,
        dst_creds=creds,
    )
    raw = skopeo_cli.inspect_raw(
        f"docker://{auth_registry.host}/approved/app:1", tls_verify=False, creds=creds
    )
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest
    seen = observed.read_text()
    assert seen.count("--src-authfile") == 1 and seen.count("--dest-authfile") == 1
    modes = [line.split()[1:] for line in seen.splitlines() if line.startswith("mode ")]
    # One auth file per authenticated side: two copies and one inspect.
    assert [m for m, path in modes if path.endswith("-auth.json")] == ["600"] * 3
    assert {m for m, path in modes if not path.endswith("-auth.json")} == {"700"}
    for secret in secret_forms(creds):
        assert secret not in seen
    assert leftovers(private_tmp) == []


def test_copy_to_tls_registry_with_and_without_its_ca(registry, tls_registry, push_image, private_tmp):
    digest = push_image(registry, "library/app:1", {"etc/app": "1"})
    src = f"docker://{registry.host}/library/app@{digest}"
    dst = f"docker://{tls_registry.host}/quarantine/app:1"
    with pytest.raises(SkopeoCommandError) as err:
        skopeo.copy(src, dst, src_tls_verify=False, retries=0)
    assert err.value.kind is Kind.TLS and err.value.registry == tls_registry.host
    skopeo.copy(src, dst, src_tls_verify=False, dst_cert_dir=str(tls_registry.cert_dir))
    raw = skopeo_cli.inspect_raw(dst, cert_dir=str(tls_registry.cert_dir))
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest


def test_delete_removes_the_manifest(registry, push_image, private_tmp):
    digest = push_image(registry, "quarantine/app:1", {"etc/app": "1"})
    ref = f"docker://{registry.host}/quarantine/app@{digest}"
    skopeo_cli.delete(ref, tls_verify=False)
    with pytest.raises(SkopeoCommandError) as err:
        skopeo_cli.inspect_raw(ref, tls_verify=False, retries=0)
    assert err.value.kind is Kind.NOT_FOUND and err.value.registry == registry.host


def test_syncer_runs_copy_timeout_defaults_to_skopeos():
    parser = argparse.ArgumentParser()
    run_command.configure(parser)
    assert parser.parse_args([]).copy_timeout == skopeo.COPY_TIMEOUT
    assert parser.parse_args(["--copy-timeout", "5"]).copy_timeout == 5


# --- the run's blob-info cache: a shared layer crosses once -----------------------------------

BASE = {"usr/lib/base.txt": "a base layer every image of the test shares\n" * 200}


def two_images_sharing_a_layer(upstream, push_image):
    """(base layer digest, [(repository, digest)]) of two images on one base layer."""
    images = [build_image([BASE, {"etc/app": name}]) for name in ("a", "b")]
    pushed = [
        (f"library/{name}", push_image(upstream, f"library/{name}:1", image))
        for name, image in zip("ab", images, strict=True)
    ]
    return images[0].layers[0].digest, pushed


def copy_to_quarantine(upstream, target, repository: str, digest: str) -> None:
    name = repository.split("/")[-1]
    skopeo.copy(
        f"docker://{upstream.host}/{repository}@{digest}",
        f"docker://{target.host}/quarantine/{name}:1",
        src_tls_verify=False,
        dst_tls_verify=False,
    )


@pytest.mark.parametrize("parallel", [False, True])
def test_a_layer_in_a_sibling_repository_is_mounted_not_sent_again(
    registry_factory, push_image, private_tmp, parallel
):
    upstream, target = registry_factory(), registry_factory()
    base, pushed = two_images_sharing_a_layer(upstream, push_image)
    with skopeo.shared_blob_cache() as cache:
        assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700
        if parallel:
            # Both copies start at once; the second waits for the first and then mounts.
            with ThreadPoolExecutor(max_workers=2) as pool:
                list(pool.map(lambda p: copy_to_quarantine(upstream, target, *p), pushed))
        else:
            for repository, digest in pushed:
                copy_to_quarantine(upstream, target, repository, digest)
    assert upstream.count("GET", f"/blobs/{base}") == 1
    assert target.count("POST", "/quarantine/") >= 1  # the mount, or the first upload
    for repository, digest in pushed:
        raw = skopeo_cli.inspect_raw(
            f"docker://{target.host}/quarantine/{repository.split('/')[-1]}@{digest}", tls_verify=False
        )
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest
    assert leftovers(private_tmp) == []


def test_without_a_shared_cache_no_copy_learns_from_the_host(registry_factory, push_image, private_tmp):
    # Outside a run's block each copy starts from an empty cache of its own, root's too: what
    # a host's /var/lib/containers/cache holds changes nothing.
    upstream, target = registry_factory(), registry_factory()
    base, pushed = two_images_sharing_a_layer(upstream, push_image)
    for repository, digest in pushed:
        copy_to_quarantine(upstream, target, repository, digest)
    assert upstream.count("GET", f"/blobs/{base}") == 2
    assert leftovers(private_tmp) == []


def test_shared_cache_reaches_skopeo_as_its_data_home(fake_run, private_tmp):
    fake = fake_run((0, ""), (0, ""))
    with skopeo.shared_blob_cache() as cache:
        skopeo.copy("docker://a.example/x:1", "docker://b.example/y:1")
    skopeo.copy("docker://a.example/x:1", "docker://b.example/y:1")
    inside, outside = (call["env"] for call in fake.calls)
    assert inside["XDG_DATA_HOME"] == cache and inside["HOME"] != cache
    assert outside["XDG_DATA_HOME"] == outside["HOME"]
    # containers/image keeps root's cache in /var/lib/containers unless told it is rootless.
    assert inside["_CONTAINERS_ROOTLESS_UID"] != "0"
    assert leftovers(private_tmp) == []
