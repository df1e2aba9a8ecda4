"""Many tags of one repository over few digests, promoted at --jobs 4 through the real
registry and skopeo: every tag lands in approved/ signed, none fails on a half-written link.

distribution's filesystem driver rewrites a repository's blob link files in place (truncate,
then write) on every mount; a manifest put reading such a link meanwhile fails with
``DIGEST_INVALID; MANIFEST_BLOB_UNKNOWN``. While promotion mounted every blob again, this test
failed in 3 of 3 runs (5 of its 32 tags in one) (docs/architecture.md, "One writer per
repository").
"""

from __future__ import annotations

import json

from syncer.core.model import State
from tests.harness.images import alpine_files, build_image

TAGS_PER_DIGEST = 8
DIGESTS = 4
SHARED_LAYERS = 12


def test_many_tags_over_few_digests_promote_at_jobs_4(world):
    world.db.write(())
    base = [alpine_files(), *({f"base/{n}.txt": f"layer {n}\n"} for n in range(1, SHARED_LAYERS))]
    # Shared base layers and one layer of each digest's own: every promotion links the base
    # into approved/app while the other jobs put manifests that reference it.
    images = [build_image([*base, {f"app/build-{d}.txt": f"build {d}\n"}]) for d in range(DIGESTS)]
    digests = {}
    tags = []
    # Interleaved, so that the jobs hold different digests at once (tags of one digest take turns).
    for t in range(TAGS_PER_DIGEST):
        for d, image in enumerate(images):
            tag = f"1.{t}.{d}"
            digests[tag] = world.push(f"library/app:{tag}", image)
            tags.append(tag)
    world.images(f"""
        images:
          - source: app
            tags: {json.dumps(tags)}
    """)
    proc = world.run("--jobs", "4")

    states = {tag: world.record("app", tag).state for tag in tags}
    assert all(s is State.PROMOTED for s in states.values()), (states, proc.stdout, proc.stderr)
    for tag in tags:
        assert world.digest_at(world.target, "approved/app", tag) == digests[tag]
    for tag in tags[-DIGESTS:]:  # one tag of each digest
        verify = world.syncer("verify", f"{world.target.host}/approved/app:{tag}")
        assert verify.returncode == 0, verify.stdout + verify.stderr
    again = world.run("--jobs", "4")
    assert "Nothing changed" in again.stdout
