"""A scan analyses the bytes it is about: layers whose config lies about their diff_ids are
not scanned, nor promoted. End to end through a real registry, skopeo and Trivy."""

from __future__ import annotations

import gzip
import hashlib
import json

from syncer.core.model import State
from tests.harness.images import build_image, debian_files
from tests.harness.trivydb import Advisory

CLEAN_DEBIAN = (("base-files", "12.4+deb12u8", "base-files"), ("libssl3", "3.0.15-1", "openssl"))
VULNERABLE_DEBIAN = (("base-files", "12.4+deb12u8", "base-files"), ("libssl3", "3.0.11-1", "openssl"))
ADVISORIES = (
    Advisory("CVE-2099-1001", "debian 12", "openssl", "CRITICAL", "3.0.15-1", title="openssl: planted"),
)


def test_a_layer_claiming_a_clean_layers_diff_id_is_held_and_not_promoted(world):
    world.db.write(ADVISORIES)
    clean = build_image(debian_files(CLEAN_DEBIAN))
    clean_digest = world.push("library/nginx:1.27.3", clean)
    world.images("""
        images:
          - source: nginx
            tags: ["1.27.3"]
          - source: control
            tags: ["1"]
    """)
    # The control: the vulnerable content with an honest config, which Trivy must find.
    control_files = {**debian_files(VULNERABLE_DEBIAN), "etc/control": "a layer of its own\n"}
    world.push("library/control:1", build_image(control_files))
    world.run()
    assert world.record("nginx", "1.27.3").state is State.PROMOTED
    control = world.record("control", "1")
    assert control.state is State.HELD
    assert any("CVE-2099-1001" in r for r in control.reasons), control.reasons

    # The tag moves upstream to an image whose vulnerable layer claims the clean layer's
    # diff_id: Trivy's layer cache (same repository, same scan slot) holds that diff_id as clean.
    claimed = json.loads(clean.config.data)["rootfs"]["diff_ids"]
    liar = build_image(debian_files(VULNERABLE_DEBIAN), diff_ids=claimed)
    liar_digest = world.push("library/nginx:1.27.3", liar)
    world.run()

    rec = world.record("nginx", "1.27.3")
    assert rec.digest == liar_digest
    assert rec.state is State.HELD, (rec.state, rec.reasons, rec.scan)
    reason = " ".join(rec.reasons)
    actual = "sha256:" + hashlib.sha256(gzip.decompress(liar.layers[0].data)).hexdigest()
    for needed in (liar.layers[0].digest, claimed[0], actual, "not scanned"):
        assert needed in reason, reason
    assert rec.scan is None, "nothing was scanned, so no scan may be recorded"
    assert rec.events[-1].event == "held"
    assert world.digest_at(world.target, "approved/nginx", "1.27.3") == clean_digest
    assert rec.promoted_digest == clean_digest

    # The verdict is about content, which a digest fixes: the next run says the same from the
    # verified-layer cache, downloads no layer again, and writes nothing.
    layer_gets = world.target.count("GET", f"/blobs/{liar.layers[0].digest}")
    before = world.tree()
    again = world.run()
    assert world.tree() == before, again.stderr
    assert world.target.count("GET", f"/blobs/{liar.layers[0].digest}") == layer_gets
