"""Hostile upstream text through the real pipeline: a multi-platform image whose package name,
OS release and platform label carry Markdown, links, HTML and mentions, with Debian versions
holding `~`, and whose planted advisory has a hostile title. Real skopeo and Trivy carry it
into the records; every page and the run summary, rendered by cmark-gfm, show it as text."""

from __future__ import annotations

import dataclasses

from syncer.core.model import State
from syncer.demo.images import Platform
from tests.harness import gfm
from tests.harness.images import build_image, debian_files, index_of
from tests.harness.trivydb import Advisory

TITLE = "[Approve now](https://evil.example/approve) <img src=x onerror=alert(1)> @acme/security"
# A dpkg package name has no spaces; the rest is anyone's to choose.
PACKAGE = "libssl*3*[approve](https://evil.example/a)<img/src=x>_x_"
OS_RELEASE = "12.8 <script>alert(1)</script> @acme/security ~struck~ ![p](https://evil.example/p)"
VARIANT = "v8[Approve](https://evil.example)@octocat"
INSTALLED, FIXED = "3.0.15-1~deb12u1", "3.0.15-1~deb12u2"


def test_hostile_findings_platforms_and_os_names_render_as_text(world):
    world.db.write((Advisory("CVE-2099-2001", "debian 12", "openssl", "HIGH", FIXED, title=TITLE),))
    packages = (
        ("base-files", "12.4+deb12u8", "base-files"),
        ("libssl3", INSTALLED, "openssl"),
        (PACKAGE, INSTALLED, "openssl"),
    )
    amd = build_image(debian_files(packages, point_release=OS_RELEASE), platform="linux/amd64")
    arm = build_image(debian_files(packages, arch="arm64"), platform="linux/arm64")
    # The label comes from the index, which upstream writes: Platform.parse would refuse it.
    arm = dataclasses.replace(arm, platform=Platform("linux", "arm64", VARIANT))
    world.push("library/nginx:1.27.3", index_of([amd, arm]))
    world.images("""
        images:
          - source: nginx
            tags: ["1.27.3"]
    """)
    step_summary = world.root / "step-summary.md"
    world.env["GITHUB_STEP_SUMMARY"] = str(step_summary)
    proc = world.run()

    rec = world.record("nginx", "1.27.3")
    assert rec.state is State.HELD
    # The hostile text did arrive: Trivy reported it, the record keeps it as it is.
    assert {f.title for f in rec.scan.findings} == {TITLE}
    assert {f.package for f in rec.scan.findings} == {"libssl3", PACKAGE}
    label = f"linux/arm64/{VARIANT}"
    assert sorted(rec.scan.platforms) == ["linux/amd64", label]
    assert f"debian {OS_RELEASE}" in {c.os for c in rec.scan.covered}
    assert rec.reasons[0].count("~") == 4, rec.reasons  # single tildes that would pair up

    run_page = next((world.reports / "runs").rglob("*.md"))
    documents = {
        "index": (world.reports / "README.md").read_text(),
        "image page": (world.reports / "images" / "nginx.md").read_text(),
        "run page": run_page.read_text(),
        "run summary": proc.stdout.split("\nReports:")[0],
        "step summary": step_summary.read_text(),
    }
    assert documents["run summary"] == documents["step summary"]
    for where, doc in documents.items():
        page = gfm.read(doc)
        for name in ("img", "del", "em", "script"):
            assert not page.tags(name), f"{where}: <{name}>:\n{doc}"
        ours = sum(doc.count(f"**{label}:**") for label in ("Policy", "History", "Errors"))
        assert len(page.tags("strong")) == ours, f"{where}:\n{doc}"
        assert all("evil" not in (a.get("href") or "") for a in page.tags("a")), f"{where}:\n{doc}"
        assert not page.mentions(), f"{where}: {page.mentions()} would ping"

    image_page = gfm.read(documents["image page"])
    blocks = image_page.blocks
    assert rec.reasons[0] in blocks  # the policy's list item reads exactly as recorded
    assert blocks.count(PACKAGE) == 2 and blocks.count(label) == 2  # table cells, per platform
    assert blocks.count(INSTALLED) == 4 and blocks.count(FIXED) == 4
    assert any(
        b.startswith("linux/amd64 ") and b.endswith(f": debian {OS_RELEASE} (debian)") for b in blocks
    ), blocks
    held = next(e for e in rec.events if e.event == "held")
    assert held.detail in blocks  # the history cell
    summary = gfm.read(documents["run summary"])
    assert f"held: {rec.reasons[0]}" in summary.blocks
