"""Mirroring end to end: upstream discovery, `syncer plan` and copies into quarantine, through
a real registry playing Docker Hub (reached via ``sources.docker.io.endpoint``), a real trusted
registry, real skopeo and real Trivy with a generated database."""

from __future__ import annotations

import base64
import json
import os
import pwd
import re
import secrets
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import requests

from syncer.core.model import Record, State
from tests.harness.faultproxy import FaultProxy
from tests.harness.images import alpine_files, build_image, build_index, debian_files, write_layout
from tests.harness.trivydb import Advisory
from tests.harness.world import World

CLEAN = (("base-files", "12.4+deb12u8", "base-files"), ("libssl3", "3.0.15-1", "openssl"))
VULNERABLE = (("base-files", "12.4+deb12u8", "base-files"), ("libssl3", "3.0.11-1", "openssl"))
CLEAN_ALPINE = (("musl", "1.2.5-r0", "musl"), ("busybox", "1.36.1-r29", "busybox"))
CRITICAL = Advisory(
    "CVE-2099-2001", "debian 12", "openssl", "CRITICAL", "3.0.15-1", title="openssl: planted critical"
)
LOW = Advisory(
    "CVE-2099-2002", "debian 12", "base-files", "LOW", "12.4+deb12u99", title="base-files: planted low"
)


def clean(release: str = "12.8"):
    """A Debian image that passes the default policy; ``release`` makes its digest distinct."""
    return build_image(debian_files(CLEAN, point_release=release))


def vulnerable(release: str = "12.8"):
    return build_image(debian_files(VULNERABLE, point_release=release))


def make_world(tmp_path, registry_factory, trivy_db, **hub) -> World:
    """A world whose Hub stand-in is made with ``registry_factory(**hub)`` (auth, TLS, deletes)."""
    world = World(
        root=tmp_path, hub=registry_factory(**hub), target=registry_factory(delete=True), db=trivy_db
    )
    world.db.write((CRITICAL, LOW))
    return world


def write_settings(
    world: World, *, endpoint: str | None = None, source: tuple[str, ...] = (), sources: tuple[str, ...] = ()
) -> None:
    """settings.yaml with Hub at ``endpoint`` (default: the world's hub over plain HTTP);
    ``source`` are more lines under sources.docker.io, ``sources`` more lines under sources."""
    hub = [f"    endpoint: {endpoint or world.hub.host}"]
    if not any(line.startswith("tls_verify") for line in source):
        hub.append("    tls_verify: false")
    lines = [
        "target:",
        f"  registry: {world.target.host}",
        "  quarantine: quarantine",
        "  approved: approved",
        "  tls_verify: false",
        "sources:",
        "  docker.io:",
        *hub,
        *(f"    {line}" for line in source),
        *(f"  {line}" for line in sources),
        "signing:",
        "  signer: ci",
        "  key_env: SYNCER_SIGNING_KEY",
        "  passphrase_env: SYNCER_SIGNING_PASSPHRASE",
        "defaults:",
        "  policy: default",
        'content_admins: ["@acme/security"]',
    ]
    (world.catalog / "settings.yaml").write_text("\n".join(lines) + "\n")


