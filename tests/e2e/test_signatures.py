"""syncer.stages.signatures: cosign's `.sig` tag layout in a real distribution registry."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from syncer.core import cosign
from syncer.stages import signatures
from syncer.tools.registry import OCI_MANIFEST, RegistryClient, digest_of
from tests.harness.registry import Registry

pytestmark = pytest.mark.e2e

VECTORS = Path(__file__).resolve().parents[1] / "data" / "cosign"
REPO = "approved/nginx"
DIGEST = "sha256:" + "5e" * 32
OTHER_DIGEST = "sha256:" + "a1" * 32


@pytest.fixture
def client(registry: Registry):
    with RegistryClient(registry.host, tls_verify=False) as c:
        yield c


@pytest.fixture(scope="module")
def keys() -> dict[str, tuple[cosign.PrivateKey, str]]:
    """name -> (private key, public PEM); generated once, scrypt is deliberately slow."""
    made = {}
    for name in ("ci", "alice"):
        pair = cosign.generate_keypair(b"pw")
        made[name] = (cosign.load_private_key(pair.private_pem, b"pw"), pair.public_pem.decode())
    return made


def identity(registry: Registry, repo: str = REPO) -> str:
    return f"{registry.host}/{repo}"


def sig_manifest(client: RegistryClient, digest: str = DIGEST, repo: str = REPO):
    return client.get_manifest(repo, signatures.signature_tag(digest))


def test_signature_tag_is_cosigns():
    assert signatures.signature_tag(DIGEST) == "sha256-" + "5e" * 32 + ".sig"


def test_attach_writes_cosigns_layout_and_verifies(client, registry, keys):
    private, public = keys["ci"]
    assert signatures.attach(client, REPO, DIGEST, identity(registry), private) is True

    manifest = sig_manifest(client)
    assert manifest.media_type == OCI_MANIFEST
    doc = manifest.json
    assert list(doc) == ["schemaVersion", "mediaType", "config", "layers"]
    assert doc["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    # cosign's one-signature manifests carry a 233-byte config (go-containerregistry's empty
    # image plus one layer); ours is built the same way.
    assert doc["config"]["size"] == 233
    [layer] = doc["layers"]
    assert list(layer) == ["mediaType", "size", "digest", "annotations"]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    payload = client.get_blob(REPO, layer["digest"])
    assert payload == cosign.make_payload(identity(registry), DIGEST)
    signature = layer["annotations"]["dev.cosignproject.cosign/signature"]
    assert cosign.verify(cosign.load_public_key(public.encode()), payload, signature)
    config = json.loads(client.get_blob(REPO, doc["config"]["digest"]))
    assert config["rootfs"] == {"type": "layers", "diff_ids": [layer["digest"]]}

    result = signatures.verify_signers(client, REPO, DIGEST, identity(registry), {"ci": public})
    assert (result.signed_by, result.missing, result.problems, result.ok) == (["ci"], [], [], True)


def test_a_first_signature_takes_six_requests(client, registry, keys):
    """No signature manifest yet: the two blobs are uploaded without asking whether they exist."""
    signatures.attach(client, REPO, DIGEST, identity(registry), keys["ci"][0])
    assert client.stats["HEAD"] == 0
    assert sum(client.stats[m] for m in ("GET", "POST", "PUT")) == 6  # GET .sig, 2 x (POST, PUT), PUT


def test_attach_is_idempotent(client, registry, keys):
    private, _ = keys["ci"]
    assert signatures.attach(client, REPO, DIGEST, identity(registry), private) is True
    before = sig_manifest(client).digest
    puts = registry.count("PUT", "/manifests/")
    assert signatures.attach(client, REPO, DIGEST, identity(registry), private) is False
    assert sig_manifest(client).digest == before
    assert registry.count("PUT", "/manifests/") == puts


def test_a_second_signer_adds_a_layer_and_keeps_the_first(client, registry, keys):
    signatures.attach(client, REPO, DIGEST, identity(registry), keys["ci"][0])
    [first] = sig_manifest(client).json["layers"]
    assert signatures.attach(client, REPO, DIGEST, identity(registry), keys["alice"][0]) is True
    layers = sig_manifest(client).json["layers"]
    assert len(layers) == 2 and layers[0] == first
    assert [layer.digest for layer in signatures.read_signatures(client, REPO, DIGEST)] == [
        first["digest"],
        first["digest"],
    ]  # same identity and digest: the same payload blob
    signers = {name: pem for name, (_, pem) in keys.items()}
    result = signatures.verify_signers(client, REPO, DIGEST, identity(registry), signers)
    assert result.signed_by == ["ci", "alice"] and result.missing == []


def test_unsigned_digest_has_no_signatures_and_every_signer_missing(client, registry, keys):
    assert signatures.read_signatures(client, REPO, OTHER_DIGEST) == []
    result = signatures.verify_signers(client, REPO, OTHER_DIGEST, identity(registry), {"ci": keys["ci"][1]})
    assert (result.signed_by, result.missing, result.ok) == ([], ["ci"], False)


def test_missing_signer_is_reported(client, registry, keys):
    signatures.attach(client, REPO, DIGEST, identity(registry), keys["ci"][0])
    signers = {name: pem for name, (_, pem) in keys.items()}
    result = signatures.verify_signers(client, REPO, DIGEST, identity(registry), signers)
    assert (result.signed_by, result.missing, result.problems) == (["ci"], ["alice"], [])


def test_unreadable_signer_key_is_a_problem_and_missing(client, registry, keys):
    signatures.attach(client, REPO, DIGEST, identity(registry), keys["ci"][0])
    result = signatures.verify_signers(
        client, REPO, DIGEST, identity(registry), {"ci": keys["ci"][1], "bob": "not a key"}
    )
    assert result.signed_by == ["ci"] and result.missing == ["bob"]
    assert result.problems == [
        "signer 'bob': no PEM block found; expected a key file written by 'syncer keygen' or cosign"
    ]


def test_signature_under_another_identity_does_not_count(client, registry, keys):
    signatures.attach(client, REPO, DIGEST, "registry.example.com/approved/nginx", keys["ci"][0])
    result = signatures.verify_signers(client, REPO, DIGEST, identity(registry), {"ci": keys["ci"][1]})
    assert result.missing == ["ci"]
    [problem] = result.problems
    assert f"as 'registry.example.com/approved/nginx', not '{identity(registry)}'" in problem


def copy_signature(client: RegistryClient, source_digest: str, target_digest: str) -> None:
    raw = sig_manifest(client, source_digest).raw
    client.put_manifest(REPO, signatures.signature_tag(target_digest), raw, OCI_MANIFEST)


def test_signature_of_another_digest_replayed_here_does_not_count(client, registry, keys):
    signatures.attach(client, REPO, OTHER_DIGEST, identity(registry), keys["ci"][0])
    copy_signature(client, OTHER_DIGEST, DIGEST)
    result = signatures.verify_signers(client, REPO, DIGEST, identity(registry), {"ci": keys["ci"][1]})
    assert result.missing == ["ci"]
    [problem] = result.problems
    assert f"for {OTHER_DIGEST}, not {DIGEST}" in problem


def rewrite_layer(client: RegistryClient, change) -> None:
    doc = sig_manifest(client).json
    change(doc["layers"][0])
    raw = json.dumps(doc).encode()
    client.put_manifest(REPO, signatures.signature_tag(DIGEST), raw, OCI_MANIFEST)


def test_tampered_signature_does_not_count(client, registry, keys):
    signatures.attach(client, REPO, DIGEST, identity(registry), keys["ci"][0])

    def flip(layer):
        raw = bytearray(base64.b64decode(layer["annotations"][signatures.SIGNATURE_ANNOTATION]))
        raw[10] ^= 1
        layer["annotations"][signatures.SIGNATURE_ANNOTATION] = base64.b64encode(raw).decode()

    rewrite_layer(client, flip)
    result = signatures.verify_signers(client, REPO, DIGEST, identity(registry), {"ci": keys["ci"][1]})
    assert (result.signed_by, result.missing) == ([], ["ci"])


def test_layer_size_that_disagrees_with_the_blob_is_a_problem(client, registry, keys):
    signatures.attach(client, REPO, DIGEST, identity(registry), keys["ci"][0])
    rewrite_layer(client, lambda layer: layer.update(size=layer["size"] + 1))
    result = signatures.verify_signers(client, REPO, DIGEST, identity(registry), {"ci": keys["ci"][1]})
    assert result.missing == ["ci"]
    [problem] = result.problems
    assert "the manifest says" in problem


def test_signature_stored_by_cosign_verifies_and_is_kept_when_we_sign(client, registry, keys):
    """The cosign vector (payload + signature from `cosign sign`) in cosign's exact layout."""
    payload = (VECTORS / "containers-image-rekor-payload.json").read_bytes()
    signature = (VECTORS / "containers-image-rekor-payload.sig").read_text()
    cert = x509.load_pem_x509_certificate((VECTORS / "containers-image-fulcio-cert.pem").read_bytes())
    cosign_pub = cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    parsed = cosign.parse_payload(payload)
    repo = "test-repo-2100826901021538654/alpine"
    config = (
        b'{"architecture":"","created":"0001-01-01T00:00:00Z","history":[{"created":'
        b'"0001-01-01T00:00:00Z"}],"os":"","rootfs":{"type":"layers","diff_ids":["'
        + digest_of(payload).encode()
        + b'"]},"config":{}}'
    )
    client.put_blob(repo, payload)
    client.put_blob(repo, config)
    manifest = (
        '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'  # noqa: UP031 - JSON braces
        '"config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":%d,"digest":"%s"},'
        '"layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","size":%d,'
        '"digest":"%s","annotations":{"dev.cosignproject.cosign/signature":"%s"}}]}'
        % (len(config), digest_of(config), len(payload), digest_of(payload), signature)
    ).encode()
    client.put_manifest(repo, signatures.signature_tag(parsed.digest), manifest, OCI_MANIFEST)

    signers = {"cosign": cosign_pub.decode()}
    result = signatures.verify_signers(client, repo, parsed.digest, parsed.docker_reference, signers)
    assert (result.signed_by, result.problems) == (["cosign"], [])

    assert signatures.attach(client, repo, parsed.digest, parsed.docker_reference, keys["ci"][0])
    after = sig_manifest(client, parsed.digest, repo).json
    assert after["layers"][0] == json.loads(manifest)["layers"][0]
    # With the cosign layer first, our config is the one cosign would write for two layers.
    assert (
        after["config"]["size"]
        == len(config) + len(',{"created":"0001-01-01T00:00:00Z"}') + len(',"sha256:') + 64 + 1
    )
    signers["ci"] = keys["ci"][1]
    result = signatures.verify_signers(client, repo, parsed.digest, parsed.docker_reference, signers)
    assert result.signed_by == ["cosign", "ci"]


