"""Tags for a real registry without pushing them: CNCF distribution's filesystem storage
written directly.

Pushing 50,000 tags costs a manifest PUT each; writing the files distribution itself would
write costs a few small files each, and the registry process (``tests.harness.registry``)
started over the directory serves them like pushed ones: tag lists, HEADs and GETs by tag
and digest, blobs. Layout (distribution 2.x ``storage/paths.go``), under the storage root:

    docker/registry/v2/blobs/sha256/<hex[:2]>/<hex>/data               content, once
    docker/registry/v2/repositories/<repo>/_layers/sha256/<hex>/link      a blob of the repo
    docker/registry/v2/repositories/<repo>/_manifests/revisions/sha256/<hex>/link
    docker/registry/v2/repositories/<repo>/_manifests/tags/<tag>/current/link
    docker/registry/v2/repositories/<repo>/_manifests/tags/<tag>/index/sha256/<hex>/link

Each link file holds the digest (``sha256:<hex>``, no newline).
"""

from __future__ import annotations

from pathlib import Path

from syncer.demo.images import Image


class Storage:
    """One registry's storage root (``Registry.storage_dir``); the registry may be running."""

    def __init__(self, root: Path):
        self.v2 = Path(root) / "docker" / "registry" / "v2"
        self._blobs: set[str] = set()

    def _link(self, path: Path, digest: str) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / "link").write_text(digest)

    def blob(self, data: bytes, digest: str) -> None:
        """The blob's content, written once per storage."""
        if digest in self._blobs:
            return
        hexa = digest.removeprefix("sha256:")
        directory = self.v2 / "blobs" / "sha256" / hexa[:2] / hexa
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "data").write_bytes(data)
        self._blobs.add(digest)

    def image(self, repository: str, image: Image) -> None:
        """``image`` in ``repository`` by digest: its blobs, the repository's links to its
        config and layers, and its manifest revision."""
        repo = self.v2 / "repositories" / repository
        for blob in image.blobs:
            self.blob(blob.data, blob.digest)
        for blob in (image.config, *image.layers):
            self._link(repo / "_layers" / "sha256" / blob.digest.removeprefix("sha256:"), blob.digest)
        self._link(
            repo / "_manifests" / "revisions" / "sha256" / image.digest.removeprefix("sha256:"), image.digest
        )

    def tag(self, repository: str, tag: str, digest: str) -> None:
        """``repository:tag`` pointing at ``digest`` (an image already written with ``image``);
        a tag that pointed elsewhere keeps that digest in its index, as distribution does."""
        tag_dir = self.v2 / "repositories" / repository / "_manifests" / "tags" / tag
        self._link(tag_dir / "current", digest)
        self._link(tag_dir / "index" / "sha256" / digest.removeprefix("sha256:"), digest)
