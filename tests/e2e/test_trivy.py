"""syncer.tools.trivy through the real Trivy, a real registry and the generated DB."""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
import stat
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from syncer.core.model import Finding, LicenseFinding, Severity
from syncer.errors import TrivyError
from syncer.tools import trivy
from tests.harness.images import (
    alpine_files,
    build_image,
    build_index,
    debian_files,
    java_archive,
    python_package_files,
)
from tests.harness.trivydb import Advisory, JavaArtifact

pytestmark = pytest.mark.e2e

REAL_TRIVY = str(Path(sys.executable).parent / "trivy")
DEBIAN_FINDINGS = {
    Finding(
        "CVE-2099-0001",
        "libssl3",
        "3.0.15-1~deb12u1",
        "3.0.99-1",
        Severity.CRITICAL,
        "fixed",
        "openssl: planted critical",
    ),
    Finding(
        "CVE-2099-0002",
        "libc6",
        "2.36-9+deb12u9",
        None,
        Severity.HIGH,
        "affected",
        "glibc: planted unfixed high",
    ),
    Finding(
        "CVE-2099-0003",
        "base-files",
        "12.4+deb12u8",
        "12.4+deb12u99",
        Severity.LOW,
        "fixed",
        "base-files: planted low",
    ),
}
REQUESTS_FINDING = Finding(
    "GHSA-0000-0000-0001",
    "requests",
    "2.31.0",
    "2.99.0",
    Severity.MEDIUM,
    "fixed",
    "requests: planted medium",
)


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.fixture
def debian_app(registry, push_image) -> str:
    digest = push_image(
        registry,
        "team/app:1",
        build_image(
            {**debian_files(), **python_package_files("requests", "2.31.0")},
            created="2024-05-06T07:08:09.123456789Z",
        ),
    )
    return f"{registry.host}/team/app@{digest}"


# --- locating Trivy, version, DB metadata ----------------------------------------------------


def test_version_of_the_binary_beside_python(monkeypatch):
    monkeypatch.delenv(trivy.ENV_BINARY, raising=False)
    assert trivy.binary() == REAL_TRIVY
    assert trivy.version() == "0.76.0"


def test_syncer_trivy_must_be_executable(monkeypatch, tmp_path):
    monkeypatch.setenv(trivy.ENV_BINARY, str(tmp_path / "missing"))
    with pytest.raises(TrivyError, match=r"SYNCER_TRIVY=.*not an executable"):
        trivy.version()


def test_db_info_reads_metadata(trivy_db):
    info = trivy.db_info(trivy_db.cache_dir)
    assert (info.updated_at, info.schema_version) == ("2025-01-01T00:00:00Z", 2)
    trivy_db.write()
    assert trivy.db_info(trivy_db.cache_dir).updated_at == "2025-01-02T00:00:00Z"


def test_missing_db_says_how_to_get_one(tmp_path, debian_app):
    for call in (
        lambda: trivy.db_info(tmp_path),
        lambda: trivy.scan_image(debian_app, cache_dir=tmp_path, insecure=True),
    ):
        with pytest.raises(TrivyError) as err:
            call()
        assert "no Trivy vulnerability DB" in str(err.value)
        assert "--download-db-only" in str(err.value) and "--db-repository" in str(err.value)


def test_unreadable_metadata_is_a_trivy_error(tmp_path):
    (tmp_path / "db").mkdir()
    (tmp_path / "db/metadata.json").write_text("{not json")
    with pytest.raises(TrivyError, match="not Trivy DB metadata"):
        trivy.db_info(tmp_path)


# --- scanning ----------------------------------------------------------------------------------


def test_scan_parses_findings_os_created_and_licenses(trivy_db, debian_app):
    scan = trivy.scan_image(
        debian_app, cache_dir=trivy_db.cache_dir, insecure=True, licenses=True, timeout=60
    )
    assert set(scan.findings) == DEBIAN_FINDINGS | {REQUESTS_FINDING}
    assert len(scan.findings) == 4
    assert scan.os == trivy.OSInfo("debian", "12.8")
    assert scan.created == datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    assert LicenseFinding("Apache-2.0", "requests") in scan.licenses
    assert scan.repo_digests == (debian_app,)
    assert scan.image_id.startswith("sha256:")


