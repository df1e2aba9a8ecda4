"""syncer export-policy: containers-policy.json that real skopeo loads and applies, and a
Kyverno ClusterPolicy of the verifyImages shape, both deterministic."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from syncer.access import enforce
from syncer.catalog import load_catalog
from syncer.core import cosign
from syncer.stages import signatures
from syncer.tools.registry import RegistryClient
from tests.harness.images import alpine_files, build_image, push

REPLICA = "registry.eu.example.com"


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


@pytest.fixture(scope="module")
def keys() -> dict[str, bytes]:
    """name -> public PEM; made once, scrypt is deliberately slow."""
    return {name: cosign.generate_keypair(b"pw").public_pem for name in ("ci", "alice")}


def make_catalog(root: Path, registry: str, keys: dict[str, bytes], *, reverse: bool = False) -> Path:
    """nginx (policy default: ci), bitnami/redis (strict: ci and alice), busybox (open: no
    signers named, so the pipeline's own); ``reverse`` writes the same catalog in another order."""
    catalog = root / "catalog"
    _write(catalog, "settings.yaml", f"""
        target: {{registry: "{registry}", tls_verify: false}}
        replicas: [{{registry: {REPLICA}}}]
        signing: {{signer: ci}}
    """)
    for name, pem in keys.items():
        _write(catalog, f"signers/{name}.pub", pem.decode())
    _write(catalog, "policies/default.yaml", "signers: [ci]\n")
    _write(catalog, "policies/strict.yaml", "signers: [ci, alice]\n")
    _write(catalog, "policies/open.yaml", "signers: []\n")
    entries = [
        '  - {source: nginx, tags: ["1.27"]}\n',
        '  - {source: bitnami/redis, tags: ["7"], policy: strict}\n',
        '  - {source: busybox, tags: ["1"], policy: open}\n',
    ]
    if reverse:
        for i, entry in enumerate(reversed(entries)):
            _write(catalog, f"images/{i}.yaml", "images:\n" + entry)
    else:
        _write(catalog, "images/all.yaml", "images:\n" + "".join(entries))
    return catalog


def _b64(pem: bytes) -> str:
    return base64.b64encode(pem).decode()


def _sigstore(pem: bytes) -> dict:
    return {"type": "sigstoreSigned", "keyData": _b64(pem), "signedIdentity": {"type": "matchRepository"}}


def test_containers_policy_rejects_by_default_and_requires_each_policys_signers(tmp_path, keys):
    catalog = load_catalog(make_catalog(tmp_path, "registry.example.com", keys))
    text = enforce.containers_policy(catalog, "registry.example.com")
    assert json.loads(text) == {
        "default": [{"type": "reject"}],
        "transports": {"docker": {
            "registry.example.com/quarantine": [{"type": "reject"}],
            "registry.example.com/approved/bitnami/redis": [_sigstore(keys["ci"]), _sigstore(keys["alice"])],
            "registry.example.com/approved/busybox": [_sigstore(keys["ci"])],
            "registry.example.com/approved/nginx": [_sigstore(keys["ci"])],
        }},
    }
    assert "insecureAcceptAnything" not in text
    assert base64.b64decode(json.loads(text)["transports"]["docker"][
        "registry.example.com/approved/nginx"][0]["keyData"]) == keys["ci"]

    again = load_catalog(make_catalog(tmp_path / "other-order", "registry.example.com", keys, reverse=True))
    assert enforce.containers_policy(again, "registry.example.com") == text, "output depends on file order"


def test_kyverno_cluster_policy_has_the_verify_images_shape(tmp_path, keys):
    catalog = load_catalog(make_catalog(tmp_path, "registry.example.com", keys))
    text = enforce.kyverno_policy(catalog, REPLICA)
    doc = YAML(typ="safe").load(text)
    assert (doc["apiVersion"], doc["kind"], doc["metadata"]["name"]) == \
        ("kyverno.io/v1", "ClusterPolicy", "syncer-approved-images")
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
    spec = doc["spec"]
    assert (spec["validationFailureAction"], spec["background"], spec["failurePolicy"]) == \
        ("Enforce", False, "Fail")
    rules = {r["name"]: r for r in spec["rules"]}
    names = list(rules)
    # bitnami/redis had its '/' rewritten, so its rule name carries a hash of the real name.
    assert names[0].startswith("verify-bitnami-redis-") and len(names[0]) == len("verify-bitnami-redis-") + 8
    assert names[1:] == ["verify-busybox", "verify-nginx"]
    for rule in rules.values():
        assert set(rule) == {"name", "match", "verifyImages"}
        assert rule["match"] == {"any": [{"resources": {"kinds": ["Pod"]}}]}
        assert len(rule["name"]) <= 63
    [redis] = rules[names[0]]["verifyImages"]
    assert redis["imageReferences"] == [f"{REPLICA}/approved/bitnami/redis:*",
                                        f"{REPLICA}/approved/bitnami/redis@*"]
    assert (redis["type"], redis["required"], redis["mutateDigest"], redis["verifyDigest"]) == \
        ("Cosign", True, True, True)
    [attestor_set] = redis["attestors"]
    assert attestor_set["count"] == 2
    assert [e["keys"]["publicKeys"] for e in attestor_set["entries"]] == \
        [keys["ci"].decode(), keys["alice"].decode()]
    for entry in attestor_set["entries"]:
        assert set(entry) == {"keys"}
        assert set(entry["keys"]) == {"publicKeys", "signatureAlgorithm", "rekor", "ctlog"}
        # No transparency log: syncer's signatures are plain key signatures.
        assert entry["keys"]["rekor"]["ignoreTlog"] is True and entry["keys"]["ctlog"] == {"ignoreSCT": True}
    [nginx] = rules["verify-nginx"]["verifyImages"]
    assert nginx["attestors"][0]["count"] == 1
    assert [e["keys"]["publicKeys"] for e in nginx["attestors"][0]["entries"]] == [keys["ci"].decode()]
    assert enforce.kyverno_policy(catalog, REPLICA) == text


def test_rule_names_stay_distinct_and_short():
    long_name = "team/" + "x" * 80
    names = {enforce._rule_name(n) for n in ("a/b", "a-b", "a.b", long_name, long_name + "y")}
    assert len(names) == 5
    assert enforce._rule_name("a-b") == "verify-a-b"
    assert all(len(n) <= 63 for n in names)


def _syncer(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "syncer", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def test_cli_writes_only_on_change_and_refuses_unknown_registries(tmp_path, keys):
    make_catalog(tmp_path, "registry.example.com", keys)
    proc = _syncer("export-policy", "--format", "kyverno", "--registry", REPLICA, "--out", "k.yaml",
                   "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"format": "kyverno", "registry": REPLICA, "out": "k.yaml",
                                       "written": True, "images": 3}
    assert f"{REPLICA}/approved/nginx:*" in (tmp_path / "k.yaml").read_text()
    again = _syncer("export-policy", "--format", "kyverno", "--registry", REPLICA, "--out", "k.yaml",
                    cwd=tmp_path)
    assert again.returncode == 0 and "k.yaml unchanged" in again.stderr

    stdout = _syncer("export-policy", "--format", "containers", cwd=tmp_path)
    assert stdout.returncode == 0 and json.loads(stdout.stdout)["default"] == [{"type": "reject"}]

    bad = _syncer("export-policy", "--format", "containers", "--registry", "evil.example.com", cwd=tmp_path)
    assert bad.returncode == 2
    assert "evil.example.com is not named in settings.yaml" in bad.stderr and REPLICA in bad.stderr


@pytest.mark.e2e
def test_skopeo_loads_the_policy_and_routes_each_repository_to_its_requirement(tmp_path, keys, registry):
    """Debian's skopeo refuses sigstoreSigned requirements at verification time ("sigstore
    disabled"), so the outcome of a copy shows which requirement a repository got: reject,
    sigstoreSigned, or a parse error for a broken file."""
    ci = cosign.generate_keypair(b"pw")
    pub = {**keys, "ci": ci.public_pem}
    make_catalog(tmp_path, registry.host, pub)
    image = build_image(alpine_files((("musl", "1.2.5-r0", "musl"),)))
    digest = push(image, registry, "approved/nginx:1.27", tmp_path)
    push(image, registry, "quarantine/nginx:1.27", tmp_path)
    push(image, registry, "approved/unlisted:1", tmp_path)
    with RegistryClient(registry.host, tls_verify=False) as client:
        signatures.attach(client, "approved/nginx", digest, f"{registry.host}/approved/nginx",
                          cosign.load_private_key(ci.private_pem, b"pw"))
    proc = _syncer("export-policy", "--format", "containers", "--out", "policy.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    registries_d = tmp_path / "registries.d"
    registries_d.mkdir()
    (tmp_path / "out").mkdir()
    (registries_d / "default.yaml").write_text("default-docker:\n  use-sigstore-attachments: true\n")

    def copy(policy: Path, repository: str) -> subprocess.CompletedProcess:
        out = tmp_path / "out" / repository.replace("/", "_").replace(":", "_")
        return subprocess.run(
            ["skopeo", "--policy", str(policy), "--registries.d", str(registries_d), "copy",
             "--src-tls-verify=false", f"docker://{registry.host}/{repository}", f"dir:{out}"],
            capture_output=True, text=True, timeout=60)

    policy = tmp_path / "policy.json"
    for rejected in ("quarantine/nginx:1.27", "approved/unlisted:1"):
        result = copy(policy, rejected)
        assert result.returncode != 0
        assert "is rejected by policy" in result.stderr, (rejected, result.stderr)
    signed = copy(policy, "approved/nginx:1.27")
    # Either this skopeo verifies sigstore signatures (and accepts ci's), or it is Debian's,
    # which reaches the sigstoreSigned requirement and refuses to evaluate it.
    assert signed.returncode == 0 or "sigstore disabled" in signed.stderr, signed.stderr
    assert "rejected by policy" not in signed.stderr and "invalid policy" not in signed.stderr

    # The same document with one required field removed, and a truncated one, do not load.
    document = json.loads(policy.read_text())
    del document["transports"]["docker"][f"{registry.host}/approved/nginx"][0]["keyData"]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(document))
    result = copy(broken, "quarantine/nginx:1.27")
    assert result.returncode != 0 and "invalid policy" in result.stderr, result.stderr
    assert "keyPath and keyData" in result.stderr
    truncated = tmp_path / "truncated.json"
    truncated.write_text(policy.read_text()[:-20])
    result = copy(truncated, "quarantine/nginx:1.27")
    assert result.returncode != 0 and "invalid policy" in result.stderr, result.stderr
