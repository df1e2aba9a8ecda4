"""People's signatures follow the image (issue 17, item 6), through the real CLI, registries and
skopeo: a content administrator signs once, in the trusted registry; `syncer run` copies that
signature unchanged to every replica where the image is (at replication, and later for a
signature made after it); `syncer verify` on a replica accepts it as naming the trusted
registry, and the exported containers policy says so with `exactRepository`."""

from __future__ import annotations

import base64
import json

from syncer.core import cosign
from syncer.stages import signatures
from syncer.tools.registry import RegistryClient
from tests.harness.images import alpine_files, build_image
from tests.harness.skopeo_cli import copy_under_policy
from tests.harness.world import PASSPHRASE

CLEAN = (("musl", "1.2.5-r0", "musl"), ("busybox", "1.36.1-r29", "busybox"))


def _verify(world, registry) -> tuple[int, dict]:
    proc = world.syncer("verify", f"{registry.host}/approved/alpine:3.20", "--json")
    return proc.returncode, json.loads(proc.stdout) if proc.stdout else {"stderr": proc.stderr}


def _layers(registry, digest: str) -> list[signatures.SignatureLayer]:
    with RegistryClient(registry.host, tls_verify=False) as client:
        return signatures.read_signatures(client, "approved/alpine", digest)


def test_a_persons_signature_made_on_the_target_reaches_every_replica_and_verifies_there(
    world, registry_factory
):
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
    first = registry_factory(delete=True)
    world.replicas = [first]
    world.write_settings()
    world.db.write(())
    digest = world.push("library/alpine:3.20", build_image(alpine_files(CLEAN)))
    world.images("""
        images:
          - source: alpine
            tags: ["3.20"]
    """)
    world.run()
    code, out = _verify(world, first)
    assert code == 1 and out["missing"] == ["alice"], out
    advice = world.syncer("verify", f"{first.host}/approved/alpine:3.20").stdout
    assert f"'syncer sign {world.target.host}/approved/alpine@{digest} --key" in advice, advice

    # alice signs once, in the trusted registry; a signature of her own on a replica is refused.
    on_replica = world.syncer("sign", f"{first.host}/approved/alpine:3.20", "--key", "alice.key")
    assert on_replica.returncode == 2 and "is a replica" in on_replica.stderr, on_replica.stderr
    signed = world.syncer("sign", f"{world.target.host}/approved/alpine:3.20", "--key", "alice.key")
    assert signed.returncode == 0, signed.stderr
    target_layers = _layers(world.target, digest)
    assert len(target_layers) == 2

    world.run()
    rec = world.record("alpine", "3.20")
    identity = f"{world.target.host}/approved/alpine"
    assert (rec.events[-1].event, rec.events[-1].detail) == (
        "replicated",
        f"signature of alice on {digest} copied to {first.host} unchanged (it names {identity})",
    )
    # Unchanged: the very layer the target holds, payload and signature annotation.
    alices = [layer for layer in target_layers if layer in _layers(first, digest)]
    assert len(alices) == 1 and len(_layers(first, digest)) == 2
    code, out = _verify(world, first)
    assert code == 0 and out["signed_by"] == ["ci", "alice"], out
    assert out["identities"] == {"ci": f"{first.host}/approved/alpine", "alice": identity}
    text = world.syncer("verify", f"{first.host}/approved/alpine:3.20").stdout
    assert f"alice as {identity} (signed in the trusted registry, copied here" in text, text

    before = world.tree()
    again = world.run()
    assert "Nothing changed" in again.stdout and world.tree() == before

    # A replica added after alice signed gets her signature with the image.
    second = registry_factory(delete=True)
    world.replicas = [first, second]
    world.write_settings()
    world.run()
    code, out = _verify(world, second)
    assert code == 0 and out["signed_by"] == ["ci", "alice"], out
    details = [e.detail for e in world.record("alpine", "3.20").events[-2:]]
    assert details == [
        f"signature of alice on {digest} copied to {second.host} unchanged (it names {identity})",
        f"{digest} to {second.host}, signed by ci",
    ]

    # The replica's containers policy: ci under the replica's own name, alice under the target's.
    _check_replica_policy(world, first, alice.public_pem, identity)


def _check_replica_policy(world, replica, alice_pem: bytes, identity: str) -> None:
    out = world.root / "policy"
    out.mkdir()
    proc = world.syncer(
        "export-policy",
        "--format",
        "containers",
        "--registry",
        replica.host,
        "--out",
        str(out / "policy.json"),
    )
    assert proc.returncode == 0, proc.stderr
    policy = out / "policy.json"
    document = json.loads(policy.read_text())
    requirements = document["transports"]["docker"][f"{replica.host}/approved/alpine"]
    ci_pem = (world.catalog / "signers" / "ci.pub").read_bytes()
    # containers-policy.json(5): sigstoreSigned with keyData and a signedIdentity; a cosign
    # identity names a repository only, which matchRepository and exactRepository accept.
    assert requirements == [
        {
            "type": "sigstoreSigned",
            "keyData": base64.b64encode(ci_pem).decode(),
            "signedIdentity": {"type": "matchRepository"},
        },
        {
            "type": "sigstoreSigned",
            "keyData": base64.b64encode(alice_pem).decode(),
            "signedIdentity": {"type": "exactRepository", "dockerRepository": identity},
        },
    ]
    # Real skopeo parses the document strictly: the signed image reaches its sigstoreSigned
    # requirements (Debian's build then stops: "sigstore disabled"), and the same document
    # without exactRepository's dockerRepository is refused as invalid.
    copied = copy_under_policy(
        policy, out / "registries.d", f"{replica.host}/approved/alpine:3.20", out / "image"
    )
    assert copied.returncode == 0 or "sigstore disabled" in copied.stderr, copied.stderr
    assert "invalid policy" not in copied.stderr and "rejected by policy" not in copied.stderr
    del requirements[1]["signedIdentity"]["dockerRepository"]
    broken = out / "broken.json"
    broken.write_text(json.dumps(document))
    refused = copy_under_policy(
        broken, out / "registries.d", f"{replica.host}/approved/alpine:3.20", out / "image2"
    )
    assert refused.returncode != 0 and "invalid policy" in refused.stderr, refused.stderr
