"""syncer verify and syncer sign through the real CLI, against images the pipeline promoted
and signed in a real distribution registry (the `world` fixture), and signatures tampered
with the way an attacker or an accident would: missing, by a stranger's key, made for another
digest, copied from another repository; and a lying front in place of the registry, naming
another digest than the one asked for, or a malformed one."""

from __future__ import annotations

import json

import pytest
import requests

from syncer.core import cosign
from syncer.core.model import RegistryEndpoint, Settings, Target
from syncer.core.trusted import parse_trusted_ref
from syncer.errors import UsageError
from syncer.stages import signatures
from syncer.tools.registry import OCI_MANIFEST, RegistryClient
from tests.harness.faultproxy import INJECTED, MALFORMED_DIGESTS, FaultProxy
from tests.harness.images import alpine_files, build_image
from tests.harness.world import MANIFEST_ACCEPT, PASSPHRASE

pytestmark = pytest.mark.e2e

CLEAN = (("musl", "1.2.5-r0", "musl"), ("busybox", "1.36.1-r29", "busybox"))
OTHER = (("musl", "1.2.5-r1", "musl"),)


def _verify(world, ref: str, *extra: str) -> tuple[int, dict]:
    proc = world.syncer("verify", ref, "--json", *extra)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def _catalog_alpine(world) -> None:
    world.images("""
        images:
          - source: alpine
            tags: ["3.20"]
    """)


def _promote_alpine(world) -> str:
    world.db.write(())
    digest = world.push("library/alpine:3.20", build_image(alpine_files(CLEAN)))
    _catalog_alpine(world)
    world.run()
    return digest


def _copy_signature_manifest(
    client: RegistryClient, src_repo: str, src_digest: str, dst_repo: str, dst_digest: str
) -> None:
    """Copies the `.sig` manifest of src_repo@src_digest, blobs and all, to be the `.sig` of
    dst_repo@dst_digest: what `crane copy` of a signature tag would do."""
    manifest = client.get_manifest(src_repo, signatures.signature_tag(src_digest))
    for blob in [manifest.json["config"], *manifest.json["layers"]]:
        client.put_blob(dst_repo, client.get_blob(src_repo, blob["digest"]))
    client.put_manifest(dst_repo, signatures.signature_tag(dst_digest), manifest.raw, manifest.media_type)


def test_promoted_image_verifies_and_tampered_ones_are_refused(world):
    digest = _promote_alpine(world)
    host = world.target.host

    code, out = _verify(world, f"{host}/approved/alpine:3.20")
    assert code == 0, out
    assert (out["digest"], out["signed_by"], out["missing"], out["problems"]) == (digest, ["ci"], [], [])
    assert out["identity"] == f"{host}/approved/alpine"
    assert out["required_by"] == "policy 'default' of image 'alpine'"
    # Relative to the target, and by digest: the same image, the same answer.
    assert _verify(world, f"approved/alpine@{digest}")[0] == 0
    text = world.syncer("verify", "approved/alpine:3.20")
    assert text.returncode == 0 and "verified: every required signer has signed" in text.stdout

    # The quarantined copy has the same digest but was never signed under its own name.
    code, out = _verify(world, f"{host}/quarantine/alpine:3.20")
    assert code == 1 and out["missing"] == ["ci"]
    assert any("no signatures are stored" in n for n in out["notes"]), out

    # The same bytes pushed to another repository by hand: no signature at all.
    world.push("approved/bare:3.20", build_image(alpine_files(CLEAN)), registry=world.target)
    code, out = _verify(world, "approved/bare:3.20", "--signers", "ci")
    assert code == 1 and out["missing"] == ["ci"] and out["digest"] == digest
    assert any("no signatures are stored" in n for n in out["notes"]), out

    with RegistryClient(host, tls_verify=False) as client:
        # Signed with the right identity and digest, but by a key the catalog does not know.
        world.push("approved/stranger:3.20", build_image(alpine_files(CLEAN)), registry=world.target)
        stranger = cosign.load_private_key(cosign.generate_keypair(b"pw").private_pem, b"pw")
        signatures.attach(client, "approved/stranger", digest, f"{host}/approved/stranger", stranger)
        code, out = _verify(world, "approved/stranger:3.20", "--signers", "ci")
        assert code == 1 and out["missing"] == ["ci"]
        assert any("unknown key" in n for n in out["notes"]), out

        # ci's valid signature of the 3.20 digest, replayed as the signature of another image
        # in the same repository.
        other = world.push("approved/alpine:other", build_image(alpine_files(OTHER)), registry=world.target)
        _copy_signature_manifest(client, "approved/alpine", digest, "approved/alpine", other)
        code, out = _verify(world, "approved/alpine:other")
        assert code == 1 and out["missing"] == ["ci"]
        assert any(
            f"for {digest}, not {other}" in p and "belongs to another image" in p for p in out["problems"]
        ), out

        # The same image and its signature copied to another repository: the signature
        # names approved/alpine, so it does not vouch for approved/copy.
        world.push("approved/copy:3.20", build_image(alpine_files(CLEAN)), registry=world.target)
        _copy_signature_manifest(client, "approved/alpine", digest, "approved/copy", digest)
        code, out = _verify(world, "approved/copy:3.20", "--signers", "ci")
        assert code == 1 and out["missing"] == ["ci"]
        assert any(
            f"as '{host}/approved/alpine', not '{host}/approved/copy'" in p for p in out["problems"]
        ), out

    # The original is untouched by all of this.
    assert _verify(world, f"{host}/approved/alpine:3.20")[0] == 0


