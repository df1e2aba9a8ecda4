"""Serve registry tokens with the permissions of the catalog's access.yaml.

Implements the Docker registry token specification (GET /token?service=…&scope=…) for a
registry configured with `auth: token` (see `syncer access-config`). Users log in with the
passwords of a bcrypt htpasswd file (--users; `htpasswd -B`), robots such as the pipeline
with secrets from environment variables (--robots-env VAR, each VAR holding NAME:SECRET).
Each requested scope is granted only as far as the groups of access.yaml allow.

The catalog (--catalog) and the users file are reloaded when they change; a version that
does not validate is logged and the previous rules stay in force. One line per decision
goes to stderr: time, event, user, client address, scope, granted actions. Passwords and
tokens never do.

The service speaks plain HTTP: bind it to 127.0.0.1 behind the TLS-terminating proxy that
serves the registry, since clients send their passwords to it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from waitress import create_server

from syncer.authserver import (
    DEFAULT_ISSUER,
    DEFAULT_LIFETIME,
    TOKEN_PATH,
    TokenService,
    account_source,
    catalog_rules,
    load_signer,
    robots_from_env,
)
from syncer.errors import UsageError

MIN_LIFETIME, MAX_LIFETIME = 30, 3600
WORKER_THREADS = 4


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", required=True, metavar="HOST:PORT",
                        help="address to serve on, e.g. 127.0.0.1:5001 (port 0: any free port)")
    parser.add_argument("--key", required=True, type=Path, metavar="KEY.pem",
                        help="private key tokens are signed with (from syncer access-config)")
    parser.add_argument("--cert", required=True, type=Path, metavar="CERT.pem",
                        help="certificate (chain) of --key, sent in each token's x5c header")
    parser.add_argument("--users", type=Path, metavar="FILE",
                        help="bcrypt htpasswd file (htpasswd -B); reloaded when it changes")
    parser.add_argument("--robots-env", action="extend", nargs="+", default=[], metavar="VAR",
                        help="environment variables holding ROBOT_NAME:SECRET (repeatable)")
    parser.add_argument("--issuer", default=DEFAULT_ISSUER,
                        help="the iss claim; must equal auth.token.issuer of the registry "
                             "(default: %(default)s)")
    parser.add_argument("--token-lifetime", type=int, default=DEFAULT_LIFETIME, metavar="SECONDS",
                        help=f"token lifetime, {MIN_LIFETIME}..{MAX_LIFETIME} "
                             "(default: %(default)s)")


def _listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--listen {text!r} is not HOST:PORT; e.g. --listen 127.0.0.1:5001")
    return host.strip("[]"), int(port)


def run(args: argparse.Namespace) -> int:
    host, port = _listen_address(args.listen)
    if not MIN_LIFETIME <= args.token_lifetime <= MAX_LIFETIME:
        raise UsageError(f"--token-lifetime {args.token_lifetime} is outside "
                         f"{MIN_LIFETIME}..{MAX_LIFETIME} seconds")
    signer = load_signer(args.key, args.cert)
    accounts = account_source(args.users, robots_from_env(args.robots_env, os.environ))
    rules = catalog_rules(Path(args.catalog))  # raises CatalogError: exit 2 before serving

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    logging.getLogger("waitress").setLevel(logging.WARNING)
    app = TokenService(signer, issuer=args.issuer, lifetime=args.token_lifetime,
                       rules=rules.current, accounts=accounts.current)
    server = create_server(app, host=host, port=port, threads=WORKER_THREADS,
                           ident="syncer-auth-server")
    current = accounts.current()
    # Tests and operators read the port from this line when --listen asked for port 0.
    print(f"syncer auth-server: listening on http://{host}:{server.effective_port}{TOKEN_PATH} "
          f"(issuer {args.issuer}, catalog {args.catalog}: {len(rules.current())} groups, "
          f"{len(current.users)} users, {len(current.robots)} robots)", file=sys.stderr,
          flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"syncer auth-server: warning: serving plain HTTP on {host}; put a TLS proxy in "
              "front, clients send their passwords here", file=sys.stderr, flush=True)
    try:
        server.run()
    finally:
        server.close()
    return 0
