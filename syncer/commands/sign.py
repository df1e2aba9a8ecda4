"""Add your signature to an approved image, without changing its digest.

A content administrator's approval: the signature goes next to the pipeline's in the image's
cosign `.sig` manifest, under the identity <registry as written in REF>/<repository>. REF is
written as for `syncer verify` ([REGISTRY/]approved/NAME:TAG or @sha256:…) and must be under
approved/. --key is the encrypted private key (from `syncer keygen NAME` or
`cosign generate-key-pair`); its public half must be catalog/signers/NAME.pub, where NAME is
--signer or, without it, the one signer whose key matches.

The passphrase comes from the environment variable named by signing.passphrase_env in
settings.yaml (default SYNCER_SIGNING_PASSPHRASE) or, on a terminal, from a prompt; never from
the command line. When REF is in the target registry and reports/records/NAME/TAG.yaml
records the signed digest as promoted, the signer is added to its signatures with a `signed`
event and the reports are regenerated. Signing twice changes nothing. People sign in the
target registry only: the next `syncer run` copies the signature to every replica.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path

from syncer.catalog import display_path, is_valid_signer_name, load_catalog
from syncer.core import cosign
from syncer.core.model import Catalog, Event
from syncer.core.trusted import TrustedRef, parse_trusted_ref
from syncer.errors import SigningError, UsageError
from syncer.stages import signatures
from syncer.stages.signatures import resolve_digest
from syncer.tools.endpoints import endpoint_for
from syncer.trail import report
from syncer.trail.ledger import Ledger, now_iso
from syncer.trail.lock import run_lock


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "ref", metavar="REF", help="approved image: [REGISTRY/]approved/NAME:TAG or @sha256:…"
    )
    parser.add_argument(
        "--key",
        required=True,
        metavar="PATH",
        help="your encrypted private key (syncer keygen NAME, or cosign's)",
    )
    parser.add_argument(
        "--signer",
        metavar="NAME",
        help="your signer name; its public key is catalog/signers/NAME.pub "
        "(default: the signer whose key matches)",
    )


def run(args: argparse.Namespace) -> int:
    catalog = load_catalog(args.catalog)
    ref = parse_trusted_ref(args.ref, catalog.settings)
    if not ref.approved:
        raise UsageError(
            f"{ref} is not under {catalog.settings.target.approved}/; only approved "
            "images are signed (a quarantined image is promoted by the pipeline)"
        )
    if args.signer is not None and not is_valid_signer_name(args.signer):
        raise UsageError(f"--signer '{args.signer}' is not a signer name (letters, digits, '.', '_' and '-')")
    key = _load_key(Path(args.key), catalog.settings.signing.passphrase_env)
    signer = signer_for_key(catalog, key.public_key, args.signer)
    target = catalog.settings.target.registry
    if ref.registry != target and signer != catalog.settings.signing.signer:
        raise UsageError(
            f"{ref.registry} is a replica: sign {target}/{ref.repository} instead; "
            "`syncer run` copies your signature, unchanged, to every replica where the image "
            "is, and their policies accept it there (docs/signing.md)"
        )
    with endpoint_for(catalog.settings, ref.registry).client() as client:
        digest = resolve_digest(client, ref, "signed")
        added = signatures.attach(client, ref.repository, digest, ref.identity, key)
    recorded: list[str] = []
    written: list[str] = []
    if ref.registry == catalog.settings.target.registry:
        with run_lock(args.reports):
            ledger = Ledger(args.reports)
            recorded = record_signature(ledger, ref, digest, signer)
            if recorded:
                written = report.regenerate(ledger, catalog, args.reports)
    if args.json:
        json.dump(
            {
                "signer": signer,
                "identity": ref.identity,
                "digest": digest,
                "added": added,
                "records": recorded,
                "written": written,
            },
            sys.stdout,
            indent=2,
        )
        print()
    else:
        subject = f"{ref.identity}@{digest}"
        print(f"{signer} signed {subject}" if added else f"{subject} already carries {signer}'s signature")
        for path in recorded:
            print(f"recorded in {path}")
    return 0


def signer_for_key(catalog: Catalog, public_key: cosign.PublicKey, name: str | None) -> str:
    """The catalog signer whose public key is ``public_key``: ``name``, checked, or the only match."""
    signers_dir = f"{catalog.root}/signers"
    if name is not None:
        pem = catalog.signers.get(name)
        if pem is None:
            raise UsageError(
                f"signer '{name}' has no public key {signers_dir}/{name}.pub; add it "
                f"(syncer keygen {name}) and commit it first"
            )
        if not _same_key(pem, public_key):
            raise UsageError(
                f"the key does not match {signers_dir}/{name}.pub; use the private "
                f"key of '{name}' or name the signer it belongs to with --signer"
            )
        return name
    matches = [n for n, pem in sorted(catalog.signers.items()) if _same_key(pem, public_key)]
    if not matches:
        raise UsageError(
            f"the key (id {cosign.key_id(public_key)}) matches no public key in "
            f"{signers_dir}/; commit its public half as {signers_dir}/NAME.pub "
            "first, so that verifiers know it"
        )
    if len(matches) > 1:
        raise UsageError(f"the key matches several signers ({', '.join(matches)}); choose one with --signer")
    return matches[0]


def record_signature(ledger: Ledger, ref: TrustedRef, digest: str, signer: str) -> list[str]:
    """Adds ``signer`` to the records that have ``digest`` promoted under REF's name (and tag,
    if REF has one); returns the record files changed."""
    if ref.tag is not None and ref.digest is None:
        found = ledger.load(ref.name, ref.tag)
        candidates = [found] if found is not None else []
    else:
        candidates = ledger.records_for(ref.name)
    changed = []
    for rec in candidates:
        if rec.promoted_digest != digest or signer in rec.signatures:
            continue
        rec.signatures = sorted({*rec.signatures, signer})
        rec.events.append(Event(at=now_iso(), event="signed", detail=f"{signer} signed {digest}"))
        if ledger.save(rec):
            changed.append(display_path(ledger.path_for(rec.name, rec.tag)))
    return changed


def _same_key(pem: str, public_key: cosign.PublicKey) -> bool:
    try:
        return cosign.load_public_key(pem.encode()).pem == public_key.pem
    except SigningError:  # a key syncer cannot use (RSA…) is not this key
        return False


def _load_key(path: Path, passphrase_env: str) -> cosign.PrivateKey:
    try:
        pem = path.read_bytes()
    except OSError as err:
        raise UsageError(
            f"cannot read the private key {display_path(path)} ({err.strerror}); check --key"
        ) from None
    return cosign.load_private_key(pem, _passphrase(passphrase_env, path), source=display_path(path))


def _passphrase(env_name: str, path: Path) -> bytes:
    value = os.environ.get(env_name)
    if value is not None:
        return value.encode()
    if not sys.stdin.isatty():
        raise UsageError(
            f"no passphrase for {display_path(path)}: set the environment variable "
            f"{env_name} (signing.passphrase_env in settings.yaml), or run on a "
            "terminal to be asked"
        )
    return getpass.getpass(f"Passphrase for {display_path(path)}: ").encode()