# --- a registry that names another digest than the one asked for --------------------------


@pytest.fixture
def lying_front(world):
    """A fault proxy in front of the target registry, which settings.yaml names as the target:
    REFs, identities and signatures all say ``front.host``."""
    with FaultProxy(world.target.url) as front:
        world.route(world.target.host, front.host)
        _catalog_alpine(world)
        yield front


def _push_two_approved(world) -> tuple[str, str]:
    """Two images in approved/alpine of the target itself (no run, so no pipeline signature)."""
    one = world.push("approved/alpine:3.20", build_image(alpine_files(CLEAN)), registry=world.target)
    two = world.push("approved/alpine:other", build_image(alpine_files(OTHER)), registry=world.target)
    return one, two


def _answer_as(front: FaultProxy, asked: str, named: str, body: bytes) -> None:
    """From now on the front answers every manifest request for ``asked`` as ``named``."""
    front.inject(
        200,
        path=f"/manifests/{asked}$",
        times=1000,
        body=body,
        headers={"Docker-Content-Digest": named, "Content-Type": OCI_MANIFEST},
    )


def _manifest_bytes(world, repository: str, digest: str) -> bytes:
    resp = requests.get(
        f"{world.target.url}/v2/{repository}/manifests/{digest}",
        headers={"Accept": MANIFEST_ACCEPT},
        timeout=10,
    )
    resp.raise_for_status()
    return resp.content


def _assert_clean_failure(proc, *needles: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)


def test_verify_by_digest_checks_that_digest_when_the_registry_serves_a_signed_one(world, lying_front):
    signed, unsigned = _push_two_approved(world)
    host = lying_front.host
    ci = cosign.load_private_key(world.key.read_bytes(), PASSPHRASE.encode())
    with RegistryClient(world.target.host, tls_verify=False) as client:
        signatures.attach(client, "approved/alpine", signed, f"{host}/approved/alpine", ci)
    assert _verify(world, f"{host}/approved/alpine@{signed}")[0] == 0

    # Header and body both those of the signed image: a consistent lie, which only the
    # digest written in REF can expose.
    _answer_as(lying_front, unsigned, signed, _manifest_bytes(world, "approved/alpine", signed))
    proc = world.syncer("verify", f"{host}/approved/alpine@{unsigned}")
    _assert_clean_failure(proc, f"asked for {unsigned}", f"named {signed}", "nothing was verified", host)
    assert lying_front.injected >= 1
    assert _verify(world, f"{host}/approved/alpine@{signed}")[0] == 0, "the signed one still verifies"


