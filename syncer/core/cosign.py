"""Cosign-format keys, simple-signing payloads and raw signatures, in Python.

Debian's skopeo is built without sigstore support, so the pipeline signs and verifies itself.
Everything here follows what cosign reads and writes, so that ``cosign verify --key`` accepts
our signatures and ``syncer`` accepts keys made by ``cosign generate-key-pair``:

- private key: PEM ``ENCRYPTED COSIGN PRIVATE KEY`` (``ENCRYPTED SIGSTORE PRIVATE KEY`` is read
  too) whose body is go-securesystemslib's ``encrypted`` JSON: scrypt derives a 32-byte key
  from the passphrase, NaCl secretbox seals the PKCS#8 DER of an ECDSA P-256 key;
- public key: PEM ``PUBLIC KEY`` (SubjectPublicKeyInfo);
- payload: the simple-signing JSON cosign signs, byte for byte as Go's encoding/json writes it;
- signature: base64 of the DER ECDSA P-256 / SHA-256 signature over the payload bytes.

No network and no files: callers pass bytes in and get bytes or typed values out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from syncer.core import refs
from syncer.errors import SigningError

COSIGN_PRIVATE_PEM = "ENCRYPTED COSIGN PRIVATE KEY"
SIGSTORE_PRIVATE_PEM = "ENCRYPTED SIGSTORE PRIVATE KEY"
PUBLIC_PEM = "PUBLIC KEY"
PAYLOAD_TYPE = "cosign container image signature"

# We write the older COSIGN label with the "legacy" scrypt cost: every cosign release reads
# that combination, while only newer ones read the SIGSTORE label or N=2^16.
_WRITE_PARAMS = {"N": 32768, "r": 8, "p": 1}
# go-securesystemslib refuses any other parameters so that a tampered key file cannot make
# decryption take unbounded time or memory; so do we.
_ACCEPTED_PARAMS = ({"N": 32768, "r": 8, "p": 1}, {"N": 65536, "r": 8, "p": 1}, {"N": 131072, "r": 8, "p": 1})
_SALT_SIZE = 32
_KEY_SIZE = 32

_PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)


@dataclass(frozen=True)
class KeyPair:
    private_pem: bytes  # encrypted; safe to store as a CI secret, never in the catalog
    public_pem: bytes


@dataclass(frozen=True)
class PublicKey:
    key: ec.EllipticCurvePublicKey

    @property
    def pem(self) -> bytes:
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


@dataclass(frozen=True)
class PrivateKey:
    key: ec.EllipticCurvePrivateKey

    def __repr__(self) -> str:  # keep key material out of logs and tracebacks
        return f"PrivateKey({key_id(self.public_key)})"

    @property
    def public_key(self) -> PublicKey:
        return PublicKey(self.key.public_key())


@dataclass(frozen=True)
class Payload:
    docker_reference: str
    digest: str
    type: str
    optional: dict[str, Any] | None


# --- keys ----------------------------------------------------------------------------------


def generate_keypair(passphrase: bytes) -> KeyPair:
    """A new ECDSA P-256 key pair, the private half encrypted as cosign does."""
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return KeyPair(
        private_pem=_pem(COSIGN_PRIVATE_PEM, _encrypt(der, passphrase)),
        public_pem=PublicKey(private.public_key()).pem,
    )


def load_private_key(pem: bytes, passphrase: bytes, *, source: str = "the private key") -> PrivateKey:
    """Decrypts an encrypted cosign private key; ``source`` names it in error messages."""
    label, body = _unpem(pem, source)
    if label not in (COSIGN_PRIVATE_PEM, SIGSTORE_PRIVATE_PEM):
        raise SigningError(
            f"{source}: PEM type '{label}' is not supported; expected '{COSIGN_PRIVATE_PEM}' "
            f"or '{SIGSTORE_PRIVATE_PEM}' (made by 'syncer keygen' or 'cosign generate-key-pair')"
        )
    der = _decrypt(body, passphrase, source)
    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, UnsupportedAlgorithm):
        raise SigningError(
            f"{source}: the decrypted key is not a PKCS#8 private key; create a new one with 'syncer keygen'"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SigningError(
            f"{source}: {_describe(key)} keys are not supported; syncer signs "
            "with ECDSA P-256 keys (cosign's default): create one with 'syncer keygen'"
        )
    return PrivateKey(key)


def load_public_key(pem: bytes, *, source: str = "the public key") -> PublicKey:
    label, _ = _unpem(pem, source)
    if label != PUBLIC_PEM:
        raise SigningError(
            f"{source}: PEM type '{label}' is not a public key; expected "
            f"'{PUBLIC_PEM}' (the .pub file written by 'syncer keygen' or cosign)"
        )
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm):
        raise SigningError(
            f"{source}: not a readable PEM public key; replace it with the .pub "
            "file written by 'syncer keygen' or cosign"
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SigningError(
            f"{source}: {_describe(key)} keys are not supported; syncer verifies "
            "ECDSA P-256 keys (cosign's default)"
        )
    return PublicKey(key)


def key_id(public_key: PublicKey) -> str:
    """A short, stable fingerprint for messages: the start of SHA-256 over the DER public key."""
    der = public_key.key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:16]


def _describe(key: object) -> str:
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return f"ECDSA {key.curve.name}"
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return f"RSA-{key.key_size}"
    return type(key).__name__


def _encrypt(plaintext: bytes, passphrase: bytes) -> bytes:
    import nacl.secret  # here and in _decrypt: a run that signs nothing spares its import

    salt = os.urandom(_SALT_SIZE)
    nonce = os.urandom(nacl.secret.SecretBox.NONCE_SIZE)
    box = nacl.secret.SecretBox(_scrypt(passphrase, salt, _WRITE_PARAMS))
    sealed = box.encrypt(plaintext, nonce).ciphertext  # MAC || ciphertext, as Go's secretbox.Seal
    # Field order and compact separators as Go's json.Marshal of go-securesystemslib's struct.
    document = {
        "kdf": {"name": "scrypt", "params": dict(_WRITE_PARAMS), "salt": _b64(salt)},
        "cipher": {"name": "nacl/secretbox", "nonce": _b64(nonce)},
        "ciphertext": _b64(sealed),
    }
    return json.dumps(document, separators=(",", ":")).encode()


def _decrypt(body: bytes, passphrase: bytes, source: str) -> bytes:
    import nacl.exceptions
    import nacl.secret

    broken = SigningError(
        f"{source}: the encrypted key is damaged or not in cosign's format; "
        "restore it from its backup or create a new one with 'syncer keygen'"
    )
    try:
        document = json.loads(body)
        kdf, cipher = document["kdf"], document["cipher"]
        params = kdf["params"]
        if kdf["name"] != "scrypt" or cipher["name"] != "nacl/secretbox":
            raise SigningError(
                f"{source}: encrypted with {kdf['name']}/{cipher['name']}; only "
                "scrypt with nacl/secretbox (cosign's format) is supported"
            )
        if not any(params == accepted for accepted in _ACCEPTED_PARAMS):
            raise SigningError(
                f"{source}: unsupported scrypt parameters {params}; cosign keys "
                "use N=32768, 65536 or 131072 with r=8, p=1"
            )
        salt = base64.b64decode(kdf["salt"], validate=True)
        nonce = base64.b64decode(cipher["nonce"], validate=True)
        sealed = base64.b64decode(document["ciphertext"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise broken from None
    if len(nonce) != nacl.secret.SecretBox.NONCE_SIZE:
        raise broken
    try:
        return nacl.secret.SecretBox(_scrypt(passphrase, salt, params)).decrypt(sealed, nonce)
    except nacl.exceptions.CryptoError:
        raise SigningError(
            f"wrong passphrase for {source}: it could not be decrypted; supply "
            "the passphrase the key was created with"
        ) from None


def _scrypt(passphrase: bytes, salt: bytes, params: dict[str, int]) -> bytes:
    n, r, p = params["N"], params["r"], params["p"]
    # hashlib's default 32 MiB ceiling is below what N=2^15, r=8 needs (128*r*N plus overhead).
    return hashlib.scrypt(
        passphrase, salt=salt, n=n, r=r, p=p, dklen=_KEY_SIZE, maxmem=256 * r * n + 1024 * 1024
    )


def _pem(label: str, body: bytes) -> bytes:
    encoded = base64.b64encode(body).decode()
    lines = [encoded[i : i + 64] for i in range(0, len(encoded), 64)]
    return (
        f"-----BEGIN {label}-----\n" + "".join(f"{line}\n" for line in lines) + f"-----END {label}-----\n"
    ).encode()


def _unpem(pem: bytes, source: str) -> tuple[str, bytes]:
    match = _PEM.search(pem)
    if not match:
        raise SigningError(
            f"{source}: no PEM block found; expected a key file written by 'syncer keygen' or cosign"
        )
    try:
        body = base64.b64decode(b"".join(match.group(2).split()), validate=True)
    except binascii.Error:
        raise SigningError(
            f"{source}: the PEM block is not valid base64; restore the file from its original"
        ) from None
    return match.group(1).decode(), body


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- payloads ------------------------------------------------------------------------------


def make_payload(docker_reference: str, digest: str, optional: dict[str, Any] | None = None) -> bytes:
    """The simple-signing payload for ``docker_reference`` (a repository: no tag, no digest)."""
    if not _is_repository_name(docker_reference):
        raise SigningError(
            f"cannot sign '{docker_reference}': the identity must be a repository "
            "name such as registry.example.com/approved/nginx, without tag or digest"
        )
    if not refs.is_sha256_digest(digest):
        raise SigningError(f"cannot sign digest '{digest}': expected sha256:<64 hex digits>")
    for key, value in (optional or {}).items():
        if not _plain_text(key) or not (value is None or isinstance(value, int) or _plain_text(value)):
            raise SigningError(
                f"cannot sign: optional field {key!r} must map text without "
                "control characters to such text, an integer, a boolean or null"
            )
    document = {
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest},
            "type": PAYLOAD_TYPE,
        },
        # Go marshals a map with sorted keys.
        "optional": None if optional is None else dict(sorted(optional.items())),
    }
    return _go_json(document)


def _is_repository_name(text: str) -> bool:
    """``[host[:port]/]path`` in distribution's grammar: what cosign signs as the identity
    (``Repository.Name()``), so no tag and no digest."""
    if len(text) > refs.NAME_MAX:
        return False
    host, _, path = text.partition("/")
    return refs.is_valid_repository_path(text) or (
        refs.is_valid_domain(host) and refs.is_valid_repository_path(path)
    )


def _plain_text(value: object) -> bool:
    # Control characters are where Python's and Go's JSON escapes differ (\b vs \u0008);
    # annotations have no use for them, so refusing them keeps the bytes identical.
    return isinstance(value, str) and not any(ord(c) < 0x20 for c in value) and _utf8(value)


def _utf8(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:  # lone surrogates, which Go would replace with U+FFFD
        return False
    return True


def _go_json(value: Any) -> bytes:
    """JSON as Go's encoding/json writes it: compact, raw UTF-8, HTML-sensitive runes escaped.

    The escaped characters can only occur inside JSON strings, so replacing them in the
    serialised text changes nothing else.
    """
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for char, escape in (
        ("&", "\\u0026"),
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escape)
    return text.encode()


def parse_payload(data: bytes) -> Payload:
    """Reads a simple-signing payload, refusing anything cosign would not have written."""
    try:
        document = json.loads(data, object_pairs_hook=_no_duplicates)
    except (ValueError, UnicodeDecodeError) as err:
        raise SigningError(
            f"signature payload is not valid JSON ({err}); the signature is corrupt: re-sign the image"
        ) from None
    top = _object(document, "payload", required={"critical"}, allowed={"critical", "optional"})
    critical = _object(top["critical"], "critical", required={"identity", "image", "type"})
    identity = _object(critical["identity"], "critical.identity", required={"docker-reference"})
    image = _object(critical["image"], "critical.image", required={"docker-manifest-digest"})
    reference, digest, kind = (
        identity["docker-reference"],
        image["docker-manifest-digest"],
        critical["type"],
    )
    if kind != PAYLOAD_TYPE:
        raise SigningError(
            f"signature payload has type {kind!r}, not {PAYLOAD_TYPE!r}; it is not a cosign image signature"
        )
    if not isinstance(reference, str) or not reference:
        raise SigningError("signature payload: critical.identity.docker-reference must be a non-empty string")
    # Registries address manifests by sha256, so a payload naming anything else cannot match.
    if not isinstance(digest, str) or not refs.is_sha256_digest(digest):
        raise SigningError(
            f"signature payload: critical.image.docker-manifest-digest {digest!r} is not a sha256 digest"
        )
    optional = top.get("optional")
    if optional is not None and not isinstance(optional, dict):
        raise SigningError("signature payload: optional must be an object or null")
    return Payload(docker_reference=reference, digest=digest, type=kind, optional=optional)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two parsers may keep different copies of a duplicated key; refuse the ambiguity.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _object(value: Any, where: str, *, required: set[str], allowed: set[str] | None = None) -> dict:
    if not isinstance(value, dict):
        raise SigningError(f"signature payload: {where} must be an object")
    missing = required - value.keys()
    extra = value.keys() - (allowed or required)
    if missing or extra:
        problems = ([f"missing {', '.join(sorted(missing))}"] if missing else []) + (
            [f"unexpected {', '.join(sorted(extra))}"] if extra else []
        )
        raise SigningError(f"signature payload: {where}: {'; '.join(problems)}")
    return value


# --- signatures ----------------------------------------------------------------------------


def sign(private_key: PrivateKey, payload: bytes) -> str:
    """Base64 of the DER ECDSA signature over ``payload``, as cosign's annotation holds it."""
    return _b64(private_key.key.sign(payload, ec.ECDSA(hashes.SHA256())))


def verify(public_key: PublicKey, payload: bytes, signature_b64: str) -> bool:
    # Go's base64 decoder skips line breaks, and `cosign attach signature` stores whatever
    # `base64` printed, wrapped lines included; anything else must be canonical base64.
    unwrapped = signature_b64.replace("\r", "").replace("\n", "")
    try:
        signature = base64.b64decode(unwrapped, validate=True)
        public_key.key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    except (ValueError, InvalidSignature):  # binascii.Error is a ValueError
        return False
    return True
