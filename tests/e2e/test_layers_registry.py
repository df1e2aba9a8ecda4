"""The layer check against images in a real registry: what is downloaded, verified and cached."""

from __future__ import annotations

import gzip
import json
import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from syncer.stages.layers import CACHE_FILE, LayerError, check_image
from syncer.tools.registry import OCI_MANIFEST, RegistryClient
from tests.harness.images import Blob, build_image, gzip_bytes, tar_layer
from tests.unit.test_layers import APP, DEBIAN, sha256

# --- images in a registry ------------------------------------------------------------------------


@pytest.fixture
def client(registry):
    with RegistryClient(registry.host, tls_verify=False) as c:
        yield c


def layer_gets(registry, image) -> int:
    return sum(registry.count("GET", f"/blobs/{layer.digest}") for layer in image.layers)


def test_an_honest_image_passes_and_a_second_check_downloads_no_layer(registry, push_image, client, tmp_path):
    image = build_image([DEBIAN, APP])
    digest = push_image(registry, "team/app:1", image)
    check = check_image(client, "team/app", digest, tmp_path)
    assert [v.digest for v in check.verified] == [layer.digest for layer in image.layers]
    assert [v.diff_id for v in check.verified] == json.loads(image.config.data)["rootfs"]["diff_ids"]
    assert check.verified[0].package_dbs == {"var/lib/dpkg/status"}
    assert check.verified[1].package_dbs == frozenset()
    assert check.package_dbs == {"var/lib/dpkg/status"}
    assert layer_gets(registry, image) == 2

    assert check_image(client, "team/app", digest, tmp_path) == check
    assert layer_gets(registry, image) == 2, "verified pairs come from the cache"


def test_checks_of_images_sharing_a_layer_at_once_download_it_once(registry, push_image, tmp_path):
    # A base large enough that the four downloads would overlap.
    base = {**DEBIAN, "opt/base.bin": random.Random(1).randbytes(16 << 20)}
    images = [build_image([base, {"etc/app": str(n) * 4000}]) for n in range(4)]
    refs = [(f"team/app{n}", push_image(registry, f"team/app{n}:1", image)) for n, image in enumerate(images)]

    def check(ref):
        with RegistryClient(registry.host, tls_verify=False) as own:
            return check_image(own, *ref, tmp_path)

    with ThreadPoolExecutor(4) as pool:
        checks = list(pool.map(check, refs))
    assert len({c.verified[0] for c in checks}) == 1
    assert registry.count("GET", f"/blobs/{images[0].layers[0].digest}") == 1


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_uncompressed_and_zstd_layers_are_checked(registry, push_image, client, tmp_path, compression):
    image = build_image([DEBIAN, APP], compression=compression)
    digest = push_image(registry, "team/app:1", image)
    check = check_image(client, "team/app", digest, tmp_path)
    assert [v.diff_id for v in check.verified] == json.loads(image.config.data)["rootfs"]["diff_ids"]


def test_a_layer_claiming_another_diff_id_is_a_layer_error_naming_both(
    registry, push_image, client, tmp_path
):
    clean = build_image(DEBIAN)
    claimed = json.loads(clean.config.data)["rootfs"]["diff_ids"]
    liar = build_image(APP, diff_ids=claimed)
    digest = push_image(registry, "team/app:1", liar)
    with pytest.raises(LayerError) as err:
        check_image(client, "team/app", digest, tmp_path)
    message = str(err.value)
    actual = sha256(tar_layer(APP))
    for needed in (
        f"layer 1 of 1 ({liar.layers[0].digest})",
        f"/team/app@{digest}",
        f"has diff_id {actual}",
        f"claims {claimed[0]}",
        "not scanned and nothing is promoted",
    ):
        assert needed in message, message

    # The true pair was kept: the same verdict again, without a download.
    with pytest.raises(LayerError):
        check_image(client, "team/app", digest, tmp_path)
    assert layer_gets(registry, liar) == 1