def test_sign_by_digest_signs_nothing_when_the_registry_names_another(world, lying_front):
    reviewed, other = _push_two_approved(world)
    host = lying_front.host
    # Only the header lies; the body is the reviewed image's own.
    _answer_as(lying_front, reviewed, other, _manifest_bytes(world, "approved/alpine", reviewed))
    before = world.tree()
    proc = world.syncer("sign", f"{host}/approved/alpine@{reviewed}", "--key", str(world.key))
    _assert_clean_failure(proc, f"asked for {reviewed}", f"named {other}", "nothing was signed")
    assert lying_front.injected >= 1
    tags = world.tags(world.target, "approved/alpine")  # the registry itself, not the front
    assert not [t for t in tags if t.endswith(".sig")], tags
    assert world.tree() == before


@pytest.mark.parametrize("value", MALFORMED_DIGESTS)
def test_malformed_digest_headers_are_clean_errors(world, lying_front, value):
    _push_two_approved(world)
    lying_front.inject(
        200,
        path=r"/manifests/3\.20$",
        times=1000,
        body=b"{}",
        headers={"Docker-Content-Digest": value, "Content-Type": OCI_MANIFEST},
    )
    for argv in (
        ("verify", "approved/alpine:3.20"),
        ("sign", "approved/alpine:3.20", "--key", str(world.key)),
    ):
        proc = world.syncer(*argv)
        _assert_clean_failure(proc, "malformed Docker-Content-Digest", lying_front.host, "approved/alpine")
        assert f"\n{INJECTED}" not in proc.stdout + proc.stderr, "a header value printed raw"
    assert not [t for t in world.tags(world.target, "approved/alpine") if t.endswith(".sig")]