def test_a_newer_db_with_more_advisories_finds_more(trivy_db, debian_app):
    before = trivy.scan_image(debian_app, cache_dir=trivy_db.cache_dir, insecure=True)
    trivy_db.add(Advisory("CVE-2099-0900", "debian 12", "glibc", "CRITICAL", "2.36-9+deb12u10"))
    after = trivy.scan_image(debian_app, cache_dir=trivy_db.cache_dir, insecure=True)
    assert {f.id for f in after.findings} - {f.id for f in before.findings} == {"CVE-2099-0900"}
    assert trivy.db_info(trivy_db.cache_dir).updated_at > "2025-01-01T00:00:00Z"


def test_platform_selects_one_image_of_an_index_and_labels_findings(trivy_db, registry, push_image):
    digest = push_image(
        registry,
        "team/multi:1",
        build_index(
            {
                "linux/amd64": debian_files(),
                "linux/arm64": alpine_files(arch="aarch64"),
            }
        ),
    )
    ref = f"{registry.host}/team/multi@{digest}"
    arm = trivy.scan_image(ref, cache_dir=trivy_db.cache_dir, platform="linux/arm64", insecure=True)
    assert {(f.id, f.package, f.platform) for f in arm.findings} == {
        ("CVE-2099-0101", "busybox", "linux/arm64"),
        ("CVE-2099-0102", "libcrypto3", "linux/arm64"),
    }
    assert arm.os == trivy.OSInfo("alpine", "3.20.3")
    amd = trivy.scan_image(ref, cache_dir=trivy_db.cache_dir, platform="linux/amd64", insecure=True)
    assert {f.id for f in amd.findings} == {f.id for f in DEBIAN_FINDINGS}
    assert {f.platform for f in amd.findings} == {"linux/amd64"}


@pytest.mark.parametrize(
    "ref",
    [
        "127.0.0.1:5000/team/app:1",
        "127.0.0.1:5000/team/app",
        "127.0.0.1:5000/team/app@sha512:" + "a" * 128,
        "Not A Ref",
    ],
)
def test_refuses_anything_but_a_sha256_digest_reference(trivy_db, ref, monkeypatch, tmp_path):
    monkeypatch.setenv(trivy.ENV_BINARY, script(tmp_path, "never", "touch ran\nexit 1\n"))
    with pytest.raises(TrivyError, match="cannot scan"):
        trivy.scan_image(ref, cache_dir=trivy_db.cache_dir)
    assert not (tmp_path / "ran").exists()


def test_unknown_digest_gives_trivys_reason(trivy_db, registry):
    ref = f"{registry.host}/team/none@sha256:{'0' * 64}"
    with pytest.raises(TrivyError) as err:
        trivy.scan_image(ref, cache_dir=trivy_db.cache_dir, insecure=True, timeout=60)
    message = str(err.value)
    assert message.startswith(f"trivy failed scanning {ref}: ")
    assert "unable to find the specified image" in message and "Traceback" not in message


def test_credentials_go_through_the_environment_never_argv(
    trivy_db, auth_registry, push_image, tmp_path, monkeypatch
):
    digest = push_image(auth_registry, "team/app:1", build_image(debian_files()))
    ref = f"{auth_registry.host}/team/app@{digest}"
    record = script(
        tmp_path,
        "record",
        f'printf "%s\\n" "$@" > {tmp_path}/argv\nenv > {tmp_path}/env\nexec {REAL_TRIVY} "$@"\n',
    )
    monkeypatch.setenv(trivy.ENV_BINARY, record)
    creds = (auth_registry.username, auth_registry.password)
    scan = trivy.scan_image(ref, cache_dir=trivy_db.cache_dir, insecure=True, credentials=creds)
    assert {f.id for f in scan.findings} == {f.id for f in DEBIAN_FINDINGS}
    assert auth_registry.password not in (tmp_path / "argv").read_text()
    assert f"TRIVY_PASSWORD={auth_registry.password}\n" in (tmp_path / "env").read_text()

    with pytest.raises(TrivyError) as err:
        trivy.scan_image(
            ref,
            cache_dir=trivy_db.cache_dir,
            insecure=True,
            credentials=(auth_registry.username, "wrong-" + auth_registry.password),
        )
    assert "wrong-" not in str(err.value) and auth_registry.password not in str(err.value)
    assert "UNAUTHORIZED" in str(err.value) or "unauthorized" in str(err.value)


