"""syncer.core.cosign: keys, payloads and signatures, against cosign's own vectors."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import nacl.secret
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from syncer.core import cosign
from syncer.errors import SigningError

VECTORS = Path(__file__).resolve().parents[1] / "data" / "cosign"
DIGEST = "sha256:" + "ab" * 32
REFERENCE = "registry.example.com/approved/nginx"


def vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


@pytest.fixture(scope="module")
def pair() -> cosign.KeyPair:
    return cosign.generate_keypair(b"correct horse")


@pytest.fixture(scope="module")
def private(pair: cosign.KeyPair) -> cosign.PrivateKey:
    return cosign.load_private_key(pair.private_pem, b"correct horse")


def pem_body(pem: bytes) -> dict:
    lines = pem.decode().strip().splitlines()
    return json.loads(base64.b64decode("".join(lines[1:-1])))


# --- keys we write -------------------------------------------------------------------------


def test_generated_key_signs_and_the_public_half_verifies(pair, private):
    payload = cosign.make_payload(REFERENCE, DIGEST)
    signature = cosign.sign(private, payload)
    public = cosign.load_public_key(pair.public_pem)
    assert cosign.verify(public, payload, signature)
    assert cosign.key_id(public) == cosign.key_id(private.public_key)


def test_generated_private_key_is_in_cosigns_encrypted_format(pair):
    pem = pair.private_pem.decode()
    assert pem.startswith("-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n")
    assert pem.endswith("-----END ENCRYPTED COSIGN PRIVATE KEY-----\n")
    assert all(len(line) <= 64 for line in pem.splitlines())
    document = pem_body(pair.private_pem)
    assert list(document) == ["kdf", "cipher", "ciphertext"]
    assert document["kdf"]["name"] == "scrypt"
    assert document["kdf"]["params"] == {"N": 32768, "r": 8, "p": 1}
    assert list(document["kdf"]["params"]) == ["N", "r", "p"]
    assert document["cipher"]["name"] == "nacl/secretbox"
    salt = base64.b64decode(document["kdf"]["salt"])
    nonce = base64.b64decode(document["cipher"]["nonce"])
    assert (len(salt), len(nonce)) == (32, 24)
    # Decrypt by the published recipe, independently of syncer.core.cosign: scrypt, then secretbox
    # over MAC||ciphertext, giving PKCS#8 DER of a P-256 key.
    key = hashlib.scrypt(b"correct horse", salt=salt, n=32768, r=8, p=1, dklen=32, maxmem=64 * 1024 * 1024)
    der = nacl.secret.SecretBox(key).decrypt(base64.b64decode(document["ciphertext"]), nonce)
    private = serialization.load_der_private_key(der, None)
    assert isinstance(private.curve, ec.SECP256R1)
    # SEQUENCE (long-form length) then INTEGER 0: PKCS#8's version, where SEC1 has 1.
    assert der[0] == 0x30 and der[3:6] == b"\x02\x01\x00"


def test_generated_public_key_is_a_pkix_pem(pair):
    assert pair.public_pem.startswith(b"-----BEGIN PUBLIC KEY-----\n")
    assert isinstance(serialization.load_pem_public_key(pair.public_pem), ec.EllipticCurvePublicKey)


def test_each_generated_key_is_new():
    first, second = cosign.generate_keypair(b"x"), cosign.generate_keypair(b"x")
    assert first.public_pem != second.public_pem
    assert pem_body(first.private_pem)["kdf"]["salt"] != pem_body(second.private_pem)["kdf"]["salt"]


def test_wrong_passphrase_is_refused_without_revealing_it(pair):
    with pytest.raises(SigningError) as caught:
        cosign.load_private_key(pair.private_pem, b"Tr0ub4dor&3", source="ci.key")
    message = str(caught.value)
    assert message.startswith("wrong passphrase for ci.key")
    assert "Tr0ub4dor" not in message and "correct horse" not in message


def test_private_key_repr_shows_only_the_key_id(private):
    assert repr(private) == f"PrivateKey({cosign.key_id(private.public_key)})"


# --- keys cosign wrote ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, passphrase",
    [
        ("cosign-sigstore-hello.key", b"hello"),
        ("cosign-cosign-label-hello.key", b"hello"),
        ("cosign-sec1-ec-hello.key", b"hello"),
        ("cosign-generated-empty.key", b""),
    ],
)
def test_keys_written_by_cosign_load_and_sign(name, passphrase):
    key = cosign.load_private_key(vector(name), passphrase, source=name)
    payload = cosign.make_payload(REFERENCE, DIGEST)
    assert cosign.verify(key.public_key, payload, cosign.sign(key, payload))


def test_cosign_key_with_wrong_passphrase_is_refused():
    with pytest.raises(SigningError, match=r"^wrong passphrase for cosign.key"):
        cosign.load_private_key(vector("cosign-sigstore-hello.key"), b"hullo", source="cosign.key")


# --- refusing what is not a usable key -----------------------------------------------------


def test_unsupported_pem_type_names_the_expected_types(pair):
    unencrypted = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(SigningError, match=r"'PRIVATE KEY' is not supported.*ENCRYPTED COSIGN PRIVATE KEY"):
        cosign.load_private_key(unencrypted, b"", source="plain.key")
    with pytest.raises(SigningError, match="'PUBLIC KEY' is not supported"):
        cosign.load_private_key(pair.public_pem, b"", source="ci.pub")


def test_not_a_pem_file_is_refused():
    with pytest.raises(SigningError, match=r"^notes.txt: no PEM block found"):
        cosign.load_private_key(b"just some text", b"", source="notes.txt")


def test_tampered_scrypt_parameters_are_refused(pair):
    document = pem_body(pair.private_pem)
    document["kdf"]["params"]["N"] = 1 << 24  # 16 GiB of scrypt memory if we obeyed
    body = base64.b64encode(json.dumps(document).encode()).decode()
    pem = (
        f"-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n{body}\n-----END ENCRYPTED COSIGN PRIVATE KEY-----\n"
    )
    with pytest.raises(SigningError, match="unsupported scrypt parameters"):
        cosign.load_private_key(pem.encode(), b"correct horse")


def test_damaged_key_body_is_refused():
    body = base64.b64encode(b'{"kdf": 1}').decode()
    pem = (
        f"-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n{body}\n-----END ENCRYPTED COSIGN PRIVATE KEY-----\n"
    )
    with pytest.raises(SigningError, match="damaged or not in cosign's format"):
        cosign.load_private_key(pem.encode(), b"x")


def test_rsa_public_key_is_refused_clearly():
    pem = (
        rsa.generate_private_key(65537, 2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(SigningError, match=r"^bob.pub: RSA-2048 keys are not supported"):
        cosign.load_public_key(pem, source="bob.pub")


def test_other_curves_are_refused():
    pem = (
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(SigningError, match="ECDSA secp384r1 keys are not supported"):
        cosign.load_public_key(pem)


def test_a_private_key_where_a_public_key_belongs_is_refused(pair):
    with pytest.raises(SigningError, match="'ENCRYPTED COSIGN PRIVATE KEY' is not a public key"):
        cosign.load_public_key(pair.private_pem, source="catalog/signers/ci.pub")


# --- signatures cosign made ----------------------------------------------------------------


def fulcio_public_key() -> cosign.PublicKey:
    cert = x509.load_pem_x509_certificate(vector("containers-image-fulcio-cert.pem"))
    pem = cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return cosign.load_public_key(pem)


def test_signature_made_by_cosign_sign_verifies():
    payload = vector("containers-image-rekor-payload.json")
    signature = vector("containers-image-rekor-payload.sig").decode()
    assert cosign.verify(fulcio_public_key(), payload, signature)


@pytest.mark.parametrize(
    "payload, name",
    [(b"&", "containers-image-blob-ampersand.sig"), (b"{}", "containers-image-blob-braces.sig")],
)
def test_signatures_by_a_cosign_public_key_verify(payload, name):
    public = cosign.load_public_key(vector("containers-image-cosign.pub"))
    assert cosign.verify(public, payload, vector(name).decode())


def test_cosign_payload_parses_and_is_reproduced_byte_for_byte():
    original = vector("containers-image-rekor-payload.json")
    parsed = cosign.parse_payload(original)
    assert parsed == cosign.Payload(
        docker_reference="192.168.64.2:5000/test-repo-2100826901021538654/alpine",
        digest="sha256:fa93b01658e3a5a1686dc3ae55f170d8de487006fb53a28efcd12ab0710a2e5f",
        type="cosign container image signature",
        optional=None,
    )
    assert cosign.make_payload(parsed.docker_reference, parsed.digest) == original


def test_line_wrapped_base64_as_cosign_attach_stores_it_verifies():
    payload = vector("containers-image-rekor-payload.json")
    signature = vector("containers-image-rekor-payload.sig").decode()
    wrapped = signature[:76] + "\n" + signature[76:] + "\n"
    assert cosign.verify(fulcio_public_key(), payload, wrapped)


# --- tampering -----------------------------------------------------------------------------


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def test_flipping_any_payload_byte_breaks_the_signature(private):
    payload = cosign.make_payload(REFERENCE, DIGEST)
    signature = cosign.sign(private, payload)
    for index in (0, len(payload) // 2, payload.index(b"sha256:") + 10, len(payload) - 1):
        assert not cosign.verify(private.public_key, flip(payload, index), signature)


def test_flipping_any_signature_byte_breaks_it(private):
    payload = cosign.make_payload(REFERENCE, DIGEST)
    raw = base64.b64decode(cosign.sign(private, payload))
    for index in (0, 5, len(raw) // 2, len(raw) - 1):
        assert not cosign.verify(private.public_key, payload, base64.b64encode(flip(raw, index)).decode())


def test_flipped_cosign_vector_fails():
    payload = vector("containers-image-rekor-payload.json")
    raw = base64.b64decode(vector("containers-image-rekor-payload.sig"))
    assert not cosign.verify(fulcio_public_key(), flip(payload, 40), base64.b64encode(raw).decode())
    assert not cosign.verify(fulcio_public_key(), payload, base64.b64encode(flip(raw, 30)).decode())


def test_another_key_does_not_verify(private):
    payload = cosign.make_payload(REFERENCE, DIGEST)
    other = cosign.load_public_key(cosign.generate_keypair(b"y").public_pem)
    assert not cosign.verify(other, payload, cosign.sign(private, payload))


@pytest.mark.parametrize("signature", ["", "&&&", "not base64!", "MEUCIQ", "AAAA"])
def test_garbage_signatures_do_not_verify(private, signature):
    assert not cosign.verify(private.public_key, cosign.make_payload(REFERENCE, DIGEST), signature)


# --- payloads ------------------------------------------------------------------------------


def test_payload_matches_cosigns_field_order_and_encoding():
    assert cosign.make_payload("localhost:5000/approved/nginx", DIGEST) == (
        b'{"critical":{"identity":{"docker-reference":"localhost:5000/approved/nginx"},'
        b'"image":{"docker-manifest-digest":"' + DIGEST.encode() + b'"},'
        b'"type":"cosign container image signature"},"optional":null}'
    )


def test_optional_fields_are_sorted_and_escaped_as_go_does():
    payload = cosign.make_payload(REFERENCE, DIGEST, {"z": "a<b>&c", "a": 1, "m": True, "é": "ü"})
    assert payload.endswith('"optional":{"a":1,"m":true,"z":"a\\u003cb\\u003e\\u0026c","é":"ü"}}'.encode())
    assert cosign.parse_payload(payload).optional == {"a": 1, "m": True, "z": "a<b>&c", "é": "ü"}


def test_empty_optional_is_an_empty_object():
    assert cosign.make_payload(REFERENCE, DIGEST, {}).endswith(b'"optional":{}}')


@pytest.mark.parametrize(
    "reference",
    [
        "nginx",
        "library/nginx",
        "localhost:5000/approved/nginx",
        "[::1]:5000/approved/nginx",
        "Registry.Example.com/a/b-c__d.e",
    ],
)
def test_make_payload_accepts_repository_names(reference):
    assert cosign.parse_payload(cosign.make_payload(reference, DIGEST)).docker_reference == reference


@pytest.mark.parametrize(
    "reference",
    [
        "registry.example.com/approved/nginx:1.27",
        "nginx@sha256:" + "0" * 64,
        "Approved/Nginx",
        "",
        "registry.example.com/",
        "a//b",
    ],
)
def test_make_payload_refuses_references_that_are_not_repositories(reference):
    with pytest.raises(SigningError, match="must be a repository name"):
        cosign.make_payload(reference, DIGEST)


@pytest.mark.parametrize("digest", ["sha256:abc", "md5:" + "0" * 32, "SHA256:" + "ab" * 32, "ab" * 32])
def test_make_payload_refuses_malformed_digests(digest):
    with pytest.raises(SigningError, match="cannot sign digest"):
        cosign.make_payload(REFERENCE, digest)


@pytest.mark.parametrize("optional", [{"a": 1.5}, {"a": ["x"]}, {"a": "line\bbreak"}, {1: "x"}])
def test_make_payload_refuses_optional_values_go_would_encode_differently(optional):
    with pytest.raises(SigningError, match="optional field"):
        cosign.make_payload(REFERENCE, DIGEST, optional)


def good_payload() -> dict:
    return json.loads(cosign.make_payload(REFERENCE, DIGEST))


def mutated(change) -> bytes:
    document = good_payload()
    change(document)
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    "data, problem",
    [
        (b"", "not valid JSON"),
        (b"[1]", "payload must be an object"),
        (mutated(lambda d: d.pop("critical")), "missing critical"),
        (mutated(lambda d: d.update(extra=1)), "unexpected extra"),
        (mutated(lambda d: d.update(optional=1)), "optional must be an object or null"),
        (mutated(lambda d: d["critical"].pop("type")), "missing type"),
        (
            mutated(lambda d: d["critical"].update(type="atomic container signature")),
            "not a cosign image signature",
        ),
        (mutated(lambda d: d["critical"].update(extra=1)), "unexpected extra"),
        (mutated(lambda d: d["critical"].update(identity="x")), "critical.identity must be an object"),
        (mutated(lambda d: d["critical"]["identity"].update({"docker-reference": 1})), "non-empty string"),
        (
            mutated(lambda d: d["critical"]["image"].update({"docker-manifest-digest": "sha256:../.."})),
            "is not a sha256",
        ),
        (mutated(lambda d: d["critical"]["image"].update(extra=1)), "unexpected extra"),
        (b'{"critical":{},"critical":{}}', "duplicate key 'critical'"),
    ],
)
def test_parse_payload_is_strict(data, problem):
    with pytest.raises(SigningError, match=problem):
        cosign.parse_payload(data)


def test_parse_payload_accepts_a_missing_optional_as_cosign_does():
    document = good_payload()
    del document["optional"]
    assert cosign.parse_payload(json.dumps(document).encode()).optional is None


# --- key ids -------------------------------------------------------------------------------


def test_key_id_is_short_stable_and_distinct(pair):
    public = cosign.load_public_key(pair.public_pem)
    assert len(cosign.key_id(public)) == 16
    assert cosign.key_id(public) == cosign.key_id(cosign.load_public_key(pair.public_pem))
    assert cosign.key_id(public) != cosign.key_id(
        cosign.load_public_key(vector("containers-image-cosign.pub"))
    )
