"""Write a new encrypted signing key pair in cosign's format.

The private key goes to ./NAME.key (or --key-out PATH), mode 0600, encrypted with a
passphrase; it is never written inside the catalog directory. The public half goes to
<catalog>/signers/NAME.pub, where policies (signers: [NAME]) and verifiers find it.

The passphrase comes from the environment variable named by signing.passphrase_env in
settings.yaml (default SYNCER_SIGNING_PASSPHRASE), or, on a terminal, from a prompt asked
twice. It is never taken from the command line, where it would end up in shell history.

Existing files are never replaced unless --force is given: replacing a key invalidates every
signature it made.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from syncer.catalog import display_path, is_valid_signer_name
from syncer.core import cosign
from syncer.core.model import Signing
from syncer.errors import UsageError

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name", metavar="NAME", help="signer name: letters, digits, '.', '_' and '-' (e.g. ci, alice)"
    )
    parser.add_argument(
        "--key-out",
        metavar="PATH",
        help="where to write the encrypted private key (default: ./NAME.key); "
        "must be outside the catalog directory",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an existing key pair (signatures made with it stop verifying)",
    )


def run(args: argparse.Namespace) -> int:
    if not is_valid_signer_name(args.name):
        raise UsageError(
            f"signer name '{args.name}' is invalid: use letters, digits, '.', '_' "
            "and '-', starting with a letter or digit"
        )
    catalog = Path(args.catalog)
    if not catalog.is_dir():
        raise UsageError(
            f"catalog directory '{args.catalog}' not found; run syncer from the "
            "repository root or pass --catalog DIR"
        )
    key_path = Path(args.key_out) if args.key_out else Path(f"{args.name}.key")
    pub_path = catalog / "signers" / f"{args.name}.pub"
    _check_key_path(key_path, catalog)
    if not args.force:
        for existing in (key_path, pub_path):
            if existing.exists() or existing.is_symlink():
                raise UsageError(
                    f"{display_path(existing)} already exists; keep using that key, "
                    "or pass --force to replace the pair (its signatures stop "
                    "verifying)"
                )
    signing = _signing_settings(catalog)
    pair = cosign.generate_keypair(_passphrase(signing.passphrase_env))
    _write_private(key_path, pair.private_pem)
    pub_path.parent.mkdir(parents=True, exist_ok=True)
    pub_path.write_bytes(pair.public_pem)

    key_id = cosign.key_id(cosign.load_public_key(pair.public_pem))
    if args.json:
        json.dump(
            {
                "name": args.name,
                "private_key": display_path(key_path),
                "public_key": display_path(pub_path),
                "key_id": key_id,
            },
            sys.stdout,
        )
        print()
    else:
        print(_summary(args.name, display_path(key_path), display_path(pub_path), key_id, signing))
    return 0


def _check_key_path(key_path: Path, catalog: Path) -> None:
    # resolve() follows symlinks and '..', so neither can smuggle the key into the catalog.
    resolved = key_path.resolve()
    if resolved.is_relative_to(catalog.resolve()):
        raise UsageError(
            f"refusing to write the private key to {display_path(key_path)}: it is "
            f"inside the catalog directory '{display_path(catalog)}', which is "
            "committed to git; choose a path outside it with --key-out"
        )
    if resolved.is_dir():
        raise UsageError(f"{display_path(key_path)} is a directory; give --key-out a file path")
    if not resolved.parent.is_dir():
        raise UsageError(
            f"directory {display_path(key_path.parent)} does not exist; create it or choose another --key-out"
        )


def _signing_settings(catalog: Path) -> Signing:
    """The ``signing:`` block of settings.yaml, or the defaults when there is none yet.

    Only this block is read, so that a new key can be made while the rest of the catalog is
    still incomplete (a policy naming this signer fails validation until its .pub exists).
    """
    path = catalog / "settings.yaml"
    if not path.is_file():
        return Signing()
    try:
        document = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except (YAMLError, UnicodeDecodeError, ValueError):
        raise UsageError(
            f"{display_path(path)} cannot be read; run 'syncer validate' to see what is wrong with it"
        ) from None
    block = document.get("signing") if isinstance(document, dict) else None
    if not isinstance(block, dict):
        return Signing()
    defaults = Signing()
    values = {key: block.get(key, getattr(defaults, key)) for key in ("signer", "key_env", "passphrase_env")}
    # Values are not echoed: a secret pasted where a variable name belongs must not be shown.
    if not all(isinstance(value, str) and value for value in values.values()) or not all(
        _ENV_NAME.fullmatch(values[key]) for key in ("key_env", "passphrase_env")
    ):
        raise UsageError(
            f"{display_path(path)}: the signing block is invalid; run "
            "'syncer validate' to see what is wrong with it"
        )
    return Signing(**values)


def _passphrase(env_name: str) -> bytes:
    value = os.environ.get(env_name)
    if value is not None:
        if not value:
            raise UsageError(
                f"environment variable {env_name} is empty; set it to the passphrase "
                "that will protect the new key"
            )
        return value.encode()
    if not sys.stdin.isatty():
        raise UsageError(
            f"no passphrase: set the environment variable {env_name} (named by "
            "signing.passphrase_env in settings.yaml), or run on a terminal to be "
            "asked for one"
        )
    first = getpass.getpass("Passphrase for the new private key: ")
    if not first:
        raise UsageError("an empty passphrase would leave the key unprotected; run again and type one")
    if getpass.getpass("Same passphrase again: ") != first:
        raise UsageError("the two passphrases differ; run again")
    return first.encode()


def _write_private(path: Path, data: bytes) -> None:
    # A fresh file created 0600 from the start (never a moment world-readable), and an old
    # file or symlink there is replaced rather than written through.
    if path.is_symlink() or path.exists():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fd, 0o600)  # the umask may have removed owner bits
        fh.write(data)


def _summary(name: str, key: str, pub: str, key_id: str, signing: Signing) -> str:
    lines = [
        f"Private key written to {key} (encrypted, mode 0600); never commit it.",
        f"Public key written to {pub} (key id {key_id}).",
    ]
    if name == signing.signer:
        lines.append(
            f"Next: commit {pub}; store the content of {key} as a CI secret whose file "
            f"path the sync job exports as {signing.key_env}, and the passphrase as "
            f"{signing.passphrase_env}; then delete {key} from this machine."
        )
    else:
        lines.append(
            f"Next: commit {pub} and add '{name}' to the signers of the policies that "
            f"need it; keep {key} and its passphrase safe for "
            f"'syncer sign REF --key {key}'."
        )
    return "\n".join(lines)
