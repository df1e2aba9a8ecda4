"""Print the registry's `auth: token` configuration for `syncer auth-server`.

Writes into --out the token signing key (token-signing.key, mode 0600) and its self-signed
certificate (token-signing.crt) unless they are there already or given with --key/--cert,
and the certificate bundle the registry trusts (token-bundle.pem). Then prints the `auth`
section of a CNCF distribution config.yml (realm, service, issuer, rootcertbundle) and the
auth-server command line that matches it. Running it again reuses the key, so the registry
keeps trusting tokens already configured.

--auth-url is where clients reach the token service (https://auth.example.com, or the
registry's proxy path); the realm is that URL with /token appended unless it ends in /token.
--service is the name the registry announces (use its host name); tokens are only valid for it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from syncer.access.authserver import DEFAULT_ISSUER, TOKEN_PATH, load_signer
from syncer.errors import UsageError

KEY_FILE, CERT_FILE, BUNDLE_FILE = "token-signing.key", "token-signing.crt", "token-bundle.pem"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--auth-url",
        required=True,
        metavar="URL",
        help="the token service as clients reach it, e.g. https://auth.example.com",
    )
    parser.add_argument(
        "--service",
        required=True,
        metavar="NAME",
        help="the registry's service name (auth.token.service), e.g. its host",
    )
    parser.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="directory for the key, certificate and bundle"
    )
    parser.add_argument("--issuer", default=DEFAULT_ISSUER, help="the tokens' issuer (default: %(default)s)")
    parser.add_argument(
        "--key",
        type=Path,
        metavar="KEY.pem",
        help="use this signing key instead of generating one (with --cert)",
    )
    parser.add_argument(
        "--cert", type=Path, metavar="CERT.pem", help="the certificate (chain, leaf first) of --key"
    )
    parser.add_argument(
        "--days",
        type=int,
        default=730,
        help="validity of a generated certificate (default: %(default)s); "
        "tokens stop working when it expires",
    )


def realm_of(auth_url: str) -> str:
    parts = urlsplit(auth_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"--auth-url {auth_url!r} is not an http(s) URL; e.g. --auth-url https://auth.example.com"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise UsageError(
            f"--auth-url {auth_url!r} must not carry a query, fragment or "
            "credentials; give the plain URL of the token service"
        )
    base = auth_url.rstrip("/")
    return base if base.endswith(TOKEN_PATH) else base + TOKEN_PATH


def generate(key_file: Path, cert_file: Path, days: int, common_name: str) -> None:
    """An EC P-256 key (ES256, the registry's fastest check) and a self-signed certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Created 0600 from the start: the key is never readable by others, even briefly.
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def run(args: argparse.Namespace) -> int:
    realm = realm_of(args.auth_url)
    if (args.key is None) != (args.cert is None):
        raise UsageError("--key and --cert go together; pass both or neither")
    if args.days < 1:
        raise UsageError(f"--days {args.days} must be at least 1")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.key is not None:
        key_file, cert_file = args.key.resolve(), args.cert.resolve()
    else:
        key_file, cert_file = (out / KEY_FILE).resolve(), (out / CERT_FILE).resolve()
        if key_file.exists() != cert_file.exists():
            present = key_file if key_file.exists() else cert_file
            raise UsageError(
                f"{present} exists without its pair; remove it to generate a new "
                "key, or pass --key and --cert"
            )
        if key_file.exists():
            print(f"syncer access-config: reusing {key_file}", file=sys.stderr)
        else:
            generate(key_file, cert_file, args.days, f"{args.issuer} token signer")
            print(f"syncer access-config: wrote {key_file} (mode 0600) and {cert_file}", file=sys.stderr)
    load_signer(key_file, cert_file)  # the pair must be usable before a registry trusts it
    bundle = (out / BUNDLE_FILE).resolve()
    # The certificates themselves are the trust anchor: the registry accepts a token whose
    # x5c chain ends in one of them.
    bundle.write_bytes(cert_file.read_bytes())

    section = {"realm": realm, "service": args.service, "issuer": args.issuer, "rootcertbundle": str(bundle)}
    if args.json:
        print(
            json.dumps({"auth": {"token": section}, "key": str(key_file), "cert": str(cert_file)}, indent=2)
        )
        return 0
    # JSON strings are YAML scalars that need no quoting rules of their own.
    print("# distribution config.yml: accept tokens from syncer auth-server")
    print("auth:\n  token:")
    for name, value in section.items():
        print(f"    {name}: {json.dumps(value)}")
    print("# the token service for it (bind behind the registry's TLS proxy):")
    print(
        f"#   syncer auth-server --listen 127.0.0.1:5001 --key {key_file} --cert {cert_file} "
        f"--issuer {args.issuer} --catalog {args.catalog} --users USERS.htpasswd "
        "--robots-env SYNCER_ROBOT"
    )
    if urlsplit(realm).scheme == "http" and urlsplit(realm).hostname not in ("127.0.0.1", "localhost"):
        print(
            "syncer access-config: warning: the realm is plain http; clients would send "
            "passwords unencrypted, use https",
            file=sys.stderr,
        )
    return 0
