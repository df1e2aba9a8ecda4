"""Copies between repositories of one registry without moving a byte of image data.

Promotion copies ``quarantine/<name>@<digest>`` to ``approved/<name>:<tag>`` inside the trusted
registry. skopeo would start a process, read every blob's existence and copy any it finds
missing; the distribution API can do it in place: each blob is linked into the destination by
a cross-repository mount (``POST …/blobs/uploads/?mount=<digest>&from=<repository>``) unless
it is linked there already (the registry would rewrite a link readers rely on), each
platform manifest of an index is put by digest, and the top manifest is put under the tag last,
so the tag never names an image that is not complete. kpromo and crane promote the same way.

The exact manifest bytes are re-sent, so the digest is the one scanned. When the registry
declines a mount (it does not support them, or the blob is missing) or the image has a shape
this module leaves alone (a nested index, foreign layers), ``copy_within`` says so and the
caller copies with skopeo instead.
"""

from __future__ import annotations

from syncer.tools.registry import (
    IMAGE_TYPES,
    INDEX_TYPES,
    MANIFEST_TYPES,
    Manifest,
    RegistryClient,
    descriptor_digest,
)


def copy_within(client: RegistryClient, src_repo: str, dst_repo: str, digest: str, tag: str) -> bool:
    """Puts ``src_repo@digest`` under ``dst_repo:tag``; False if it must be left to skopeo.

    Raises ``RegistryError`` when the registry fails; nothing is then tagged in ``dst_repo``.
    """
    top = client.get_manifest(src_repo, digest)
    if top.media_type not in MANIFEST_TYPES:
        return False
    if src_repo != dst_repo:
        children = []
        if top.media_type in INDEX_TYPES:
            for child in top.json.get("manifests") or []:
                child_digest = child.get("digest") if isinstance(child, dict) else None
                if not isinstance(child_digest, str):
                    return False
                manifest = client.get_manifest(
                    src_repo, descriptor_digest(child_digest, f"an entry of index {digest}")
                )
                if manifest.media_type not in IMAGE_TYPES:
                    return False  # a nested index, or a manifest type we do not know
                children.append(manifest)
            images = children
        else:
            images = [top]
        blobs: list[str] = []
        for image in images:
            found = image_blobs(image)
            if found is None:
                return False
            blobs.extend(b for b in found if b not in blobs)
        for blob in blobs:
            # Only a blob the destination lacks: distribution rewrites the link of every blob it
            # is asked to mount in place, and a pull or manifest put reading it meanwhile fails.
            if client.blob_exists(dst_repo, blob):
                continue
            if not client.mount_blob(dst_repo, blob, src_repo):
                return False
        for child in children:
            client.put_manifest(dst_repo, child.digest, child.raw, child.media_type)
    client.put_manifest(dst_repo, tag, top.raw, top.media_type)
    return True


def image_blobs(image: Manifest) -> list[str] | None:
    """The config and layer digests of an image manifest; None for foreign layers (their
    blobs are not in the registry, and skopeo knows how to treat them)."""
    descriptors = [image.json.get("config"), *(image.json.get("layers") or [])]
    digests = []
    for descriptor in descriptors:
        if (
            not isinstance(descriptor, dict)
            or not isinstance(descriptor.get("digest"), str)
            or descriptor.get("urls")
        ):
            return None
        digests.append(descriptor_digest(descriptor["digest"], f"a descriptor of {image.digest}"))
    return digests
