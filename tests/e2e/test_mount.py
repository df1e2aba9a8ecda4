"""Copies inside one registry by cross-repository blob mounts (``syncer.stages.mount``), and promotion's
fallback to skopeo when a registry declines mounts, against a real distribution registry.
"""

from __future__ import annotations

import json

import pytest

from syncer.errors import NotFoundError
from syncer.stages import promote
from syncer.stages.mount import copy_within, image_blobs
from syncer.tools.endpoints import Endpoint
from syncer.tools.registry import DOCKER_MANIFEST, OCI_INDEX, Manifest, RegistryClient
from tests.e2e.test_registry_client import push_blob, push_image, push_index, sha
from tests.harness.faultproxy import FaultProxy
from tests.harness.registry import Registry


def client_for(host: str) -> RegistryClient:
    return RegistryClient(host, tls_verify=False)


def uploads_into(registry: Registry, repository: str) -> list[str]:
    """Requests that carried blob bytes into ``repository`` (a mount carries none)."""
    return [
        f"{r.method} {r.uri}"
        for r in registry.requests()
        if r.path.startswith(f"/v2/{repository}/blobs/uploads/") and r.method in ("PUT", "PATCH")
    ]


def test_mount_links_a_blob_without_sending_it(registry: Registry) -> None:
    digest = push_blob(registry, "quarantine/app", b"layer bytes")
    with client_for(registry.host) as client:
        assert client.mount_blob("approved/app", digest, "quarantine/app") is True
        assert client.get_blob("approved/app", digest) == b"layer bytes"
    assert uploads_into(registry, "approved/app") == []


def test_mount_of_a_blob_the_source_lacks_is_declined_and_the_upload_cancelled(registry: Registry) -> None:
    push_blob(registry, "quarantine/app", b"something else")
    missing = sha(b"never pushed")
    with client_for(registry.host) as client:
        assert client.mount_blob("approved/app", missing, "quarantine/app") is False
        assert not client.blob_exists("approved/app", missing)
    cancels = [
        r
        for r in registry.requests()
        if r.method == "DELETE" and r.path.startswith("/v2/approved/app/blobs/uploads/")
    ]
    assert len(cancels) == 1 and cancels[0].status == 204


def test_copy_within_keeps_the_digest_of_a_single_image(registry: Registry) -> None:
    raw = push_image(registry, "quarantine/app", "scanned")
    with client_for(registry.host) as client:
        assert copy_within(client, "quarantine/app", "approved/app", sha(raw), "1.0") is True
        copied = client.get_manifest("approved/app", "1.0")
        assert (copied.raw, copied.digest) == (raw, sha(raw))
        for blob in [copied.json["config"], *copied.json["layers"]]:
            assert client.blob_exists("approved/app", blob["digest"])
    assert uploads_into(registry, "approved/app") == []


def test_copy_within_leaves_blobs_the_destination_has_alone(registry: Registry) -> None:
    # distribution rewrites a mounted blob's link in place: a pull of approved/app:1.0, or a
    # manifest put, reading it meanwhile would fail with DIGEST_INVALID.
    raw = push_image(registry, "quarantine/app", "scanned")
    with client_for(registry.host) as client:
        assert copy_within(client, "quarantine/app", "approved/app", sha(raw), "1.0") is True
        mounted = client.stats["POST upload"]
        assert mounted == 2  # the config and the layer
        assert copy_within(client, "quarantine/app", "approved/app", sha(raw), "1.1") is True
        assert client.stats["POST upload"] == mounted
        assert client.head_manifest("approved/app", "1.1").digest == sha(raw)


def test_copy_within_brings_every_platform_of_an_index(registry: Registry) -> None:
    raw, platforms = push_index(registry, "quarantine/multi", "scanned")
    with client_for(registry.host) as client:
        assert copy_within(client, "quarantine/multi", "approved/multi", sha(raw), "2.0") is True
        index = client.get_manifest("approved/multi", "2.0")
        assert (index.raw, index.media_type) == (raw, OCI_INDEX)
        for digest in platforms.values():
            image = client.get_manifest("approved/multi", digest)
            assert client.blob_exists("approved/multi", image.json["layers"][0]["digest"])
    assert uploads_into(registry, "approved/multi") == []


def test_copy_within_one_repository_only_adds_the_tag(registry: Registry) -> None:
    raw = push_image(registry, "quarantine/app", "1.0")
    with client_for(registry.host) as client:
        assert copy_within(client, "quarantine/app", "quarantine/app", sha(raw), "1.0-alias") is True
        assert client.head_manifest("quarantine/app", "1.0-alias").digest == sha(raw)
        assert client.stats["POST upload"] == 0


def test_copy_within_of_a_missing_digest_tags_nothing(registry: Registry) -> None:
    push_image(registry, "quarantine/app", "1.0")
    with client_for(registry.host) as client:
        with pytest.raises(NotFoundError):
            copy_within(client, "quarantine/app", "approved/app", sha(b"not a manifest"), "1.0")
        with pytest.raises(NotFoundError):
            client.head_manifest("approved/app", "1.0")


def test_foreign_layers_are_left_to_skopeo() -> None:
    # distribution refuses such manifests unless configured to, so this one is judged as read.
    doc = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": sha(b"config"),
            "size": 6,
        },
        "layers": [
            {
                "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                "digest": sha(b"base layer"),
                "size": 10,
                "urls": ["https://mcr.example/layer"],
            }
        ],
    }
    raw = json.dumps(doc).encode()
    assert image_blobs(Manifest(sha(raw), DOCKER_MANIFEST, raw, doc)) is None
    doc["layers"][0].pop("urls")
    assert image_blobs(Manifest(sha(raw), DOCKER_MANIFEST, raw, doc)) == [sha(b"config"), sha(b"base layer")]


def test_promotion_falls_back_to_skopeo_when_the_registry_declines_mounts(registry: Registry) -> None:
    raw = push_image(registry, "quarantine/app", "scanned")
    with FaultProxy(registry.url) as proxy:
        # A registry without mount support answers a mount request by opening an ordinary
        # upload (202), as distribution does when the blob is not in the source repository.
        proxy.inject(
            202,
            method="POST",
            path=r"[?&]mount=",
            times=10,
            headers={"Location": "/v2/approved/app/blobs/uploads/declined"},
        )
        target = Endpoint(name=proxy.host, address=proxy.host, tls_verify=False)
        with target.client() as client:
            promote.promote(target, client, "quarantine/app", "approved/app", sha(raw), "1.0")
            assert client.head_manifest("approved/app", "1.0").digest == sha(raw)
        declined = [s for s in proxy.seen if s.injected]
        assert len(declined) == 1
        # skopeo's copy was the one that did it: it pushed the blobs the mount did not link.
        assert uploads_into(registry, "approved/app")
