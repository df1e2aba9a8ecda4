"""What the pages explain, through a real run (real registry, skopeo, Trivy) and rendered with
cmark-gfm: advisories linked with their titles, excepted and uncounted findings marked, the
signatures of the digest they belong to, and the index's hold reasons and links."""

from __future__ import annotations

from syncer.core.model import State
from tests.harness import gfm
from tests.harness.images import build_image, debian_files
from tests.harness.trivydb import Advisory

CLEAN = (("base-files", "12.4+deb12u8", "base-files"), ("libssl3", "3.0.15-1", "openssl"))
VULNERABLE = (
    ("base-files", "12.4+deb12u8", "base-files"),
    ("libssl3", "3.0.11-1", "openssl"),
    ("libexpat1", "2.5.0-1", "expat"),
    ("zlib1g", "1.2.13", "zlib"),
)
ADVISORIES = (
    Advisory("CVE-2099-3001", "debian 12", "openssl", "CRITICAL", "3.0.15-1", title="openssl: planted"),
    Advisory("CVE-2099-3002", "debian 12", "expat", "HIGH", "2.5.1-1", title="expat: excepted"),
    Advisory("CVE-2099-3003", "debian 12", "zlib", "HIGH", None, title="zlib: no fix yet"),
)


def test_pages_explain_findings_signatures_and_holds(world):
    world.db.write(ADVISORIES)
    approved = world.push("library/nginx:1.27.3", build_image(debian_files(CLEAN, point_release="12.1")))
    world.images("""
        images:
          - source: nginx
            tags: ["1.27.3"]
    """)
    world.write(
        "exceptions/expat.yaml",
        """
        exceptions:
          - vulnerability: CVE-2099-3002
            images: ["nginx"]
            expires: 2099-01-31
            reason: "expat is not reachable"
    """,
    )
    world.run()
    # The tag moves upstream to a vulnerable digest: held, while approved/ keeps the old one.
    moved = world.push("library/nginx:1.27.3", build_image(debian_files(VULNERABLE, point_release="12.2")))
    world.run()
    rec = world.record("nginx", "1.27.3")
    assert rec.state is State.HELD and rec.digest == moved and rec.promoted_digest == approved
    by_id = {f.id: f for f in rec.scan.findings}
    # Trivy's own primary URL is recorded with each finding.
    assert by_id["CVE-2099-3001"].url == "https://avd.aquasec.com/nvd/cve-2099-3001", by_id

    image_md = (world.reports / "images" / "nginx.md").read_text()
    page = gfm.read(image_md)
    links = {a.get("href") for a in page.tags("a")}
    assert {f"https://avd.aquasec.com/nvd/cve-2099-300{i}" for i in (1, 2, 3)} <= links, links
    blocks = page.blocks
    assert "CVE-2099-3001 openssl: planted" in blocks
    assert blocks[blocks.index("CVE-2099-3002 expat: excepted") + 4] == (
        "excepted until 2099-01-31 (catalog/exceptions/expat.yaml:2): expat is not reachable"
    )
    assert blocks[blocks.index("CVE-2099-3003 zlib: no fix yet") + 4] == (
        "not counted: no fix yet (ignore_unfixed)"
    )
    assert blocks[blocks.index("CVE-2099-3001 openssl: planted") + 4] == "counted"
    assert "Counted by policy default: 1 critical (found: 1 critical, 2 high)" in blocks
    short_approved = approved.split(":")[1][:12]
    assert (
        f"Signed by: nobody, this digest is not in approved/; the approved digest "
        f"{short_approved} is signed by ci"
    ) in blocks
    assert f"ci, of the approved digest {short_approved}" in blocks  # the tag table's cell
    assert "2 (0)" in blocks  # high: two found, none counted

    index_md = (world.reports / "README.md").read_text()
    index = gfm.read(index_md)
    hrefs = [a.get("href") for a in index.tags("a")]
    assert "runs/" in hrefs and "images/nginx.md#tag-1-27-3" in hrefs
    assert {"id": "tag-1-27-3"} in page.tags("a"), "the index's link lands on the tag's section"
    # The index is made from the ledger's index, which keeps the first reason: the page has all.
    assert len(rec.reasons) == 2
    assert f"nginx 1.27.3 — held: {rec.reasons[0]} (and 1 more reason on its page)" in index.blocks
    assert all(reason in blocks for reason in rec.reasons)
    assert index.tags("h2") and not index.tags("strong")
