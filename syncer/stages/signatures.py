"""Cosign signatures stored in the registry, next to the image they sign.

Cosign's layout (specs/SIGNATURE_SPEC.md): the signatures of ``repo@sha256:<hex>`` are the
layers of one OCI image manifest tagged ``repo:sha256-<hex>.sig``. Each layer is a
simple-signing payload blob (media type ``application/vnd.dev.cosign.simplesigning.v1+json``)
whose base64 signature sits in the layer annotation ``dev.cosignproject.cosign/signature``.
Several signers share that one manifest, so adding a signature rewrites it with every
existing layer kept as it was.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from syncer.core import cosign, refs
from syncer.core.refs import is_valid_digest
from syncer.core.trusted import TrustedRef
from syncer.errors import DigestMismatchError, NotFoundError, RegistryError, SigningError
from syncer.tools.registry import OCI_MANIFEST, RegistryClient, digest_of

SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
# go-containerregistry's empty.Image, which cosign appends its layers to, has the zero time.
_ZERO_TIME = "0001-01-01T00:00:00Z"


@dataclass(frozen=True)
class SignatureLayer:
    """One layer of the ``.sig`` manifest, as the manifest describes it (blob not fetched)."""

    digest: str  # of the payload blob
    size: int
    signature: str  # base64, as in the annotation
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VerifyResult:
    signed_by: list[str]  # signer names, in the order they were asked for
    missing: list[str]
    problems: list[str]  # damaged or mismatched signatures, each a complete sentence

    @property
    def ok(self) -> bool:
        return not self.missing


def signature_tag(digest: str) -> str:
    """``sha256:<hex>`` -> ``sha256-<hex>.sig``, the tag cosign stores signatures under."""
    return _attachment_tag(digest, "sig")


def attestation_tag(digest: str) -> str:
    """``sha256:<hex>`` -> ``sha256-<hex>.att``, the tag ``cosign attest`` stores under."""
    return _attachment_tag(digest, "att")


def _attachment_tag(digest: str, kind: str) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    return f"{algorithm}-{hexdigest}.{kind}"


def remove_attachments(client: RegistryClient, repository: str, digest: str) -> list[str]:
    """Deletes the signature and attestation manifests of ``repository@digest``; returns the
    tags that were there.

    They are tags of their own, so deleting the image's manifest leaves them behind, and the
    same digest pushed back later would verify again with the old signatures.
    """
    removed = []
    for tag in (signature_tag(digest), attestation_tag(digest)):
        try:
            # Distribution deletes manifests by digest only.
            client.delete_manifest(repository, client.head_manifest(repository, tag).digest)
        except NotFoundError:
            continue
        removed.append(tag)
    return removed


def read_signatures(client: RegistryClient, repository: str, digest: str) -> list[SignatureLayer]:
    """The signature layers stored for ``repository@digest``; empty when there are none."""
    manifest = _signature_manifest(client, repository, digest)
    return [] if manifest is None else _layers(manifest, client, repository, digest)


def attach(
    client: RegistryClient,
    repository: str,
    digest: str,
    docker_reference: str,
    private_key: cosign.PrivateKey,
) -> bool:
    """Adds this key's signature of ``digest`` under ``docker_reference``; False if present.

    Other signers' layers (and any other attachment) are kept as they are. The registry
    offers no compare-and-swap, so two signers writing the same ``.sig`` tag at the same
    moment can lose one signature; the pipeline signs each digest from one job, and a lost
    signature shows up in verification.
    """
    payload = cosign.make_payload(docker_reference, digest)
    payload_digest = digest_of(payload)
    manifest = _signature_manifest(client, repository, digest)
    existing: list[dict] = []
    if manifest is not None:
        existing = [layer for layer in manifest.get("layers", []) if isinstance(layer, dict)]
        for layer in _layers(manifest, client, repository, digest):
            # Payload bytes are deterministic, so the same identity and digest give the same
            # blob; ECDSA signatures are not, so "ours" means "verifies with our key".
            if layer.digest == payload_digest and cosign.verify(
                private_key.public_key, payload, layer.signature
            ):
                return False
    # Without a signature manifest (the first signature of this digest) neither blob can be
    # there but from an interrupted attempt: upload without asking, two requests fewer.
    known = manifest is not None
    client.put_blob(repository, payload, check=known)
    ours = {
        "mediaType": SIMPLESIGNING,
        "size": len(payload),
        "digest": payload_digest,
        "annotations": {SIGNATURE_ANNOTATION: cosign.sign(private_key, payload)},
    }
    _put_signature_manifest(client, repository, digest, [*existing, ours], check=known)
    return True


def copy_signatures(
    source: RegistryClient,
    destination: RegistryClient,
    repository: str,
    digest: str,
    docker_reference: str,
    signers: dict[str, str],
) -> list[str]:
    """Copies to ``destination`` each signature of ``repository@digest`` in ``source`` that one
    of ``signers`` (name -> PEM public key) made as ``docker_reference``, byte for byte (payload
    and annotations), beside the signatures ``destination`` has; returns those signers' names.

    Only what verifies is copied, so a damaged or foreign layer never spreads. A signature the
    destination holds already is not even read: a run with nothing new costs two GETs.
    """
    manifest = _signature_manifest(source, repository, digest)
    if manifest is None:
        return []
    there = _signature_manifest(destination, repository, digest)
    present = (
        {(layer.digest, layer.signature) for _, layer in _described(there, destination, repository, digest)}
        if there is not None
        else set()
    )
    keys = {
        name: cosign.load_public_key(pem.encode(), source=f"signer '{name}'") for name, pem in signers.items()
    }
    # cosign's payload for this digest and identity, made here: the layers that sign it need
    # no download. Others (a payload with annotations) are fetched and checked.
    expected = cosign.make_payload(docker_reference, digest)
    copied: dict[str, dict] = {}
    blobs: dict[str, bytes] = {}
    names: set[str] = set()
    for raw, layer in _described(manifest, source, repository, digest):
        if (layer.digest, layer.signature) in present:
            continue
        blob = (
            expected
            if layer.digest == digest_of(expected)
            else source.get_blob(repository, layer.digest, layer.size)
        )
        if digest_of(blob) != layer.digest:
            continue
        by = [name for name, key in keys.items() if cosign.verify(key, blob, layer.signature)]
        if not by:
            continue
        try:
            payload = cosign.parse_payload(blob)
        except SigningError:
            continue
        if payload.digest != digest or payload.docker_reference != docker_reference:
            continue
        copied[layer.signature] = raw
        blobs[layer.digest] = blob
        names.update(by)
    if not copied:
        return []
    for blob in blobs.values():
        destination.put_blob(repository, blob)
    existing = [layer for layer in (there or {}).get("layers", []) if isinstance(layer, dict)]
    _put_signature_manifest(destination, repository, digest, [*existing, *copied.values()], check=True)
    return sorted(names)


def _put_signature_manifest(
    client: RegistryClient, repository: str, digest: str, layers: list[dict], *, check: bool
) -> None:
    """Writes the ``.sig`` manifest of ``digest`` with ``layers``, whose blobs are there."""
    config = _config([layer["digest"] for layer in layers])
    client.put_blob(repository, config, check=check)
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": digest_of(config)},
        "layers": layers,
    }
    client.put_manifest(repository, signature_tag(digest), _compact(document), OCI_MANIFEST)


def verify_signers(
    client: RegistryClient,
    repository: str,
    digest: str,
    docker_reference: str,
    signers: dict[str, str],
    *,
    identities: Mapping[str, str] | None = None,
) -> VerifyResult:
    """Which of ``signers`` (name -> PEM public key) signed ``digest`` as ``docker_reference``,
    or as the identity ``identities`` names for a signer (a person's signature on a replica
    names the target, ``syncer.core.trusted.signed_identity``).

    A signature counts only if its blob matches the layer digest, the signature verifies with
    the signer's key over those bytes, and the payload names exactly this digest and identity.
    Signatures by keys not asked about are ignored, as ``cosign verify`` ignores them.
    """
    expected = {name: (identities or {}).get(name, docker_reference) for name in signers}
    problems: list[str] = []
    keys: dict[str, cosign.PublicKey] = {}
    for name, pem in signers.items():
        try:
            keys[name] = cosign.load_public_key(pem.encode(), source=f"signer '{name}'")
        except SigningError as err:
            problems.append(str(err))
    signed: set[str] = set()
    for layer in read_signatures(client, repository, digest):
        where = f"signature layer {layer.digest} of {repository}:{signature_tag(digest)}"
        try:
            blob = client.get_blob(repository, layer.digest, layer.size)
        except RegistryError as err:
            problems.append(f"{where}: payload blob unreadable ({err})")
            continue
        if len(blob) != layer.size:
            problems.append(
                f"{where}: payload is {len(blob)} bytes, the manifest says {layer.size}; re-sign the image"
            )
            continue
        by = [name for name, key in keys.items() if cosign.verify(key, blob, layer.signature)]
        if not by:
            continue
        try:
            payload = cosign.parse_payload(blob)
        except SigningError as err:
            problems.append(f"{where}: {err}")
            continue
        if payload.digest != digest:
            problems.append(
                f"{where}: signed by {', '.join(by)} for {payload.digest}, not "
                f"{digest}; the signature belongs to another image"
            )
            continue
        named = [name for name in by if payload.docker_reference == expected[name]]
        signed.update(named)
        if len(named) < len(by):
            wanted = expected[next(name for name in by if name not in named)]
            remedy = (
                "sign the image under the name it is pulled by"
                if wanted == docker_reference
                else f"sign it in the trusted registry ({wanted}); the next `syncer run` copies it here"
            )
            problems.append(
                f"{where}: signed by {', '.join(n for n in by if n not in named)} as "
                f"'{payload.docker_reference}', not '{wanted}'; {remedy}"
            )
    return VerifyResult(
        signed_by=[name for name in signers if name in signed],
        missing=[name for name in signers if name not in signed],
        problems=problems,
    )


def _signature_manifest(client: RegistryClient, repository: str, digest: str) -> dict | None:
    try:
        return client.get_manifest(repository, signature_tag(digest)).json
    except NotFoundError:
        return None


def _layers(manifest: dict, client: RegistryClient, repository: str, digest: str) -> list[SignatureLayer]:
    return [layer for _, layer in _described(manifest, client, repository, digest)]


def _described(
    manifest: dict, client: RegistryClient, repository: str, digest: str
) -> list[tuple[dict, SignatureLayer]]:
    """Each signature layer of ``manifest``, as written there and as read."""
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise SigningError(
            f"{client.where}: {repository}:{signature_tag(digest)} is not a "
            "signature manifest (no layers); delete that tag and sign again"
        )
    found = []
    for layer in layers:
        if not isinstance(layer, dict) or layer.get("mediaType") != SIMPLESIGNING:
            continue  # attestations and other attachments cosign may add
        annotations = layer.get("annotations") or {}
        signature, blob, size = (
            annotations.get(SIGNATURE_ANNOTATION),
            layer.get("digest"),
            layer.get("size"),
        )
        # A digest outside the grammar could not be fetched, and would reach a URL.
        if (
            isinstance(signature, str)
            and isinstance(blob, str)
            and is_valid_digest(blob)
            and isinstance(size, int)
            and not isinstance(size, bool)
        ):
            found.append(
                (
                    layer,
                    SignatureLayer(
                        digest=blob, size=size, signature=signature, annotations=dict(annotations)
                    ),
                )
            )
    return found


def _config(layer_digests: list[str]) -> bytes:
    """The image config cosign's signature manifests carry: empty, one history entry per layer.

    The payloads are stored uncompressed, so each diff_id is the layer digest.
    """
    return _compact(
        {
            "architecture": "",
            "created": _ZERO_TIME,
            "history": [{"created": _ZERO_TIME} for _ in layer_digests],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": layer_digests},
            "config": {},
        }
    )


def _compact(document: dict) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def resolve_digest(client: RegistryClient, ref: TrustedRef, action: str) -> str:
    """The digest to act on: REF's own, which the registry must serve as it is, or the digest
    of the manifest bytes REF's tag points at now (one GET). A signature vouches for a digest,
    so a registry (or a proxy in front of it) that answers with another manifest must not
    choose what is verified or signed. ``action`` says what did not happen (verified, signed)."""
    wanted = ref.digest or ref.tag
    assert wanted is not None  # parse_trusted_ref refuses a reference with neither
    try:
        manifest = client.get_manifest(ref.repository, wanted)
    except DigestMismatchError as err:
        raise DigestMismatchError(
            f"{err}; nothing was {action}. Check what answers at {client.endpoint} (a mirror or "
            f"proxy rewriting answers), and that {ref} is the image you mean",
            registry=err.registry,
            expected=err.expected,
            found=err.found,
        ) from None
    if ref.digest is not None:
        return ref.digest
    if not refs.is_sha256_digest(manifest.digest):
        raise RegistryError(
            f"{client.where} serves {ref} as {manifest.digest}; signatures are stored per sha256 digest only",
            registry=client.host,
        )
    return manifest.digest