def test_private_ca_directory_is_trusted(trivy_db, tls_registry, push_image):
    digest = push_image(tls_registry, "team/app:1", build_image(debian_files()))
    ref = f"{tls_registry.host}/team/app@{digest}"
    with pytest.raises(TrivyError, match="certificate"):
        trivy.scan_image(ref, cache_dir=trivy_db.cache_dir, timeout=60)
    scan = trivy.scan_image(ref, cache_dir=trivy_db.cache_dir, ca_dir=str(tls_registry.cert_dir))
    assert {f.id for f in scan.findings} == {f.id for f in DEBIAN_FINDINGS}


def test_neither_trivy_variables_nor_a_trivyignore_in_cwd_change_the_findings(
    trivy_db, debian_app, monkeypatch, tmp_path
):
    (tmp_path / ".trivyignore").write_text("CVE-2099-0001\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRIVY_SEVERITY", "LOW")
    scan = trivy.scan_image(debian_app, cache_dir=trivy_db.cache_dir, insecure=True)
    assert set(scan.findings) == DEBIAN_FINDINGS | {REQUESTS_FINDING}


def test_java_archives_without_java_db_say_how_to_get_it(trivy_db, registry, push_image):
    shutil.rmtree(trivy_db.cache_dir / "java-db")
    jar = io.BytesIO()
    with zipfile.ZipFile(jar, "w") as z:
        z.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
    digest = push_image(
        registry, "team/java:1", build_image({**debian_files(), "app/app.jar": jar.getvalue()})
    )
    with pytest.raises(TrivyError, match="--download-java-db-only") as err:
        trivy.scan_image(
            f"{registry.host}/team/java@{digest}", cache_dir=trivy_db.cache_dir, insecure=True, timeout=60
        )
    assert "TRIVY_SKIP_JAVA_DB_UPDATE" in str(err.value)


def test_a_jar_is_matched_through_the_java_db(trivy_db, registry, push_image):
    bare = java_archive("org.example", "bare", "1.9", pom_properties=False)
    trivy_db.add(Advisory("GHSA-jjjj-0000-0009", "maven", "org.example:bare", "HIGH", "1.10"))
    trivy_db.write_java(JavaArtifact.of(bare, "org.example", "bare", "1.9"))
    digest = push_image(registry, "team/java:1", build_image({**debian_files(), "app/x.jar": bare}))
    scan = trivy.scan_image(
        f"{registry.host}/team/java@{digest}", cache_dir=trivy_db.cache_dir, insecure=True, timeout=60
    )
    assert (
        Finding(
            "GHSA-jjjj-0000-0009",
            "org.example:bare",
            "1.9",
            "1.10",
            Severity.HIGH,
            "fixed",
            "GHSA-jjjj-0000-0009 in org.example:bare",
        )
        in scan.findings
    )


def test_a_server_scans_with_its_db_and_may_not_fall_behind_the_run(
    trivy_db, debian_app, trivy_server, tmp_path
):
    newer = datetime(2025, 3, 3, tzinfo=UTC)
    first = trivy_server([Advisory("CVE-2099-7001", "debian 12", "glibc", "LOW", "2.99")], updated_at=newer)
    assert trivy.server_info(first.url).db.updated_at == "2025-03-03T00:00:00Z"
    assert trivy.scanner(first.url) == f"trivy 0.76.0 server {first.url}"
    # A client needs no local vulnerability DB, not even a cache directory (no jars here).
    scan = trivy.scan_image(debian_app, cache_dir=tmp_path / "new", insecure=True, server=first.url)
    assert {f.id for f in scan.findings} == {"CVE-2099-7001"}

    first.stop()  # another server, with an older DB, takes over the address mid-run
    trivy_server(updated_at=newer.replace(month=1), port=first.port)
    with pytest.raises(TrivyError, match="older than the one of 2025-03-03T00:00:00Z"):
        trivy.scan_image(debian_app, cache_dir=trivy_db.cache_dir, insecure=True, server=first.url)


# --- a broken Trivy ----------------------------------------------------------------------------