def test_usage_errors_exit_2_and_name_the_remedy(world):
    _catalog_alpine(world)
    cases = [
        (("approved/bare:3.20",), "belongs to no catalog entry", "--signers"),
        (("approved/alpine:3.20", "--signers", "ci,bob"), "'bob' has no public key", "syncer keygen"),
        (("docker.io/library/alpine:3.20",), "not an image of the trusted registry", "approved/NAME:TAG"),
        (("approved/alpine",), "neither a tag nor a digest", ":TAG"),
    ]
    for args, problem, remedy in cases:
        proc = world.syncer("verify", *args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert problem in proc.stderr and remedy in proc.stderr, (args, proc.stderr)
    missing = world.syncer("verify", "approved/alpine:9.99")
    assert missing.returncode == 1 and "approved/alpine:9.99" in missing.stderr


def test_second_signer_signs_with_syncer_sign_and_the_record_lists_them(world):
    alice = cosign.generate_keypair(PASSPHRASE.encode())
    (world.root / "alice.key").write_bytes(alice.private_pem)
    (world.catalog / "signers" / "alice.pub").write_bytes(alice.public_pem)
    world.policy(
        "default",
        """
        vulnerabilities:
          max: {critical: 0, high: 0}
        signers: [ci, alice]
    """,
    )
    digest = _promote_alpine(world)
    ref = f"{world.target.host}/approved/alpine:3.20"

    code, out = _verify(world, ref)
    assert code == 1 and (out["signed_by"], out["missing"]) == (["ci"], ["alice"]), out
    text = world.syncer("verify", ref)
    assert "missing:  alice" in text.stdout and "syncer sign" in text.stdout

    # The pipeline's key is not alice's.
    wrong = world.syncer("sign", ref, "--key", str(world.key), "--signer", "alice")
    assert wrong.returncode == 2
    assert "the key does not match" in wrong.stderr and "signers/alice.pub" in wrong.stderr

    proc = world.syncer("sign", ref, "--key", "alice.key")
    assert proc.returncode == 0, proc.stderr
    assert f"alice signed {world.target.host}/approved/alpine@{digest}" in proc.stdout
    assert PASSPHRASE not in proc.stdout + proc.stderr

    code, out = _verify(world, ref)
    assert code == 0 and out["signed_by"] == ["ci", "alice"], out
    assert world.digest_at(world.target, "approved/alpine", "3.20") == digest, "signing changes no digest"
    rec = world.record("alpine", "3.20")
    assert rec.signatures == ["alice", "ci"]
    assert (rec.events[-1].event, rec.events[-1].detail) == ("signed", f"alice signed {digest}")
    page = (world.reports / "images" / "alpine.md").read_text()  # the tag rows are on the image page
    row = next(line for line in page.splitlines() if line.startswith("| [`3.20`]"))
    assert "alice" in row, row

    before = world.tree()
    again = world.syncer("sign", ref, "--key", "alice.key", "--signer", "alice", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["added"] is False
    assert world.tree() == before, "signing twice changes nothing"
    with RegistryClient(world.target.host, tls_verify=False) as client:
        assert len(signatures.read_signatures(client, "approved/alpine", digest)) == 2


def test_sign_refuses_quarantine_unknown_keys_and_wrong_passphrases(world):
    # All refused before the registry is asked anything.
    _catalog_alpine(world)
    stranger = cosign.generate_keypair(PASSPHRASE.encode())
    (world.root / "stranger.key").write_bytes(stranger.private_pem)
    q = world.syncer("sign", "quarantine/alpine:3.20", "--key", "ci.key")
    assert q.returncode == 2 and "only approved images are signed" in q.stderr
    unknown = world.syncer("sign", "approved/alpine:3.20", "--key", "stranger.key")
    assert unknown.returncode == 2 and "matches no public key" in unknown.stderr
    world.env["SYNCER_SIGNING_PASSPHRASE"] = "not the passphrase"
    wrong = world.syncer("sign", "approved/alpine:3.20", "--key", "ci.key")
    assert wrong.returncode == 1 and "wrong passphrase" in wrong.stderr
    assert "not the passphrase" not in wrong.stderr


# --- REF parsing, without a registry -------------------------------------------------------

SETTINGS = Settings(
    target=Target(registry="registry.example.com:5000"),
    replicas=(RegistryEndpoint("registry.eu.example.com"),),
)


@pytest.mark.parametrize(
    "text, registry, repository, name, tag, digest",
    [
        (
            "registry.example.com:5000/approved/nginx:1.27.3",
            "registry.example.com:5000",
            "approved/nginx",
            "nginx",
            "1.27.3",
            None,
        ),
        (
            "approved/bitnami/redis:7",
            "registry.example.com:5000",
            "approved/bitnami/redis",
            "bitnami/redis",
            "7",
            None,
        ),
        (
            "registry.eu.example.com/approved/nginx@sha256:" + "a" * 64,
            "registry.eu.example.com",
            "approved/nginx",
            "nginx",
            None,
            "sha256:" + "a" * 64,
        ),
        ("quarantine/nginx:1", "registry.example.com:5000", "quarantine/nginx", "nginx", "1", None),
    ],
)
def test_trusted_refs_parse_against_settings(text, registry, repository, name, tag, digest):
    ref = parse_trusted_ref(text, SETTINGS)
    assert (ref.registry, ref.repository, ref.name, ref.tag, ref.digest) == (
        registry,
        repository,
        name,
        tag,
        digest,
    )
    assert ref.identity == f"{registry}/{repository}"
    assert ref.approved is repository.startswith("approved/")


@pytest.mark.parametrize(
    "text, message",
    [
        ("registry.example.com/approved/nginx:1", "not an image of the trusted registry"),
        ("nginx:1", "not an image of the trusted registry"),
        ("registry.example.com:5000/other/nginx:1", "outside approved/ and quarantine/"),
        ("registry.example.com:5000/approved/nginx", "neither a tag nor a digest"),
        ("approved/nginx@sha512:" + "a" * 128, "sha256"),
        ("approved/Nginx:1", "lowercase"),
        ("approved/../etc:1", "not a valid image reference"),
    ],
)
def test_refs_outside_the_trusted_registry_are_usage_errors(text, message):
    with pytest.raises(UsageError, match=message):
        parse_trusted_ref(text, SETTINGS)
