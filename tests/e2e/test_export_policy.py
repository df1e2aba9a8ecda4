"""syncer export-policy: containers-policy.json that real skopeo loads and applies, and a
Kyverno ClusterPolicy of the verifyImages shape, both deterministic."""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml
from ruamel.yaml import YAML

from syncer.access import enforce
from syncer.catalog import load_catalog
from syncer.core import cosign
from syncer.stages import signatures
from syncer.tools.registry import RegistryClient
from tests.harness.images import alpine_files, build_image, push
from tests.harness.skopeo_cli import copy_under_policy

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
    _write(
        catalog,
        "settings.yaml",
        f"""
        target: {{registry: "{registry}", tls_verify: false}}
        replicas: [{{registry: {REPLICA}}}]
        signing: {{signer: ci}}
    """,
    )
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
        "transports": {
            "docker": {
                "registry.example.com/quarantine": [{"type": "reject"}],
                "registry.example.com/approved/bitnami/redis": [
                    _sigstore(keys["ci"]),
                    _sigstore(keys["alice"]),
                ],
                "registry.example.com/approved/busybox": [_sigstore(keys["ci"])],
                "registry.example.com/approved/nginx": [_sigstore(keys["ci"])],
            }
        },
    }
    assert "insecureAcceptAnything" not in text
    assert (
        base64.b64decode(
            json.loads(text)["transports"]["docker"]["registry.example.com/approved/nginx"][0]["keyData"]
        )
        == keys["ci"]
    )

    again = load_catalog(make_catalog(tmp_path / "other-order", "registry.example.com", keys, reverse=True))
    assert enforce.containers_policy(again, "registry.example.com") == text, "output depends on file order"


def test_a_replicas_containers_policy_takes_peoples_signatures_as_naming_the_target(tmp_path, keys):
    # People sign in the trusted registry; their signatures reach replicas unchanged. cosign
    # identities name a repository only, which containers/image's remapIdentity refuses
    # (it follows matchRepoDigestOrExact), so the target's repository is named exactly.
    catalog = load_catalog(make_catalog(tmp_path, "registry.example.com", keys))
    scopes = json.loads(enforce.containers_policy(catalog, REPLICA))["transports"]["docker"]
    assert scopes[f"{REPLICA}/approved/bitnami/redis"] == [
        _sigstore(keys["ci"]),
        {
            "type": "sigstoreSigned",
            "keyData": _b64(keys["alice"]),
            "signedIdentity": {
                "type": "exactRepository",
                "dockerRepository": "registry.example.com/approved/bitnami/redis",
            },
        },
    ]
    assert scopes[f"{REPLICA}/approved/nginx"] == [_sigstore(keys["ci"])]
    assert scopes[f"{REPLICA}/quarantine"] == [{"type": "reject"}]