def test_failing_binary_gives_its_reason(trivy_db, debian_app, monkeypatch, tmp_path):
    monkeypatch.setenv(
        trivy.ENV_BINARY,
        script(
            tmp_path,
            "fails",
            'printf "2026-01-01T00:00:00Z\\tINFO\\tstarting\\n" >&2\n'
            'printf "2026-01-01T00:00:00Z\\tFATAL\\tFatal error\\trun error: disk on fire\\n" >&2\n'
            "exit 1\n",
        ),
    )
    with pytest.raises(TrivyError) as err:
        trivy.scan_image(
            debian_app, cache_dir=trivy_db.cache_dir, insecure=True, credentials=("someone", "s3cret-pass")
        )
    assert str(err.value) == f"trivy failed scanning {debian_app}: disk on fire"


def test_credentials_are_redacted_from_trivys_reason(trivy_db, debian_app, monkeypatch, tmp_path):
    monkeypatch.setenv(
        trivy.ENV_BINARY,
        script(tmp_path, "leaks", 'echo "FATAL login as someone with $TRIVY_PASSWORD failed" >&2\nexit 2\n'),
    )
    with pytest.raises(TrivyError) as err:
        trivy.scan_image(
            debian_app, cache_dir=trivy_db.cache_dir, insecure=True, credentials=("someone", "s3cret-pass")
        )
    assert "s3cret-pass" not in str(err.value) and "someone" not in str(err.value)
    assert "***" in str(err.value)


def test_garbage_output_is_a_trivy_error(trivy_db, debian_app, monkeypatch, tmp_path):
    # Writes a report that is not JSON where --output points, and exits 0.
    monkeypatch.setenv(
        trivy.ENV_BINARY,
        script(tmp_path, "garbage", 'while [ "$1" != "--output" ]; do shift; done\necho "<html>" > "$2"\n'),
    )
    with pytest.raises(TrivyError, match="could not be read"):
        trivy.scan_image(debian_app, cache_dir=trivy_db.cache_dir, insecure=True)


def test_hanging_binary_times_out_and_its_process_group_is_killed(
    trivy_db, debian_app, monkeypatch, tmp_path
):
    monkeypatch.setenv(
        trivy.ENV_BINARY, script(tmp_path, "hangs", f"sleep 60 &\necho $! > {tmp_path}/child\nwait\n")
    )
    started = time.monotonic()
    with pytest.raises(TrivyError, match=r"did not finish scanning .* within 1.5s"):
        trivy.scan_image(debian_app, cache_dir=trivy_db.cache_dir, insecure=True, timeout=1.5)
    assert time.monotonic() - started < 5
    child = int((tmp_path / "child").read_text())
    status = Path(f"/proc/{child}/stat")
    assert not status.exists() or status.read_text().split()[2] == "Z"


# --- the DB update and concurrency -------------------------------------------------------------


def make_stale(cache_dir: Path) -> None:
    """Trivy downloads only when NextUpdate has passed and the last download is an hour old."""
    path = cache_dir / "db/metadata.json"
    meta = json.loads(path.read_text())
    meta.update(NextUpdate="2025-01-02T00:00:00Z", DownloadedAt="2025-01-01T00:00:00Z")
    path.write_text(json.dumps(meta))


def test_update_db_does_nothing_while_the_db_is_fresh(trivy_db, monkeypatch, tmp_path):
    monkeypatch.setenv(trivy.ENV_BINARY, script(tmp_path, "never", "touch ran\nexit 1\n"))
    assert trivy.update_db(trivy_db.cache_dir).updated_at == "2025-01-01T00:00:00Z"
    assert not (tmp_path / "ran").exists()


def test_update_db_of_a_stale_db_reports_why_it_failed(trivy_db):
    make_stale(trivy_db.cache_dir)
    started = time.monotonic()
    with pytest.raises(
        TrivyError,
        match=r"trivy failed updating its vulnerability DB: .*"
        "127.0.0.1:9",
    ):
        trivy.update_db(trivy_db.cache_dir, db_repository="127.0.0.1:9/trivy-db:2", timeout=30)
    assert time.monotonic() - started < 30


def make_java_stale(cache_dir: Path) -> None:
    path = cache_dir / "java-db/metadata.json"
    meta = json.loads(path.read_text())
    meta.update(NextUpdate="2025-01-02T00:00:00Z", DownloadedAt="2025-01-01T00:00:00Z")
    path.write_text(json.dumps(meta))


