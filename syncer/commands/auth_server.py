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

Failed logins make further attempts of that user, or from that client address, wait (429
with Retry-After; --user-login-failures, --client-login-failures, --login-lockout). Behind a
proxy, --trusted-proxy makes the address its X-Forwarded-For names the client. A users-file
entry with a bcrypt cost below 10 is warned about at start.

The service speaks plain HTTP: bind it to 127.0.0.1 behind the TLS-terminating proxy that
serves the registry, since clients send their passwords to it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from waitress.server import create_server  # where it is defined (the stubs omit the re-export)

from syncer.access.authserver import (
    DEFAULT_ISSUER,
    DEFAULT_LIFETIME,
    MIN_BCRYPT_COST,
    TOKEN_PATH,
    LoginThrottle,
    ThrottleSettings,
    TokenService,
    account_source,
    catalog_rules,
    load_signer,
    robots_from_env,
    weak_users,
)
from syncer.errors import UsageError

MIN_LIFETIME, MAX_LIFETIME = 30, 3600
WORKER_THREADS = 4


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        required=True,
        metavar="HOST:PORT",
        help="address to serve on, e.g. 127.0.0.1:5001 (port 0: any free port)",
    )
    parser.add_argument(
        "--key",
        required=True,
        type=Path,
        metavar="KEY.pem",
        help="private key tokens are signed with (from syncer access-config)",
    )
    parser.add_argument(
        "--cert",
        required=True,
        type=Path,
        metavar="CERT.pem",
        help="certificate (chain) of --key, sent in each token's x5c header",
    )
    parser.add_argument(
        "--users",
        type=Path,
        metavar="FILE",
        help="bcrypt htpasswd file (htpasswd -B); reloaded when it changes",
    )
    parser.add_argument(
        "--robots-env",
        action="extend",
        nargs="+",
        default=[],
        metavar="VAR",
        help="environment variables holding ROBOT_NAME:SECRET (repeatable)",
    )
    parser.add_argument(
        "--issuer",
        default=DEFAULT_ISSUER,
        help="the iss claim; must equal auth.token.issuer of the registry (default: %(default)s)",
    )
    parser.add_argument(
        "--token-lifetime",
        type=int,
        default=DEFAULT_LIFETIME,
        metavar="SECONDS",
        help=f"token lifetime, {MIN_LIFETIME}..{MAX_LIFETIME} (default: %(default)s)",
    )
    defaults = ThrottleSettings()
    parser.add_argument(
        "--user-login-failures",
        type=int,
        default=defaults.user_failures,
        metavar="N",
        help="failed logins of one user before that user's next ones wait (default: %(default)s)",
    )
    parser.add_argument(
        "--client-login-failures",
        type=int,
        default=defaults.client_failures,
        metavar="N",
        help="failed logins from one client address before its next ones wait (default: %(default)s)",
    )
    parser.add_argument(
        "--login-lockout",
        type=float,
        default=defaults.max_delay,
        metavar="SECONDS",
        help="the longest such a wait lasts; it starts at "
        f"{defaults.first_delay:g} s and doubles (default: %(default)s)",
    )
    parser.add_argument(
        "--trusted-proxy",
        metavar="ADDRESS",
        help="the address of the proxy in front; the client address is then "
        "the one its X-Forwarded-For header names",
    )


def _listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--listen {text!r} is not HOST:PORT; e.g. --listen 127.0.0.1:5001")
    return host.strip("[]"), int(port)


def run(args: argparse.Namespace) -> int:
    host, port = _listen_address(args.listen)
    if not MIN_LIFETIME <= args.token_lifetime <= MAX_LIFETIME:
        raise UsageError(
            f"--token-lifetime {args.token_lifetime} is outside {MIN_LIFETIME}..{MAX_LIFETIME} seconds"
        )
    throttle = LoginThrottle(
        ThrottleSettings(
            user_failures=args.user_login_failures,
            client_failures=args.client_login_failures,
            max_delay=args.login_lockout,
        )
    )
    signer = load_signer(args.key, args.cert)
    accounts = account_source(args.users, robots_from_env(args.robots_env, os.environ))
    rules = catalog_rules(Path(args.catalog))  # raises CatalogError: exit 2 before serving

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    logging.getLogger("waitress").setLevel(logging.WARNING)
    app = TokenService(
        signer,
        issuer=args.issuer,
        lifetime=args.token_lifetime,
        rules=rules.current,
        accounts=accounts.current,
        throttle=throttle,
    )
    proxy: dict[str, Any] = {}
    if args.trusted_proxy:
        # Waitress then puts the forwarded address in REMOTE_ADDR, and drops the header when
        # anyone else sends it.
        proxy = {
            "trusted_proxy": args.trusted_proxy,
            "trusted_proxy_count": 1,
            "trusted_proxy_headers": {"x-forwarded-for"},
            "clear_untrusted_proxy_headers": True,
        }
    server = create_server(
        app, host=host, port=port, threads=WORKER_THREADS, ident="syncer-auth-server", **proxy
    )
    current = accounts.current()
    bound = server.effective_port  # type: ignore[union-attr]  # set by every server; not in the stubs
    # Tests and operators read the port from this line when --listen asked for port 0.
    print(
        f"syncer auth-server: listening on http://{host}:{bound}{TOKEN_PATH} "
        f"(issuer {args.issuer}, catalog {args.catalog}: {len(rules.current())} groups, "
        f"{len(current.users)} users, {len(current.robots)} robots)",
        file=sys.stderr,
        flush=True,
    )
    weak = weak_users(current.users)
    if weak:
        listed = ", ".join(f"{user} ({cost})" for user, cost in weak.items())
        print(
            f"syncer auth-server: warning: {args.users}: bcrypt cost below {MIN_BCRYPT_COST} "
            f"for {listed}; set each again with `htpasswd -B -C {MIN_BCRYPT_COST} "
            f"{args.users} USER`",
            file=sys.stderr,
            flush=True,
        )
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"syncer auth-server: warning: serving plain HTTP on {host}; put a TLS proxy in "
            "front, clients send their passwords here",
            file=sys.stderr,
            flush=True,
        )
    try:
        server.run()
    finally:
        server.close()
    return 0