def test_kyverno_cluster_policy_has_the_verify_images_shape(tmp_path, keys):
    catalog = load_catalog(make_catalog(tmp_path, "registry.example.com", keys))
    text = enforce.kyverno_policy(catalog, REPLICA)
    doc = YAML(typ="safe").load(text)
    assert (doc["apiVersion"], doc["kind"], doc["metadata"]["name"]) == (
        "kyverno.io/v1",
        "ClusterPolicy",
        "syncer-approved-images",
    )
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
    spec = doc["spec"]
    # Enforcement per verifyImages entry and the failure policy under webhookConfiguration:
    # Kyverno deprecates spec.validationFailureAction and spec.failurePolicy.
    assert set(spec) == {"background", "webhookConfiguration", "rules"}
    assert (spec["background"], spec["webhookConfiguration"]) == (False, {"failurePolicy": "Fail"})
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
    assert redis["imageReferences"] == [
        f"{REPLICA}/approved/bitnami/redis:*",
        f"{REPLICA}/approved/bitnami/redis@*",
    ]
    assert (redis["type"], redis["required"], redis["mutateDigest"], redis["verifyDigest"]) == (
        "Cosign",
        True,
        True,
        True,
    )
    assert redis["failureAction"] == "Enforce"
    [attestor_set] = redis["attestors"]
    assert attestor_set["count"] == 2
    assert [e["keys"]["publicKeys"] for e in attestor_set["entries"]] == [
        keys["ci"].decode(),
        keys["alice"].decode(),
    ]
    for entry in attestor_set["entries"]:
        assert set(entry) == {"keys"}
        # keys.signatureAlgorithm is deprecated (and sha256, cosign's, is the default).
        assert set(entry["keys"]) == {"publicKeys", "rekor", "ctlog"}
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
    return subprocess.run(
        [sys.executable, "-m", "syncer", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_cli_writes_only_on_change_and_refuses_unknown_registries(tmp_path, keys):
    make_catalog(tmp_path, "registry.example.com", keys)
    proc = _syncer(
        "export-policy",
        "--format",
        "kyverno",
        "--registry",
        REPLICA,
        "--out",
        "k.yaml",
        "--json",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "format": "kyverno",
        "registry": REPLICA,
        "out": "k.yaml",
        "written": True,
        "images": 3,
    }
    assert f"{REPLICA}/approved/nginx:*" in (tmp_path / "k.yaml").read_text()
    again = _syncer(
        "export-policy", "--format", "kyverno", "--registry", REPLICA, "--out", "k.yaml", cwd=tmp_path
    )
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
        signatures.attach(
            client,
            "approved/nginx",
            digest,
            f"{registry.host}/approved/nginx",
            cosign.load_private_key(ci.private_pem, b"pw"),
        )
    proc = _syncer("export-policy", "--format", "containers", "--out", "policy.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # export-policy wrote registries.d/syncer.yaml beside policy.json: the signature lookup
    # it turns on is what brings the signed image to its sigstoreSigned requirement.
    registries_d = tmp_path / "registries.d"
    (tmp_path / "out").mkdir()

    def copy(policy: Path, repository: str) -> subprocess.CompletedProcess:
        out = tmp_path / "out" / repository.replace("/", "_").replace(":", "_")
        return copy_under_policy(policy, registries_d, f"{registry.host}/{repository}", out)

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


def test_containers_policy_lets_a_nodes_own_images_through_only_where_allowed(tmp_path, keys):
    catalog = load_catalog(make_catalog(tmp_path, "registry.example.com", keys))
    vendor = cosign.generate_keypair(b"pw").public_pem.decode()
    text = enforce.containers_policy(
        catalog,
        "registry.example.com",
        (enforce.Allow("registry.k8s.io/pause"), enforce.Allow("quay.io/vendor", vendor)),
    )
    docker = json.loads(text)["transports"]["docker"]
    assert docker["registry.k8s.io/pause"] == [{"type": "insecureAcceptAnything"}]
    assert docker["quay.io/vendor"] == [
        {
            "type": "sigstoreSigned",
            "keyData": _b64(vendor.encode()),
            "signedIdentity": {"type": "matchRepository"},
        }
    ]
    assert json.loads(text)["default"] == [{"type": "reject"}]
    assert docker["registry.example.com/approved/nginx"] == [_sigstore(keys["ci"])]

    for scope, reason in (
        ("registry.example.com/approved", "the registry this policy is for"),
        ("registry.example.com", "the registry this policy is for"),
        ("docker://registry.k8s.io/pause", "not a containers-policy scope"),
        ("", "not a containers-policy scope"),
    ):
        assert reason in (enforce.allow_problem(scope, "registry.example.com") or ""), scope
        with pytest.raises(ValueError, match=reason):
            enforce.containers_policy(catalog, "registry.example.com", (enforce.Allow(scope),))


def test_registries_d_turns_on_sigstore_attachments_for_approved_of_every_registry(tmp_path, keys):
    catalog = load_catalog(make_catalog(tmp_path, "registry.example.com", keys))
    doc = YAML(typ="safe").load(enforce.registries_d(catalog))
    assert doc == {
        "docker": {
            "registry.example.com/approved": {"use-sigstore-attachments": True},
            f"{REPLICA}/approved": {"use-sigstore-attachments": True},
        }
    }


def test_cli_writes_the_registries_d_file_and_checks_allow(tmp_path, keys):
    make_catalog(tmp_path, "registry.example.com", keys)
    vendor = tmp_path / "vendor.pub"
    vendor.write_bytes(keys["alice"])
    proc = _syncer(
        "export-policy",
        "--format",
        "containers",
        "--out",
        "policy.json",
        "--json",
        "--allow",
        "registry.k8s.io/pause",
        "--allow",
        f"quay.io/vendor={vendor}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "format": "containers",
        "registry": "registry.example.com",
        "out": "policy.json",
        "written": True,
        "images": 3,
        "registries_d": {"path": "registries.d/syncer.yaml", "written": True},
    }
    assert (tmp_path / "registries.d" / "syncer.yaml").read_text() == enforce.registries_d(
        load_catalog(tmp_path / "catalog")
    )
    docker = json.loads((tmp_path / "policy.json").read_text())["transports"]["docker"]
    assert docker["registry.k8s.io/pause"] == [{"type": "insecureAcceptAnything"}]
    assert docker["quay.io/vendor"][0]["keyData"] == _b64(keys["alice"])

    again = _syncer(
        "export-policy",
        "--format",
        "containers",
        "--out",
        "policy.json",
        "--registries-d",
        "elsewhere.yaml",
        cwd=tmp_path,
    )
    assert again.returncode == 0, again.stderr
    assert "elsewhere.yaml written" in again.stderr and (tmp_path / "elsewhere.yaml").is_file()

    # To stdout, the registries.d file is written only where --registries-d says.
    printed = _syncer("export-policy", "--format", "containers", "--registries-d", "r.yaml", cwd=tmp_path)
    assert printed.returncode == 0 and json.loads(printed.stdout)["default"] == [{"type": "reject"}]
    assert "r.yaml written" in printed.stderr and (tmp_path / "r.yaml").is_file()
    refused = _syncer("export-policy", "--format", "containers", "--registries-d", "no/r.yaml", cwd=tmp_path)
    assert refused.returncode == 2 and refused.stdout == "", "a policy printed before the error"

    for args, message in (
        (["--allow", "registry.example.com/approved/x"], "the registry this policy is for"),
        (["--allow", f"quay.io/vendor={tmp_path / 'missing.pub'}"], "cannot read the key"),
        (["--allow", f"quay.io/vendor={tmp_path / 'catalog' / 'settings.yaml'}"], "not a PEM public key"),
        (["--registries-d", "no/such/dir/r.yaml"], "directory no/such/dir does not exist"),
    ):
        bad = _syncer("export-policy", "--format", "containers", "--out", "p2.json", *args, cwd=tmp_path)
        assert bad.returncode == 2 and message in bad.stderr, (args, bad.stderr)
    kyverno = _syncer(
        "export-policy", "--format", "kyverno", "--allow", "registry.k8s.io/pause", cwd=tmp_path
    )
    assert kyverno.returncode == 2 and "are for --format containers" in kyverno.stderr


def test_kyverno_ivp_has_one_policy_per_set_of_signers(tmp_path, keys):
    catalog = load_catalog(make_catalog(tmp_path, "registry.example.com", keys))
    text = enforce.kyverno_ivp(catalog, REPLICA)
    docs = list(YAML(typ="safe").load_all(text))
    assert [d["metadata"]["name"] for d in docs] == ["syncer-approved-ci", "syncer-approved-ci-alice"]
    for doc in docs:
        assert (doc["apiVersion"], doc["kind"]) == ("policies.kyverno.io/v1", "ImageValidatingPolicy")
        spec = doc["spec"]
        assert (spec["failurePolicy"], spec["validationActions"]) == ("Fail", ["Deny"])
        assert spec["validationConfigurations"] == {
            "mutateDigest": True,
            "verifyDigest": True,
            "required": True,
        }
        assert spec["matchConstraints"]["resourceRules"][0]["resources"] == ["pods"]
    ci, strict = (d["spec"] for d in docs)
    # busybox's policy names no signers, so the pipeline's own (ci) is required, as for nginx.
    assert [m["glob"] for m in ci["matchImageReferences"]] == [
        f"{REPLICA}/approved/busybox:*",
        f"{REPLICA}/approved/busybox@*",
        f"{REPLICA}/approved/nginx:*",
        f"{REPLICA}/approved/nginx@*",
    ]
    assert [m["glob"] for m in strict["matchImageReferences"]] == [
        f"{REPLICA}/approved/bitnami/redis:*",
        f"{REPLICA}/approved/bitnami/redis@*",
    ]
    assert [(a["name"], a["cosign"]["key"]["data"]) for a in strict["attestors"]] == [
        ("ci", keys["ci"].decode()),
        ("alice", keys["alice"].decode()),
    ]
    for attestor in strict["attestors"]:
        assert attestor["cosign"]["ctlog"] == {"insecureIgnoreTlog": True, "insecureIgnoreSCT": True}
    [validation] = strict["validations"]
    # Every image of the Pod that the globs select must verify with both attestors.
    assert validation["expression"] == (
        "(images.containers + images.initContainers + images.ephemeralContainers)"
        '.all(image, verifyImageSignatures(image, [attestors["ci"], attestors["alice"]]) == 2)'
    )
    assert enforce.kyverno_ivp(catalog, REPLICA) == text


KYVERNO_CRDS = Path(__file__).resolve().parents[1] / "data" / "kyverno"


def _crd_schema(file: str, version: str) -> dict:
    # libyaml: ruamel's pure-Python loader takes half a minute over these 1.4 MB.
    crd = yaml.load((KYVERNO_CRDS / file).read_text(), Loader=yaml.CSafeLoader)
    [served] = [v for v in crd["spec"]["versions"] if v["name"] == version]
    assert served["served"] and not served.get("deprecated"), f"{file} {version} is not served as current"
    return served["schema"]["openAPIV3Schema"]


def _deprecated_fields(value: object, schema: dict, path: str = "") -> list[str]:
    """The paths in ``value`` whose schema description says Deprecated."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            sub = schema.get("properties", {}).get(key, {})
            if "deprecated" in sub.get("description", "").lower():
                found.append(f"{path}.{key}")
            found += _deprecated_fields(item, sub, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _deprecated_fields(item, schema.get("items", {}), f"{path}[{i}]")
    return found


@pytest.mark.parametrize(
    "fmt, crd, version",
    [
        ("kyverno", "kyverno.io_clusterpolicies.yaml", "v1"),
        ("kyverno-ivp", "policies.kyverno.io_imagevalidatingpolicies.yaml", "v1"),
    ],
)
def test_kyverno_outputs_match_kyvernos_published_crd_schemas(tmp_path, keys, fmt, crd, version):
    """Validated against the openAPIV3Schema Kyverno publishes (tests/data/kyverno/README.md),
    and no field used is one the schema marks deprecated."""
    catalog = load_catalog(make_catalog(tmp_path, "registry.example.com", keys))
    render = {"kyverno": enforce.kyverno_policy, "kyverno-ivp": enforce.kyverno_ivp}[fmt]
    schema = _crd_schema(crd, version)
    docs = list(YAML(typ="safe").load_all(render(catalog, REPLICA)))
    assert docs
    validator = jsonschema.Draft7Validator(schema)
    for doc in docs:
        assert doc["apiVersion"].endswith(f"/{version}")
        errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
        assert errors == []
        assert _deprecated_fields(doc, schema) == []
    # The check has teeth: the fields syncer used to write are refused by it.
    old = {
        "spec": {
            "validationFailureAction": "Enforce",
            "failurePolicy": "Fail",
            "rules": [
                {"verifyImages": [{"attestors": [{"entries": [{"keys": {"signatureAlgorithm": "sha256"}}]}]}]}
            ],
        }
    }
    if fmt == "kyverno":
        assert _deprecated_fields(old, schema) == [
            ".spec.validationFailureAction",
            ".spec.failurePolicy",
            ".spec.rules[0].verifyImages[0].attestors[0].entries[0].keys.signatureAlgorithm",
        ]
    # And the schema check has teeth: a value outside an enum, a missing required field.
    broken = copy.deepcopy(docs[0])
    if fmt == "kyverno":
        broken["spec"]["rules"][0]["verifyImages"][0]["failureAction"] = "Deny"
    else:
        broken["spec"]["validationActions"] = ["Reject"]
        del broken["spec"]["attestors"][0]["name"]
    assert len(list(validator.iter_errors(broken))) == (1 if fmt == "kyverno" else 2)