def test_update_db_fetches_a_due_java_db_from_its_repository_unless_skipped(trivy_db):
    make_java_stale(trivy_db.cache_dir)
    with pytest.raises(TrivyError, match=r"trivy failed updating its Java DB: .*127.0.0.1:9"):
        trivy.update_db(trivy_db.cache_dir, java_db_repository="127.0.0.1:9/trivy-java-db:1", timeout=30)
    info = trivy.update_db(trivy_db.cache_dir, skip_java_db_update=True, timeout=30)
    assert info.updated_at == "2025-01-01T00:00:00Z"


def test_update_db_does_not_fetch_a_fresh_java_db(trivy_db, monkeypatch, tmp_path):
    monkeypatch.setenv(trivy.ENV_BINARY, script(tmp_path, "never", "touch ran\nexit 1\n"))
    trivy.update_java_db(trivy_db.cache_dir)
    meta = trivy_db.cache_dir / "java-db/metadata.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "Version": 2}))  # another schema
    with pytest.raises(TrivyError, match="updating its Java DB"):
        trivy.update_java_db(trivy_db.cache_dir)


def test_update_db_waits_for_running_scans_within_its_timeout(trivy_db):
    make_stale(trivy_db.cache_dir)
    with open(trivy_db.cache_dir / "db.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)  # what a running scan holds
        with pytest.raises(TrivyError, match="stayed locked"):
            trivy.update_db(trivy_db.cache_dir, timeout=0.5)


def test_parallel_scans_share_one_cache(trivy_db, registry, push_image):
    refs = []
    for i in range(4):
        files = {**debian_files(), f"srv/{i}": str(i)}  # distinct layers: nothing cached
        refs.append(
            f"{registry.host}/team/app{i}@" + push_image(registry, f"team/app{i}:1", build_image(files))
        )
    with ThreadPoolExecutor(4) as pool:
        scans = list(
            pool.map(
                lambda ref: trivy.scan_image(ref, cache_dir=trivy_db.cache_dir, insecure=True, timeout=60),
                refs,
            )
        )
    assert all(set(s.findings) == DEBIAN_FINDINGS for s in scans)


def test_a_scan_takes_a_free_slot_and_gives_up_when_none_frees(trivy_db, debian_app):
    slots = trivy_db.cache_dir / "scan-slots"
    slots.mkdir()
    held = []
    for n in range(trivy.SLOTS):  # other scans, maybe of other processes, hold every slot
        fd = os.open(slots / f"{n}.lock", os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        held.append(fd)
    try:
        with pytest.raises(TrivyError, match=r"scan slots .* stayed busy"):
            trivy.scan_image(debian_app, cache_dir=trivy_db.cache_dir, insecure=True, timeout=0.5)
        os.close(held.pop(7))
        scan = trivy.scan_image(debian_app, cache_dir=trivy_db.cache_dir, insecure=True)
        assert set(scan.findings) == DEBIAN_FINDINGS | {REQUESTS_FINDING}
        assert (slots / "7" / "fanal").is_dir()
        assert (slots / "7" / "db").resolve() == (trivy_db.cache_dir / "db").resolve()
    finally:
        for fd in held:
            os.close(fd)


def test_rescans_of_a_repository_reuse_its_slot(trivy_db, debian_app):
    for _ in range(2):
        trivy.scan_image(debian_app, cache_dir=trivy_db.cache_dir, insecure=True)
    assert len([p for p in (trivy_db.cache_dir / "scan-slots").iterdir() if p.is_dir()]) == 1


# --- the run's own server ----------------------------------------------------------------------


def _slot_of(repository: str) -> int:
    # As trivy._scan_slot prefers one for a repository (the name hashed).
    return int.from_bytes(hashlib.sha256(repository.encode()).digest()[:4], "big") % trivy.SLOTS


def two_repositories_sharing_a_layer(registry, push_image) -> tuple[str, list[str]]:
    """Two repositories whose preferred scan slots differ: the registry's port is random, and
    1 time in SLOTS "team/a" and "team/b" on it would hash to the same slot."""
    first = "a"
    second = next(
        n
        for n in "bcdefghijklmnopqrstuvwxyz"
        if _slot_of(f"{registry.host}/team/{n}") != _slot_of(f"{registry.host}/team/{first}")
    )
    names = (first, second)
    images = [build_image([debian_files(), {f"srv/{name}": name}]) for name in names]
    refs = [
        f"{registry.host}/team/{name}@" + push_image(registry, f"team/{name}:1", image)
        for name, image in zip(names, images, strict=True)
    ]
    return images[0].layers[0].digest, refs


def test_scans_through_the_run_server_analyse_a_shared_layer_once(trivy_db, registry, push_image):
    base, refs = two_repositories_sharing_a_layer(registry, push_image)
    server = trivy.RunServer(trivy_db.cache_dir)
    try:
        scans = [
            trivy.scan_image(ref, cache_dir=trivy_db.cache_dir, insecure=True, timeout=120, run_server=server)
            for ref in refs
        ]
        token_seen = server.token in " ".join(server._proc.args)
        # Without the token no one may write an analysis into the cache the scans trust.
        put = f"{server.address()}/twirp/trivy.cache.v1.Cache/PutBlob"
        refused = requests.post(put, json={}, timeout=10).status_code
        with_token = requests.post(
            put, json={}, headers={"Trivy-Token": server.token}, timeout=10
        ).status_code
    finally:
        server.close()
    assert server.problem == ""
    assert all(set(s.findings) == DEBIAN_FINDINGS for s in scans)
    assert registry.count("GET", f"/blobs/{base}") == 1
    assert not token_seen  # the token is in a private file, not on a command line
    assert refused == 401 and with_token != 401
    assert (trivy_db.cache_dir / "run-server" / "fanal").is_dir()  # kept for re-scans


def test_without_the_run_server_each_slot_reads_the_shared_layer(trivy_db, registry, push_image):
    base, refs = two_repositories_sharing_a_layer(registry, push_image)
    for ref in refs:
        trivy.scan_image(ref, cache_dir=trivy_db.cache_dir, insecure=True, timeout=120)
    slots = [p for p in (trivy_db.cache_dir / "scan-slots").iterdir() if p.is_dir()]
    assert registry.count("GET", f"/blobs/{base}") == len(slots) == 2


def test_a_server_left_by_a_killed_run_is_stopped_by_the_next(trivy_db):
    left = trivy.RunServer(trivy_db.cache_dir)
    assert left.address() is not None
    orphan = left._proc
    for fd in left._fds:  # the run died: its locks are gone, its server is not
        os.close(fd)
    left._fds.clear()
    following = trivy.RunServer(trivy_db.cache_dir)
    try:
        assert following.address() is not None, following.problem
        assert orphan.wait(timeout=10) is not None
    finally:
        following.close()


def test_a_busy_run_server_cache_falls_back_to_the_slots(trivy_db, debian_app):
    fd = os.open(trivy_db.cache_dir / "run-server.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another syncer process runs the server of this cache
    server = trivy.RunServer(trivy_db.cache_dir)
    try:
        scan = trivy.scan_image(
            debian_app, cache_dir=trivy_db.cache_dir, insecure=True, timeout=120, run_server=server
        )
    finally:
        server.close()
        os.close(fd)
    assert set(scan.findings) == DEBIAN_FINDINGS | {REQUESTS_FINDING}
    assert "another syncer process uses it" in server.problem
    assert server.address() is None


# --- the report parser -------------------------------------------------------------------------


def test_report_parser_defaults_and_errors():
    scan = trivy.parse_report(
        {
            "SchemaVersion": 2,
            "Metadata": {"ImageConfig": {"created": "0001-01-01T00:00:00Z"}},
            "Results": [
                {"Vulnerabilities": [{"VulnerabilityID": "X-1", "PkgName": "p", "Severity": "weird"}]}
            ],
        },
        platform="linux/arm64",
    )
    assert scan.findings == (Finding("X-1", "p", "", None, Severity.UNKNOWN, platform="linux/arm64"),)
    assert scan.created is None and scan.os is None
    with pytest.raises(TrivyError, match="schema 2"):
        trivy.parse_report({"SchemaVersion": 1})
    with pytest.raises(TrivyError, match="unexpected shape"):
        trivy.parse_report({"SchemaVersion": 2, "Results": [{"Vulnerabilities": [{}]}]})