def plan(world: World, *args: str, expect: int = 0):
    proc = world.syncer("plan", *args)
    assert proc.returncode == expect, (
        f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    return proc


def plan_json(world: World, *args: str, expect: int = 0) -> dict:
    return json.loads(plan(world, "--json", *args, expect=expect).stdout)


def changes(doc: dict) -> dict[str, str]:
    return {f"{t['name']}:{t['tag']}": t["change"] for t in doc["tags"]}


def delete_tag(registry, repository: str, digest: str) -> None:
    """Deletes the manifest (and so every tag on it) from a delete-enabled registry."""
    resp = requests.delete(f"{registry.url}/v2/{repository}/manifests/{digest}", timeout=10)
    assert resp.status_code == 202, resp.text


def image_tags(world: World, repository: str) -> list[str]:
    """Tags of the target's ``repository`` without signature tags (``sha256-….sig``)."""
    return [t for t in world.tags(world.target, repository) if not t.endswith(".sig")]


def events(rec: Record) -> list[str]:
    return [e.event for e in rec.events]


# --- reaching upstream -----------------------------------------------------------------------


REAL_SKOPEO = next((p for p in ("/usr/bin/skopeo", "/usr/local/bin/skopeo") if os.path.exists(p)), "skopeo")


def skopeo_spy(directory: Path, before: str = "") -> tuple[Path, Path]:
    """A ``skopeo`` that logs its argv, the modes of the auth files it is given and its
    environment, runs the shell code ``before``, then runs the real one. Returns (bin
    directory for PATH, log file)."""
    bindir, log = directory / "spybin", directory / "skopeo-spy.log"
    bindir.mkdir()
    spy = bindir / "skopeo"
    spy.write_text(f"""#!/bin/sh
{{
  echo "argv: $*"
  prev=
  for arg in "$@"; do
    case "$prev" in
      --src-authfile|--dest-authfile|--authfile) echo "authfile: $(stat -c %a "$arg") $arg";;
    esac
    prev="$arg"
  done
  echo "env:"; env
}} >> '{log}'
{before}
exec {REAL_SKOPEO} "$@"
""")
    spy.chmod(0o755)
    return bindir, log


@pytest.mark.docker
def test_hub_behind_basic_auth_and_the_password_appears_nowhere(tmp_path, registry_factory, trivy_db):
    password = f"hub-pw-{secrets.token_hex(12)}"
    world = make_world(tmp_path, registry_factory, trivy_db, htpasswd=("hubuser", password))
    write_settings(world, source=("auth: {username_env: HUB_USERNAME, password_env: HUB_TOKEN}",))
    world.env.update(HUB_USERNAME="hubuser", HUB_TOKEN=password)
    bindir, spy_log = skopeo_spy(tmp_path)
    world.env["PATH"] = f"{bindir}{os.pathsep}{os.environ['PATH']}"
    digest = world.push("library/nginx:1.27.3", clean())
    world.images("""
        images:
          - source: nginx
            tags: ["1.27.3"]
    """)

    planned = plan(world)
    assert "nginx" in planned.stdout and "1.27.3" in planned.stdout
    ran = world.run()
    rec = world.record("nginx", "1.27.3")
    assert rec.state is State.PROMOTED, ran.stderr
    assert world.digest_at(world.target, "quarantine/nginx", "1.27.3") == digest
    assert world.digest_at(world.target, "approved/nginx", "1.27.3") == digest
    assert rec.source == f"docker.io/library/nginx:1.27.3@{digest}", "upstream's name, not the endpoint"

    # The spy saw the copy from the authenticated Hub, with credentials in a private file.
    spied = spy_log.read_text()
    assert "argv: " in spied and f"docker://{world.hub.host}/library/nginx@{digest}" in spied
    modes = re.findall(r"^authfile: (\d+) ", spied, re.MULTILINE)
    assert modes and set(modes) == {"600"}, spied
    encoded = base64.b64encode(f"hubuser:{password}".encode()).decode()
    written = b"".join(world.tree().values()).decode()
    for text, where in (
        (planned.stdout + planned.stderr, "plan output"),
        (ran.stdout + ran.stderr, "run output"),
        (written, "reports and records"),
        (spied, "skopeo's argv and environment"),
    ):
        assert password not in text and encoded not in text, f"password leaked into {where}"


def test_wrong_hub_password_fails_that_registry_only_with_a_clear_error(tmp_path, registry_factory, trivy_db):
    password = f"hub-pw-{secrets.token_hex(12)}"
    world = make_world(tmp_path, registry_factory, trivy_db, htpasswd=("hubuser", password))
    quay = registry_factory()  # another upstream, no auth: its entries must not suffer
    write_settings(
        world,
        source=("auth: {username_env: HUB_USERNAME, password_env: HUB_TOKEN}",),
        sources=("quay.io:", f"  endpoint: {quay.host}", "  tls_verify: false"),
    )
    wrong = f"wrong-{secrets.token_hex(8)}"
    world.env.update(HUB_USERNAME="hubuser", HUB_TOKEN=wrong)
    world.push("library/nginx:1.27.3", clean())
    other = world.push("acme/tool:2.0", clean("12.7"), registry=quay)
    world.images("""
        images:
          - source: nginx
            tags: ["1.27.3"]
          - source: quay.io/acme/tool
            tags: ["2.0"]
    """)

    del world.env["HUB_TOKEN"]
    unset = plan(world, expect=1).stdout
    assert "environment variable HUB_TOKEN (sources.docker.io.auth.password_env) is not set" in unset, unset
    world.env["HUB_TOKEN"] = wrong

    planned = plan(world, expect=1)
    ran = world.run(expect=1)
    for proc in (planned, ran):
        out = proc.stdout + proc.stderr
        assert "Traceback" not in out
        assert wrong not in out and password not in out
        # Names the registry, where it is reached, and which settings hold the credentials.
        assert re.search(rf"docker\.io \(via {re.escape(world.hub.host)}\) refused access", out), out
        assert "HUB_USERNAME/HUB_TOKEN (sources.docker.io.auth)" in out, out
    assert world.record("acme/tool", "2.0").state is State.PROMOTED
    assert world.digest_at(world.target, "approved/acme/tool", "2.0") == other
    assert not (world.reports / "records" / "nginx").exists()


@pytest.mark.docker
def test_hub_behind_tls_with_a_private_ca(tmp_path, registry_factory, trivy_db):
    world = make_world(tmp_path, registry_factory, trivy_db, tls=True)
    write_settings(world, source=("tls_verify: true", f"ca_dir: {world.hub.cert_dir}"))
    digest = world.push("library/nginx:1.27.3", clean())
    world.images("""
        images:
          - source: nginx
            tags: ["1.27.3"]
    """)
    assert changes(plan_json(world)) == {"nginx:1.27.3": "new"}
    world.run()
    assert world.record("nginx", "1.27.3").state is State.PROMOTED
    assert world.digest_at(world.target, "approved/nginx", "1.27.3") == digest

    # Without the CA the same registry is refused, with advice instead of a stack trace.
    write_settings(world, source=("tls_verify: true",))
    proc = plan(world, expect=1)
    assert "Traceback" not in proc.stderr
    assert "could not be verified" in proc.stdout, proc.stdout


# --- what is copied ----------------------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.parametrize("media_types", ["oci", "docker"])
def test_multi_platform_image_keeps_its_index_digest_and_every_platform_is_scanned(world, media_types):
    world.db.write((CRITICAL, LOW))  # LOW affects both platforms and does not block
    index = build_index(
        {"linux/amd64": debian_files(CLEAN), "linux/arm64": debian_files(CLEAN, arch="arm64")},
        media_types=media_types,
    )
    digest = world.push("library/nginx:1.27.3", index)
    world.images("""
        images:
          - source: nginx
            tags: ["1.27.3"]
    """)
    world.run()

    rec = world.record("nginx", "1.27.3")
    assert rec.state is State.PROMOTED, rec.reasons
    assert rec.digest == digest and rec.scan.digest == digest
    assert world.digest_at(world.target, "quarantine/nginx", "1.27.3") == digest
    assert world.digest_at(world.target, "approved/nginx", "1.27.3") == digest
    for image in index.images:  # the platform manifests came along, unchanged
        assert world.digest_at(world.target, "approved/nginx", image.digest) == image.digest
    assert rec.scan.platforms == ("linux/amd64", "linux/arm64")
    assert {(f.id, f.platform) for f in rec.scan.findings} == {
        ("CVE-2099-2002", "linux/amd64"),
        ("CVE-2099-2002", "linux/arm64"),
    }
    # Format 2: what the scan covered is in the digest's stored result, which the record names.
    saved = (world.reports / "scans" / "nginx" / (digest.replace(":", "-") + ".yaml")).read_text()
    assert re.search(r"platforms: \[linux/amd64, linux/arm64\]", saved), saved


# --- what changed upstream ---------------------------------------------------------------------


def test_new_upstream_tag_matching_is_picked_up_on_the_next_run(world):
    world.db.write((CRITICAL, LOW))
    digests = {
        tag: world.push(f"library/nginx:{tag}", clean(release))
        for tag, release in (
            ("1.26.0", "12.1"),
            ("1.27.0", "12.2"),
            ("1.27.1-rc1", "12.3"),
            ("latest", "12.2"),
        )
    }
    world.images(r"""
        images:
          - source: nginx
            match: '^1\.\d+\.\d+.*$'
            exclude: ['-rc']
            newest: 2
    """)
    world.run()
    assert world.tags(world.target, "quarantine/nginx") == ["1.26.0", "1.27.0"]

    for tag, release in (("1.27.1", "12.4"), ("1.28.0-rc1", "12.5")):
        digests[tag] = world.push(f"library/nginx:{tag}", clean(release))
    assert changes(plan_json(world)) == {"nginx:1.27.0": "unchanged", "nginx:1.27.1": "new"}
    world.run()
    # newest: 2 now selects 1.27.0 and 1.27.1; 1.26.0 keeps its record and its copies.
    assert world.tags(world.target, "quarantine/nginx") == ["1.26.0", "1.27.0", "1.27.1"]
    assert image_tags(world, "approved/nginx") == ["1.26.0", "1.27.0", "1.27.1"]
    rec = world.record("nginx", "1.27.1")
    assert rec.state is State.PROMOTED and rec.digest == digests["1.27.1"]
    assert world.digest_at(world.target, "approved/nginx", "1.27.1") == digests["1.27.1"]
    assert sorted(p.name for p in (world.reports / "records" / "nginx").iterdir()) == [
        "1.26.0.yaml",
        "1.27.0.yaml",
        "1.27.1.yaml",
    ]


def test_moved_tag_goes_through_the_pipeline_and_approved_keeps_the_last_approved_digest(world):
    world.db.write((CRITICAL, LOW))
    old = world.push("library/nginx:1.27.3", clean())
    world.images("""
        images:
          - source: nginx
            tags: ["1.27.3"]
    """)
    world.run()
    assert world.record("nginx", "1.27.3").state is State.PROMOTED

    new = world.push("library/nginx:1.27.3", vulnerable())  # same tag, new digest, held
    doc = plan_json(world)
    assert [(t["change"], t["recorded"], t["digest"]) for t in doc["tags"]] == [("moved", old, new)]
    world.run()
    rec = world.record("nginx", "1.27.3")
    assert rec.state is State.HELD and any("CVE-2099-2001" in r for r in rec.reasons), rec.reasons
    assert rec.digest == new and rec.scan.digest == new and rec.source.endswith(f"@{new}")
    assert rec.promoted_digest == old
    assert world.digest_at(world.target, "quarantine/nginx", "1.27.3") == new
    assert world.digest_at(world.target, "approved/nginx", "1.27.3") == old
    moved = [e for e in rec.events if e.event == "moved"]
    assert len(moved) == 1 and old in moved[0].detail and new in moved[0].detail
    assert events(rec)[-4:] == ["moved", "mirrored", "scanned", "held"]

    world.db.write((LOW,))  # the critical is withdrawn: the new digest passes and replaces the old
    world.run()
    rec = world.record("nginx", "1.27.3")
    assert rec.state is State.PROMOTED and rec.promoted_digest == new
    assert world.digest_at(world.target, "approved/nginx", "1.27.3") == new
    assert events(rec).count("mirrored") == 2, "the held digest is not copied again"


def test_vanished_tag_is_reported_by_plan_and_recorded_once(tmp_path, registry_factory, trivy_db):
    world = make_world(tmp_path, registry_factory, trivy_db, delete=True)
    world.push("library/nginx:1.27.0", clean("12.1"))
    gone = world.push("library/nginx:1.27.1", clean("12.2"))
    world.images(r"""
        images:
          - source: nginx
            match: '^1\.27\.\d+$'
    """)
    world.run()
    delete_tag(world.hub, "library/nginx", gone)

    assert changes(plan_json(world)) == {"nginx:1.27.0": "unchanged", "nginx:1.27.1": "vanished"}
    markdown = plan(world).stdout
    vanished = markdown.partition("## Vanished upstream")[2].partition("\n## ")[0]
    assert f"| nginx | `1.27.1` | promoted | `{gone.split(':')[1][:12]}` |" in vanished, markdown
    world.run()
    rec = world.record("nginx", "1.27.1")
    assert events(rec)[-1] == "vanished" and rec.state is State.PROMOTED
    assert world.digest_at(world.target, "approved/nginx", "1.27.1") == gone, "approved copies are kept"

    before = world.tree()
    again = world.run()
    assert world.tree() == before, "a vanished tag is recorded once, not on every run"
    assert "Nothing changed" in again.stdout


@pytest.mark.docker
def test_explicit_tag_missing_upstream_fails_only_that_tag(world):
    world.db.write((CRITICAL, LOW))
    alpine = world.push("library/alpine:3.20", build_image(alpine_files(CLEAN_ALPINE)))
    nginx = world.push("library/nginx:1.27.3", clean())
    world.images("""
        images:
          - source: alpine
            tags: ["3.20", "9.99"]
          - source: nginx
            tags: ["1.27.3"]
    """)
    doc = plan_json(world, expect=1)
    assert doc["missing"] == [{"name": "alpine", "tag": "9.99", "at": "catalog/images/test.yaml:3"}]
    assert changes(doc) == {"alpine:3.20": "new", "nginx:1.27.3": "new"}

    proc = world.run(expect=1)
    assert "alpine:9.99: error: tag not found upstream" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert world.digest_at(world.target, "approved/alpine", "3.20") == alpine
    assert world.digest_at(world.target, "approved/nginx", "1.27.3") == nginx
    assert not (world.reports / "records" / "alpine" / "9.99.yaml").exists()


def test_a_tag_moving_during_the_run_does_not_change_what_is_mirrored(world, tmp_path):
    world.db.write((CRITICAL, LOW))
    discovered = world.push("library/nginx:1.27.3", clean())
    sneaked = vulnerable()
    layout = write_layout(sneaked, tmp_path / "sneaked", "1.27.3")
    marker = tmp_path / "moved-once"
    # Between discovery (HEAD) and the copy, the tag moves upstream to other content.
    bindir, _ = skopeo_spy(
        tmp_path,
        before=f"""
case "$*" in *"docker://{world.hub.host}/library/nginx@"*)
  [ -e '{marker}' ] || {{ touch '{marker}'; {REAL_SKOPEO} --insecure-policy copy --quiet --all \
    --preserve-digests --dest-tls-verify=false 'oci:{layout}:1.27.3' \
    'docker://{world.hub.host}/library/nginx:1.27.3' >/dev/null; }};;
esac""",
    )
    world.env["PATH"] = f"{bindir}{os.pathsep}{os.environ['PATH']}"
    world.images("""
        images:
          - source: nginx
            tags: ["1.27.3"]
    """)
    world.run()
    assert marker.exists(), "the tag was moved while the run was under way"
    assert world.digest_at(world.hub, "library/nginx", "1.27.3") == sneaked.digest
    rec = world.record("nginx", "1.27.3")
    assert rec.state is State.PROMOTED and rec.digest == discovered
    assert world.digest_at(world.target, "quarantine/nginx", "1.27.3") == discovered
    assert world.digest_at(world.target, "approved/nginx", "1.27.3") == discovered

    # The next run sees the move and treats the new digest as new content.
    world.run()
    rec = world.record("nginx", "1.27.3")
    assert rec.digest == sneaked.digest and rec.state is State.HELD
    assert world.digest_at(world.target, "approved/nginx", "1.27.3") == discovered


# --- how it is copied --------------------------------------------------------------------------


def _comparable(rec: Record) -> dict:
    """A record without the times at which things happened."""
    doc = asdict(rec)
    for event in doc["events"]:
        event.pop("at")
    doc["scan"].pop("scanned_at")
    return doc


def test_parallel_jobs_give_the_same_records_as_one_job(world):
    world.db.write((CRITICAL, LOW))
    names = ("alpine", "nginx", "redis", "httpd", "postgres")
    for i, name in enumerate(names):
        image = vulnerable(f"12.{i}") if i % 2 else clean(f"12.{i}")
        world.push(f"library/{name}:1.0", image)
    world.images("images:\n" + "".join(f"  - source: {n}\n    tags: ['1.0']\n" for n in names))

    world.run("--jobs", "4")
    parallel = {n: _comparable(world.record(n, "1.0")) for n in names}
    world.reports = world.root / "reports-serial"
    world.reports.mkdir()
    world.run("--jobs", "1")
    serial = {n: _comparable(world.record(n, "1.0")) for n in names}
    assert parallel == serial
    assert [parallel[n]["state"] for n in names] == [State.PROMOTED, State.HELD] * 2 + [State.PROMOTED]


def test_low_hub_pull_budget_defers_copies_until_it_is_back(world):
    world.db.write((CRITICAL, LOW))
    digest = world.push("library/nginx:1.27.3", clean())
    world.images("""
        images:
          - source: nginx
            tags: ["1.27.3"]
    """)
    low = {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "5;w=21600"}
    with FaultProxy(world.hub.url, add_headers=low) as proxy:
        write_settings(world, endpoint=proxy.host, source=("min_remaining_pulls: 20",))
        doc = plan_json(world)
        assert [(t["tag"], t["deferred"]) for t in doc["tags"]] == [("1.27.3", True)]
        assert "## Deferred (upstream pull budget low)" in plan(world).stdout

        before = world.tree()
        proc = world.run("--json")
        doc = json.loads(proc.stdout)
        assert "nginx:1.27.3: deferred: upstream pull budget below min_remaining_pulls" in proc.stderr
        assert [(t["tag"], t["deferred"], t["failed"]) for t in doc["tags"]] == [("1.27.3", True, False)]
        assert doc["failures"] == 0
        assert world.hub.count("GET", "/manifests/") == 0, "a deferred copy pulls nothing"
        assert world.digest_at(world.target, "quarantine/nginx", "1.27.3") is None
        assert world.tree() == before
        summary = world.run().stdout
        assert "1 deferred: the upstream pull budget is below min_remaining_pulls" in summary
        assert "| nginx | `1.27.3` |" in summary

        proxy.add_headers = {**low, "ratelimit-remaining": "80;w=21600"}
        world.run()
    assert world.record("nginx", "1.27.3").state is State.PROMOTED
    assert world.digest_at(world.target, "approved/nginx", "1.27.3") == digest
    assert any(s.method == "GET" and "/manifests/" in s.uri for s in proxy.seen), (
        "the copy went through the proxy"
    )


# --- as a non-root CI runner ------------------------------------------------------------------

TEST_USER = "syncer-e2e"


@pytest.fixture
def runner_user():
    """(uid, gid) of a non-root user created for the test (removed afterwards)."""
    if os.geteuid() != 0:
        pytest.skip("creating a non-root user needs root; this test is for root-run CI")
    created = False
    try:
        entry = pwd.getpwnam(TEST_USER)
    except KeyError:
        done = subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                TEST_USER,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0 or shutil.which("setpriv") is None:
            pytest.skip(f"cannot create a user to run syncer as: {done.stderr.strip()}")
        created = True
        entry = pwd.getpwnam(TEST_USER)
    yield entry.pw_uid, entry.pw_gid
    if created:
        subprocess.run(["userdel", TEST_USER], capture_output=True, check=False)


def test_a_layer_shared_by_two_new_images_crosses_from_upstream_once_as_a_non_root_user(world, runner_user):
    base = debian_files(CLEAN)
    images = {name: build_image([base, {"etc/app": f"{name}\n" * 1000}]) for name in ("a", "b")}
    shared = images["a"].layers[0].digest
    assert shared == images["b"].layers[0].digest
    for name, image in images.items():
        world.push(f"library/{name}:1.0", image)
    world.images("""
        images:
          - source: docker.io/library/a
            tags: ["1.0"]
          - source: docker.io/library/b
            tags: ["1.0"]
    """)
    world.db.write(())  # nothing to find: both are promoted and replicated
    uid, gid = runner_user
    home, tmp = world.root / "home", world.root / "tmp"
    home.mkdir()
    tmp.mkdir()
    for tree in (world.root, world.db.cache_dir):
        for root, dirs, files in os.walk(tree):
            for path in (root, *(os.path.join(root, n) for n in dirs + files)):
                os.lchown(path, uid, gid)
    env = {**world.run_env(), "HOME": str(home), "TMPDIR": str(tmp), "USER": TEST_USER}
    env.pop("XDG_DATA_HOME", None)
    # The user's own uid and gid, no groups; CAP_DAC_READ_SEARCH only so that it can read
    # the Python and tools of a root-owned checkout (a 0700 /root on CI machines).
    argv = [
        "setpriv",
        f"--reuid={uid}",
        f"--regid={gid}",
        "--clear-groups",
        "--inh-caps=+dac_read_search",
        "--ambient-caps=+dac_read_search",
        sys.executable,
        "-m",
        "syncer",
        "run",
        "--catalog",
        str(world.catalog),
        "--reports",
        str(world.reports),
        "--skip-db-update",
        "--jobs",
        "2",
    ]
    proc = subprocess.run(
        argv, cwd=world.root, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in images:
        assert world.record(name, "1.0").state is State.PROMOTED
    # Both copies ran at once; the second mounted the layer the first brought.
    assert world.hub.count("GET", f"/blobs/{shared}") == 1
    assert world.target.count("POST", "/quarantine/") >= 2
    records = list(world.reports.rglob("*.yaml"))
    assert records and all(p.stat().st_uid == uid for p in records)  # written by the user
