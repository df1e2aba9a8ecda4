"""Image fixtures over ``syncer.demo.images``: build OCI images in Python, push with skopeo."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from syncer.demo.images import (  # noqa: F401 - re-exported for tests
    ALPINE_BASE,
    DEBIAN_BASE,
    DEFAULT_CREATED,
    MEDIA_TYPES,
    Artifact,
    Blob,
    Files,
    Image,
    ImageIndex,
    Platform,
    PushError,
    alpine_files,
    build_image,
    build_index,
    debian_files,
    gzip_bytes,
    index_of,
    java_archive,
    push,
    python_package_files,
    sha256_digest,
    split_reference,
    tar_layer,
    write_dir,
    write_layout,
)
from syncer.demo.registry import Registry


@pytest.fixture
def push_image(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., str]:
    """``push_image(registry, "library/nginx:1.27.3", image) -> digest``.

    ``image`` is an ``Image``, an ``ImageIndex``, or a dict of files (built with
    ``build_image`` defaults: linux/amd64, OCI media types).
    """

    def push_one(registry: Registry, reference: str, image: Artifact | Files) -> str:
        artifact = image if isinstance(image, (Image, ImageIndex)) else build_image(image)
        return push(artifact, registry, reference, tmp_path_factory.mktemp("oci-layout"))

    return push_one