def test_two_layers_claiming_one_diff_id_fail_unless_their_content_is_one(
    registry, push_image, client, tmp_path
):
    first = json.loads(build_image(DEBIAN).config.data)["rootfs"]["diff_ids"][0]
    liar = build_image([DEBIAN, APP], diff_ids=[first, first])
    digest = push_image(registry, "team/liar:1", liar)
    with pytest.raises(LayerError, match=r"layer 2 of 2 .* claims " + first):
        check_image(client, "team/liar", digest, tmp_path)

    same = build_image([DEBIAN, DEBIAN])  # the same layer twice: one analysis is right
    digest = push_image(registry, "team/same:1", same)
    check = check_image(client, "team/same", digest, tmp_path)
    assert [v.diff_id for v in check.verified] == [first, first]


@pytest.mark.parametrize("diff_ids", [1, 3])
def test_as_many_diff_ids_as_layers_are_required(registry, push_image, client, tmp_path, diff_ids):
    honest = json.loads(build_image([DEBIAN, APP]).config.data)["rootfs"]["diff_ids"]
    image = build_image([DEBIAN, APP], diff_ids=(honest + honest)[:diff_ids])
    digest = push_image(registry, "team/app:1", image)
    with pytest.raises(LayerError, match=f"has 2 layers but its config lists {diff_ids} diff_ids"):
        check_image(client, "team/app", digest, tmp_path)
    assert layer_gets(registry, image) == 0, "counted before anything is downloaded"


def push_one_layer(client: RegistryClient, layer: Blob, diff_id: str) -> str:
    """An image build_image would not make, put with our client; its digest."""
    config = Blob(
        "application/vnd.oci.image.config.v1+json",
        json.dumps({"rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode(),
    )
    for blob in (layer, config):
        client.put_blob("team/app", blob.data)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": [layer.descriptor()],
        }
    ).encode()
    return client.put_manifest("team/app", "1", manifest, OCI_MANIFEST)


def test_a_layer_of_an_unknown_media_type_is_refused(registry, client, tmp_path):
    tar = tar_layer(APP)
    digest = push_one_layer(client, Blob("application/vnd.example.archive", gzip_bytes(tar)), sha256(tar))
    with pytest.raises(LayerError, match=r"media type application/vnd.example.archive, not an image layer"):
        check_image(client, "team/app", digest, tmp_path)


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b'{"version": 2, "layers": {}}',
        b'["a list"]',
        # Entries of the wrong shape: skipped one by one, never trusted.
        json.dumps(
            {"version": 1, "layers": {"LAYER": {"diff_id": "sha256:nope", "package_dbs": []}}}
        ).encode(),
        json.dumps(
            {"version": 1, "layers": {"LAYER": {"diff_id": "CLAIM", "package_dbs": ["../../etc"]}}}
        ).encode(),
        json.dumps({"version": 1, "layers": {"LAYER": "CLAIM"}}).encode(),
    ],
    ids=["not-json", "other-version", "not-an-object", "bad-diff-id", "bad-package-db", "bad-entry"],
)
def test_a_bad_cache_file_is_ignored_and_the_layers_verified_again(
    registry, push_image, client, tmp_path, content
):
    image = build_image(DEBIAN)
    digest = push_image(registry, "team/app:1", image)
    claim = json.loads(image.config.data)["rootfs"]["diff_ids"][0]
    (tmp_path / CACHE_FILE).write_bytes(
        content.replace(b"LAYER", image.layers[0].digest.encode()).replace(b"CLAIM", claim.encode())
    )
    check = check_image(client, "team/app", digest, tmp_path)
    assert check.verified[0].diff_id == claim
    assert check.package_dbs == {"var/lib/dpkg/status"}
    assert layer_gets(registry, image) == 1, "verified again, not taken from the bad file"
    written = json.loads((tmp_path / CACHE_FILE).read_text())
    assert written["version"] == 1
    assert written["layers"][image.layers[0].digest] == {
        "diff_id": claim,
        "package_dbs": ["var/lib/dpkg/status"],
    }


def test_a_layer_that_does_not_decompress_is_a_layer_error(registry, client, tmp_path):
    tar = tar_layer(APP)
    broken = Blob("application/vnd.oci.image.layer.v1.tar+gzip", gzip.compress(tar)[:-12])
    digest = push_one_layer(client, broken, sha256(tar))
    with pytest.raises(LayerError, match=f"layer 1 of 1 \\({broken.digest}\\).* cannot be decompressed"):
        check_image(client, "team/app", digest, tmp_path)
