"""The starting point of benchmarks/ledger_scale.py against the real tools: tags written
straight into a registry's storage (benchmarks/registry_storage.py) are served like pushed
ones, and the records benchmarks/ledger_records.py generates are what a real run records."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from benchmarks import _common as c
from benchmarks.ledger_records import BenchImage, PromotedTag, Scan, advisories, record_text
from benchmarks.registry_storage import Storage
from syncer.demo.trivydb import TrivyDB
from syncer.trail.ledger import Ledger
from tests.harness.registry import Registry

pytestmark = [pytest.mark.e2e]

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _images() -> list[BenchImage]:
    return [BenchImage.build(k, 4) for k in range(2)]


def _tags(storage: Storage, images: list[BenchImage]) -> dict[str, str]:
    """Three tags, two of them on one digest."""
    tags = {
        "1.2.0": images[0].image.digest,
        "1.10.0": images[0].image.digest,
        "2.0.0": images[1].image.digest,
    }
    for image in images:
        storage.image("library/seed", image.image)
    for tag, digest in tags.items():
        storage.tag("library/seed", tag, digest)
    return tags


def test_tags_written_into_storage_are_served(registry: Registry):
    images = _images()
    tags = _tags(Storage(registry.storage_dir), images)
    base = f"{registry.url}/v2/library/seed"
    with registry.session() as session:
        listed = session.get(f"{base}/tags/list", timeout=30)
        assert listed.status_code == 200
        assert sorted(listed.json()["tags"]) == sorted(tags)
        for tag, digest in tags.items():
            head = session.head(f"{base}/manifests/{tag}", headers={"Accept": MANIFEST}, timeout=30)
            assert (head.status_code, head.headers.get("Docker-Content-Digest")) == (200, digest)
        image = images[1].image
        got = session.get(f"{base}/manifests/{image.digest}", headers={"Accept": MANIFEST}, timeout=30)
        assert got.content == image.manifest.data
        for blob in (image.config, *image.layers):
            assert session.get(f"{base}/blobs/{blob.digest}", timeout=30).content == blob.data
        # A blob of the storage is served only in the repositories it is linked to, as pushed.
        other = requests.get(f"{registry.url}/v2/library/other/blobs/{image.config.digest}", timeout=30)
        assert other.status_code == 404


def test_generated_records_are_what_a_real_run_records(registry_factory, tmp_path: Path):
    hub, target = registry_factory(delete=True), registry_factory(delete=True)
    images = _images()
    tags = _tags(Storage(hub.storage_dir), images)
    known = advisories(4)
    db = TrivyDB(tmp_path / "trivy-cache").write(known).write_java()
    setup = c.write_catalog(
        tmp_path / "repo",
        hub=hub,
        target_host=target.host,
        image_files={
            "seed.yaml": "images:\n  - source: docker.io/library/seed\n    match: '^\\d+\\.\\d+\\.\\d+$'\n"
            "    owners: ['@acme/seed']\n"
        },
        trivy_cache=db.cache_dir,
    )
    c.require_ok("syncer run", setup.syncer("run", timeout=600))

    ledger = Ledger(setup.reports)
    scans = {i.image.digest: i.scan(known) for i in images}
    generated = tmp_path / "generated"
    for tag, digest in tags.items():
        real = ledger.load("seed", tag)
        assert real is not None and real.scan is not None
        at = {e.event: e.at for e in real.events}
        mirrored = next(e.detail for e in real.events if e.event == "mirrored")
        path = generated / "records" / "seed" / f"{tag}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            record_text(
                PromotedTag(
                    name="seed",
                    tag=tag,
                    upstream="docker.io/library/seed",
                    image=scans[digest],
                    scanner=real.scan.scanner,
                    approved=f"{target.host}/approved/seed",
                    signer="ci",
                    discovered_at=at["discovered"],
                    mirrored_at=at["mirrored"],
                    from_quarantine=mirrored != digest,
                    promoted_at=at["promoted"],
                    scans=(Scan(real.scan.scanned_at, real.scan.db_updated_at),),
                )
            )
        )
        assert Ledger(generated).load("seed", tag) == real
