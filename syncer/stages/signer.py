"""The pipeline's own signer: its key, read once from the environment named in settings."""

from __future__ import annotations

import os
import threading

from syncer.core import cosign
from syncer.core.model import Signing
from syncer.errors import SigningError
from syncer.stages import signatures
from syncer.tools.registry import RegistryClient


class Signer:
    """The pipeline's signer. Its key is decrypted on first use: scrypt is slow by design
    (~0.1 s) and a run with nothing to promote never needs the key."""

    def __init__(self, name: str, pem: bytes, passphrase: bytes, source: str):
        self.name = name
        self._pem, self._passphrase, self._source = pem, passphrase, source
        self._key: cosign.PrivateKey | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Signer({self.name!r}, key={self._source!r})"

    @property
    def key(self) -> cosign.PrivateKey:
        with self._lock:
            if self._key is None:
                self._key = cosign.load_private_key(self._pem, self._passphrase, source=self._source)
            return self._key

    def sign(self, client: RegistryClient, repository: str, digest: str, identity: str) -> None:
        """Attach this signer's signature for ``digest``; nothing is added if it is already there."""
        signatures.attach(client, repository, digest, identity, self.key)


def signer_from_env(signing: Signing) -> Signer:
    """Load the pipeline key named by ``signing.key_env``; errors say which variable to set."""
    path = os.environ.get(signing.key_env)
    if not path:
        raise SigningError(
            f"environment variable {signing.key_env} (settings signing.key_env) is not set; "
            f"point it at the encrypted private key of signer '{signing.signer}' "
            f"(make one with `syncer keygen {signing.signer}`)"
        )
    passphrase = os.environ.get(signing.passphrase_env)
    if passphrase is None:
        raise SigningError(
            f"environment variable {signing.passphrase_env} (settings signing.passphrase_env) is not set; "
            f"export the passphrase of {path}"
        )
    try:
        with open(path, "rb") as fh:
            pem = fh.read()
    except OSError as err:
        raise SigningError(
            f"cannot read the signing key {path} ({signing.key_env}): {err.strerror}"
        ) from None
    return Signer(signing.signer, pem, passphrase.encode(), path)