def test_copy_signatures_copies_what_the_signers_made_as_the_identity_unchanged_and_once(
    client, registry, registry_factory, keys
):
    named = identity(registry)
    signatures.attach(client, REPO, DIGEST, named, keys["ci"][0])
    signatures.attach(client, REPO, DIGEST, named, keys["alice"][0])
    signatures.attach(client, REPO, DIGEST, "elsewhere.example/approved/nginx", keys["alice"][0])
    stranger = cosign.load_private_key(cosign.generate_keypair(b"pw").private_pem, b"pw")
    signatures.attach(client, REPO, DIGEST, named, stranger)
    replica = registry_factory()
    with RegistryClient(replica.host, tls_verify=False) as there:
        signatures.attach(there, REPO, DIGEST, identity(replica), keys["ci"][0])
        copied = signatures.copy_signatures(client, there, REPO, DIGEST, named, {"alice": keys["alice"][1]})
        assert copied == ["alice"]
        alices = [
            layer
            for layer in signatures.read_signatures(client, REPO, DIGEST)
            if layer in signatures.read_signatures(there, REPO, DIGEST)
        ]
        assert len(alices) == 1, "only alice's layer naming the identity, byte for byte"
        assert len(signatures.read_signatures(there, REPO, DIGEST)) == 2  # the replica's ci, and alice's
        result = signatures.verify_signers(
            there,
            REPO,
            DIGEST,
            identity(replica),
            {"ci": keys["ci"][1], "alice": keys["alice"][1]},
            identities={"alice": named},
        )
        assert (result.signed_by, result.problems) == (["ci", "alice"], [])
        puts = there.stats["PUT"]
        assert (
            signatures.copy_signatures(client, there, REPO, DIGEST, named, {"alice": keys["alice"][1]}) == []
        )
        assert there.stats["PUT"] == puts, "a signature the replica holds is not written again"
