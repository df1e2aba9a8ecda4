"""`syncer plan` through the real CLI: what changed upstream, as Markdown and JSON, asked with
tag listings and HEAD requests only, without target credentials, writing nothing."""

from __future__ import annotations

import json
import re

import requests

from syncer.core.model import State
from tests.harness.images import build_image, debian_files
from tests.harness.trivydb import Advisory
from tests.harness.world import World

PACKAGES = (("base-files", "12.4+deb12u8", "base-files"), ("libssl3", "3.0.15-1", "openssl"))


def image(release: str):
    """A clean Debian image; ``release`` makes its digest distinct."""
    return build_image(debian_files(PACKAGES, point_release=release))


def target_needs_credentials(world: World) -> None:
    """The target's auth block names variables; only `run` is given them (the target, which
    has no auth of its own, ignores the values)."""
    world.write_settings(target_extra="auth: {username_env: TARGET_USERNAME, password_env: TARGET_PASSWORD}")


def plan(world: World, *args: str, expect: int = 0):
    proc = world.syncer("plan", *args)
    assert proc.returncode == expect, (
        f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    assert "Traceback" not in proc.stderr
    return proc


def section(markdown: str, title: str) -> list[str]:
    """The table rows (without header) of the ``## title…`` section, [] when absent."""
    match = re.search(
        rf"^## {re.escape(title)}[^\n]*\n\n(?:\|[^\n]*\n){{2}}((?:\|[^\n]*\n)*)", markdown, re.MULTILINE
    )
    return match.group(1).splitlines() if match else []


def short(digest: str) -> str:
    return digest.split(":", 1)[1][:12]


def test_plan_sections_json_and_read_only(tmp_path, registry_factory, trivy_db):
    # A Hub stand-in that allows deletes, so that a tag can vanish upstream.
    world = World(
        root=tmp_path, hub=registry_factory(delete=True), target=registry_factory(delete=True), db=trivy_db
    )
    world.db.write(())
    target_needs_credentials(world)
    world.env.update(TARGET_USERNAME="syncer", TARGET_PASSWORD="unused-by-the-test-target")
    alpine = world.push("library/alpine:3.20", image("12.1"))
    redis_old = world.push("library/redis:7.4", image("12.2"))
    kept = world.push("library/nginx:1.27.1", image("12.3"))
    gone = world.push("library/nginx:1.27.2", image("12.4"))
    world.images(r"""
        images:
          - source: alpine
            tags: ["3.20"]
          - source: redis
            tags: ["7.4"]
          - source: nginx
            match: '^1\.27\.\d+$'
    """)

    first = plan(world).stdout
    assert first.splitlines()[2] == "4 new, 0 moved, 0 unchanged, 0 vanished."
    assert section(first, "New tags") == [
        f"| alpine | `3.20` | `{short(alpine)}` |",
        f"| nginx | `1.27.1` | `{short(kept)}` |",
        f"| nginx | `1.27.2` | `{short(gone)}` |",
        f"| redis | `7.4` | `{short(redis_old)}` |",
    ]
    world.run()

    # Upstream changes: a new tag, a moved tag, a vanished tag; alpine and nginx:1.27.1 stay.
    new = world.push("library/nginx:1.27.3", image("12.5"))
    redis_new = world.push("library/redis:7.4", image("12.6"))
    resp = requests.delete(f"{world.hub.url}/v2/library/nginx/manifests/{gone}", timeout=10)
    assert resp.status_code == 202, resp.text
    del world.env["TARGET_USERNAME"], world.env["TARGET_PASSWORD"]
    before = world.tree()
    upstream_gets = world.hub.count("GET", "/manifests/")
    target_requests = len(world.target.requests())

    markdown = plan(world).stdout
    doc = json.loads(plan(world, "--json").stdout)

    assert markdown.splitlines()[2] == "1 new, 1 moved, 2 unchanged, 1 vanished."
    assert section(markdown, "New tags") == [f"| nginx | `1.27.3` | `{short(new)}` |"]
    assert section(markdown, "Moved tags") == [
        f"| redis | `7.4` | `{short(redis_old)}` | `{short(redis_new)}` |"
    ]
    assert section(markdown, "Unchanged") == [
        f"| alpine | `3.20` | promoted | `{short(alpine)}` |",
        f"| nginx | `1.27.1` | promoted | `{short(kept)}` |",
    ]
    assert section(markdown, "Vanished upstream") == [f"| nginx | `1.27.2` | promoted | `{short(gone)}` |"]
    assert doc["errors"] == [] and doc["missing"] == []
    assert [(t["name"], t["tag"], t["change"], t["digest"], t["recorded"]) for t in doc["tags"]] == [
        ("alpine", "3.20", "unchanged", alpine, alpine),
        ("nginx", "1.27.1", "unchanged", kept, kept),
        ("nginx", "1.27.2", "vanished", None, gone),
        ("nginx", "1.27.3", "new", new, None),
        ("redis", "7.4", "moved", redis_new, redis_old),
    ]

    assert world.hub.count("GET", "/manifests/") == upstream_gets, "plan must never pull a manifest"
    assert world.hub.count("HEAD", "/manifests/") > 0
    assert len(world.target.requests()) == target_requests, "plan has no business with the target"
    assert world.tree() == before, "plan writes nothing"
    assert world.record("redis", "7.4").state is State.PROMOTED

    # The same plan is what `run --dry-run` shows, and it writes nothing either.
    dry = world.syncer("run", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout == markdown
    assert world.tree() == before

    # Control: the target's credentials really are required, by a run.
    real = world.syncer("run")
    assert real.returncode == 2 and "TARGET_USERNAME (target.auth.username_env) is not set" in real.stderr, (
        real.stderr
    )


def test_plan_lists_rescans_when_the_database_is_newer(world):
    world.db.write(())
    world.push("library/alpine:3.20", image("12.1"))
    world.images("""
        images:
          - source: alpine
            tags: ["3.20"]
    """)
    world.run()
    assert section(plan(world).stdout, "Re-scans") == []
    scanned_with = world.record("alpine", "3.20").scan.db_updated_at

    world.db.write(())  # one day newer
    markdown = plan(world).stdout
    assert section(markdown, "Re-scans") == [f"| alpine | `3.20` | promoted | {scanned_with} |"]
    assert section(markdown, "Unchanged") == []
    assert json.loads(plan(world, "--json").stdout)["tags"][0]["rescan"] is True


def test_plan_only_an_unknown_name_is_a_usage_error(world):
    world.images("""
        images:
          - source: alpine
            tags: ["3.20"]
    """)
    proc = plan(world, "--only", "alpin", expect=2)
    assert "--only alpin: no such image" in proc.stderr, proc.stderr


def test_plan_without_any_upstream_credentials_asks_anonymously_but_run_needs_them(world):
    """Pull-request checks plan without secrets; a scheduled run must have them."""
    world.write_settings(source_extra="auth: {username_env: HUB_USERNAME, password_env: HUB_TOKEN}")
    world.push("library/nginx:1.27.3", image("12.7"))
    world.images("""
        images:
          - source: nginx
            tags: ["1.27.3"]
    """)
    proc = plan(world)
    assert "no credentials for docker.io are set; it was asked anonymously" in proc.stderr
    assert len(section(proc.stdout, "New tags")) == 1

    world.env["HUB_USERNAME"] = "hubuser"  # half a pair is a mistake, not anonymous access
    half = plan(world, expect=1)
    assert "environment variable HUB_TOKEN (sources.docker.io.auth.password_env) is not set" in half.stdout
    del world.env["HUB_USERNAME"]

    run = world.syncer("run")
    assert run.returncode == 1
    assert "HUB_USERNAME (sources.docker.io.auth.username_env) is not set" in run.stdout + run.stderr


def test_plan_with_a_backtracking_pattern_finishes_against_long_near_miss_tags(world):
    """'^(a+)+$' against a's followed by one other character backtracks exponentially under
    Python's re (30 a's: minutes); discovery matches with RE2, in time linear in the tag."""
    digest = world.push("library/app:" + "a" * 127, image("12.8"))
    manifest = requests.get(
        f"{world.hub.url}/v2/library/app/manifests/{digest}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        timeout=10,
    )
    manifest.raise_for_status()
    near_misses = ["a" * n + "-x" for n in range(30, 126, 5)]
    for tag in near_misses:
        put = requests.put(
            f"{world.hub.url}/v2/library/app/manifests/{tag}",
            data=manifest.content,
            headers={"Content-Type": manifest.headers["Content-Type"]},
            timeout=10,
        )
        assert put.status_code == 201, put.text
    assert len(world.tags(world.hub, "library/app")) == len(near_misses) + 1
    world.images("""
        images:
          - source: app
            match: '^(a+)+$'
    """)
    proc = world.syncer("plan", timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert section(proc.stdout, "New tags") == [f"| app | `{'a' * 127}` | `{short(digest)}` |"]


VULNERABLE = (("base-files", "12.4+deb12u8", "base-files"), ("libssl3", "3.0.11-1", "openssl"))
HIGH = Advisory("CVE-2099-2001", "debian 12", "openssl", "HIGH", "3.0.15-1", title="openssl: high")


def test_plan_predicts_what_a_catalog_change_does_to_recorded_tags(world):
    """Each kind of decision a pull request can cause, predicted from the records' scans and
    then done by the next run exactly as predicted: held → promoted (an exception moves),
    promoted → flagged and → demoted (the exception no longer covers them), failed → held (a
    policy now wants a manual approval)."""
    world.db.write((HIGH,))
    for name, release in (("web", "12.1"), ("api", "12.2"), ("cache", "12.3")):
        world.push(f"library/{name}:1.0", build_image(debian_files(VULNERABLE, point_release=release)))
    world.push("library/late:1.0", image("12.4"))
    world.policy(
        "demoting",
        """
        vulnerabilities:
          max: {critical: 0, high: 0}
        signers: [ci]
        on_regression: demote
    """,
    )
    world.policy(
        "gated",
        """
        vulnerabilities:
          max: {critical: 0, high: 0}
        signers: [ci]
    """,
    )
    world.images("""
        images:
          - source: web
            tags: ["1.0"]
          - source: api
            tags: ["1.0"]
            policy: demoting
          - source: cache
            tags: ["1.0"]
          - source: late
            tags: ["1.0"]
            policy: gated
    """)
    world.write(
        "exceptions/openssl.yaml",
        """
        exceptions:
          - vulnerability: CVE-2099-2001
            images: ["web", "api"]
            expires: 2099-01-31
            reason: "not reachable"
    """,
    )
    world.run("--only", "web", "--only", "api", "--only", "cache")
    world.env["SYNCER_SIGNING_KEY"] = ""  # late is scanned, then cannot be signed: failed
    world.run("--only", "late", expect=1)
    del world.env["SYNCER_SIGNING_KEY"]
    assert {n: world.record(n, "1.0").state for n in ("web", "api", "cache", "late")} == {
        "web": State.PROMOTED,
        "api": State.PROMOTED,
        "cache": State.HELD,
        "late": State.FAILED,
    }

    # The pull request: the exception moves from web and api to cache; gated wants approvals.
    world.write(
        "exceptions/openssl.yaml",
        """
        exceptions:
          - vulnerability: CVE-2099-2001
            images: ["cache"]
            expires: 2099-01-31
            reason: "not reachable"
    """,
    )
    world.policy(
        "gated",
        """
        vulnerabilities:
          max: {critical: 0, high: 0}
        approval: manual
        signers: [ci]
    """,
    )
    before = world.tree()
    markdown = plan(world).stdout
    doc = json.loads(plan(world, "--json").stdout)
    assert world.tree() == before, "plan writes nothing"

    assert markdown.splitlines()[2] == (
        "0 new, 0 moved, 4 unchanged, 0 vanished, 1 to be demoted, "
        "1 to be flagged, 1 to be held, 1 to be promoted."
    )
    rows = section(markdown, "Decisions the next run changes")
    high = "1 high vulnerability (max 0): CVE-2099-2001 (libssl3 3.0.11-1, fixed in 3.0.15-1)"
    late = world.record("late", "1.0").digest
    assert rows == [
        f"| api | `1.0` | promoted | demoted | {high} |",
        "| cache | `1.0` | held | promoted | exception for CVE-2099-2001 applied (expires "
        "2099-01-31): not reachable |",
        f"| late | `1.0` | failed | held | manual approval required: add {{image: late, digest: "
        f"{late}}} to catalog/approvals/ |",
        f"| web | `1.0` | promoted | flagged | {high} |",
    ], markdown
    assert section(markdown, "Unchanged") == []
    assert [(p["name"], p["state"], p["next"]) for p in doc["predicted"]] == [
        ("api", "promoted", "demoted"),
        ("cache", "held", "promoted"),
        ("late", "failed", "held"),
        ("web", "promoted", "flagged"),
    ]

    # The next run does what the plan said, and then there is nothing left to predict.
    world.run()
    assert {p["name"]: world.record(p["name"], "1.0").state.value for p in doc["predicted"]} == {
        p["name"]: p["next"] for p in doc["predicted"]
    }
    assert json.loads(plan(world, "--json").stdout)["predicted"] == []


def test_plan_names_an_explicit_tag_missing_upstream_at_its_line(world):
    world.push("library/alpine:3.20", image("12.1"))
    world.images("""
        images:
          - source: alpine
            tags:
              - "3.20"
              - "9.99"
    """)
    world.env["GITHUB_ACTIONS"] = "true"
    proc = plan(world, expect=1)
    where = "catalog/images/test.yaml:5"
    assert (
        f"{where}: error: tag '9.99' of alpine is not in docker.io/library/alpine upstream; "
        "fix the tag or remove it from 'tags'"
    ) in proc.stderr, proc.stderr
    assert "::error file=catalog/images/test.yaml,line=5::tag '9.99' of alpine" in proc.stderr
    assert f"- alpine: `9.99` ({where})" in proc.stdout
