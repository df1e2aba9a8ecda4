"""The token service of the trusted registry: Docker registry token authentication, with the
permissions of the catalog's ``access.yaml``.

A registry in ``auth: token`` mode sends clients here (``GET /token?service=…&scope=…`` with
HTTP Basic credentials). Users come from a bcrypt htpasswd file, robots (the pipeline) from
environment variables; each requested scope gets exactly the actions ``syncer.access`` allows.
The answer is a short-lived JWT signed with our key, carrying the certificate chain in its
``x5c`` header so that the registry can check it against its ``rootcertbundle``.

The catalog and the users file are reloaded when they change on disk; a version that does
not load is logged and the last good one stays in force, so that a broken commit never
opens or closes the registry by accident. Every decision is logged as one line, never with
a password or a token.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import re
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qs

import bcrypt
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from syncer.access import granted_actions
from syncer.errors import SyncerError, UsageError
from syncer.model import AccessGroup

log = logging.getLogger(__name__)

DEFAULT_ISSUER = "syncer"
DEFAULT_LIFETIME = 300  # seconds; clients fetch a new token per scope anyway
TOKEN_PATH = "/token"
BASIC_REALM = "syncer registry"
MIN_ROBOT_SECRET = 16

_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_BCRYPT_PREFIXES = ("$2y$", "$2b$", "$2a$")
_USER_RE = re.compile(r"[^\s:]+")
# Values logged as they are unless they could break the one-line key=value format.
_PLAIN_LOG_VALUE = re.compile(r"[\x21\x23-\x7e]+")


# --- scopes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """One ``type:name:actions`` resource scope of the token specification."""

    type: str
    name: str
    actions: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


def parse_scopes(values: Iterable[str]) -> list[Scope]:
    """The scopes of the ``scope`` query parameters (repeated, or space-separated in one).

    Raises ValueError naming a scope that is not ``type:name:actions``.
    """
    scopes = []
    for value in values:
        for text in value.split():
            kind, _, rest = text.partition(":")
            # Names may contain ':' in other resource types; the actions are after the last one.
            name, _, actions = rest.rpartition(":")
            if not kind or not name or not actions:
                raise ValueError(f"scope '{text}' is not TYPE:NAME:ACTIONS "
                                 "(e.g. repository:approved/nginx:pull)")
            scopes.append(Scope(kind, name, tuple(a for a in actions.split(",") if a)))
    return scopes


def grant(user: str | None, scope: Scope, groups: Sequence[AccessGroup]) -> tuple[str, ...]:
    """The actions of ``scope`` the token may carry; only repositories are ever granted."""
    if scope.type != "repository":
        return ()
    return granted_actions(user, scope.name, scope.actions, groups)


# --- signing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenSigner:
    """The private key and its certificate chain (leaf first) that tokens are signed with."""

    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = field(repr=False)
    algorithm: str
    x5c: tuple[str, ...]  # base64 DER, as the JWS x5c header wants


def load_signer(key_path: Path, cert_path: Path) -> TokenSigner:
    """Reads a PEM private key and the PEM certificate chain whose first certificate is its own."""
    try:
        key_data, cert_data = key_path.read_bytes(), cert_path.read_bytes()
    except OSError as err:
        raise UsageError(f"cannot read {err.filename} ({err.strerror}); pass the files that "
                         "`syncer access-config` wrote") from None
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except TypeError:
        raise UsageError(f"signing key {key_path} is encrypted; the token service needs it "
                         "unencrypted (mode 0600)") from None
    except ValueError:
        raise UsageError(f"{key_path} is not a PEM private key; pass the signing key that "
                         "`syncer access-config` wrote") from None
    try:
        certs = x509.load_pem_x509_certificates(cert_data)
    except ValueError:
        raise UsageError(f"{cert_path} is not a PEM certificate; pass the certificate that "
                         "`syncer access-config` wrote") from None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in _EC_ALGORITHMS:
        algorithm = _EC_ALGORITHMS[key.curve.name]
    elif isinstance(key, rsa.RSAPrivateKey):
        algorithm = "RS256"
    else:
        raise UsageError(f"signing key {key_path} is neither RSA nor EC P-256/384/521, the "
                         "kinds a registry verifies; generate one with `syncer access-config`")
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if (certs[0].public_key().public_bytes(serialization.Encoding.DER, spki)
            != key.public_key().public_bytes(serialization.Encoding.DER, spki)):
        raise UsageError(f"the first certificate in {cert_path} is not for the key {key_path}; "
                         "pass the certificate made with that key")
    return TokenSigner(key, algorithm, tuple(
        base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in certs))


@dataclass(frozen=True)
class Token:
    text: str = field(repr=False)
    issued_at: datetime
    expires_in: int


def issue_token(signer: TokenSigner, *, issuer: str, service: str, subject: str,
                access: Mapping[Scope, tuple[str, ...]], now: datetime, lifetime: int) -> Token:
    """A registry JWT granting ``access`` (scope -> granted actions; empty grants left out)."""
    issued = int(now.timestamp())
    claims = {
        "iss": issuer, "sub": subject, "aud": service,
        "iat": issued, "nbf": issued, "exp": issued + lifetime,
        "jti": secrets.token_urlsafe(16),
        "access": [{"type": s.type, "name": s.name, "actions": list(actions)}
                   for s, actions in access.items() if actions],
    }
    text = jwt.encode(claims, signer.key, algorithm=signer.algorithm,
                      headers={"x5c": list(signer.x5c)})
    return Token(text, datetime.fromtimestamp(issued, timezone.utc), lifetime)


# --- accounts --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Accounts:
    """Who can log in: bcrypt hashes of htpasswd users, and robots' secrets."""

    users: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    robots: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        both = sorted(set(self.users) & set(self.robots))
        if both:
            raise UsageError(f"{', '.join(both)} is both a user in the users file and a robot; "
                             "rename one of them")

    def check(self, user: str, password: str) -> str | None:
        """None when ``password`` is right for ``user``; otherwise why not, for the log."""
        if user in self.robots:
            good = hmac.compare_digest(self.robots[user].encode(), password.encode())
            return None if good else "wrong robot secret"
        stored = self.users.get(user)
        # An unknown user costs a bcrypt check too, so that timing does not tell who exists.
        good = bcrypt.checkpw(password.encode(), stored or _dummy_hash(self.users))
        if stored is None:
            return "unknown user"
        return None if good else "wrong password"


def _dummy_hash(users: Mapping[str, bytes]) -> bytes:
    cost = int(next(iter(users.values())).split(b"$")[2]) if users else 5
    return _DUMMY_HASHES.setdefault(cost, bcrypt.hashpw(secrets.token_bytes(16),
                                                        bcrypt.gensalt(rounds=cost)))


_DUMMY_HASHES: dict[int, bytes] = {}


def parse_htpasswd(text: str, file: str) -> dict[str, bytes]:
    """``user:$2y$…`` lines as ``htpasswd -B`` writes them; other hash schemes are refused."""
    users: dict[str, bytes] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not _USER_RE.fullmatch(user):
            raise UsageError(f"{file}:{number}: expected USER:HASH; create entries with "
                             "`htpasswd -B FILE USER`")
        if not hashed.startswith(_BCRYPT_PREFIXES) or len(hashed) != 60:
            raise UsageError(f"{file}:{number}: user '{user}' has a hash that is not bcrypt; "
                             f"set it again with `htpasswd -B {file} {user}`")
        if user in users:
            raise UsageError(f"{file}:{number}: user '{user}' appears twice; keep one line")
        users[user] = hashed.encode()
    return users


def load_users(path: Path) -> dict[str, bytes]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8"
        raise UsageError(f"cannot read the users file {path} ({reason})") from None
    return parse_htpasswd(text, str(path))


def robots_from_env(variables: Sequence[str], environ: Mapping[str, str]) -> dict[str, str]:
    """Robots from variables holding ``NAME:SECRET`` each; the secret is never echoed."""
    robots: dict[str, str] = {}
    for var in variables:
        value = environ.get(var)
        if not value:
            raise UsageError(f"environment variable {var} (--robots-env) is not set or empty; "
                             "set it to ROBOT_NAME:SECRET")
        name, sep, secret = value.partition(":")
        if not sep or not _USER_RE.fullmatch(name):
            raise UsageError(f"environment variable {var} (--robots-env) is not "
                             "ROBOT_NAME:SECRET; set it in that form")
        if len(secret) < MIN_ROBOT_SECRET:
            raise UsageError(f"the secret in {var} (robot '{name}') is shorter than "
                             f"{MIN_ROBOT_SECRET} characters; use a random one "
                             "(openssl rand -hex 24)")
        if name in robots:
            raise UsageError(f"robot '{name}' is defined twice (--robots-env {var}); "
                             "give each robot one variable")
        robots[name] = secret
    return robots


# --- reloading -------------------------------------------------------------------------------

T = TypeVar("T")


def tree_fingerprint(path: Path) -> tuple[tuple[str, int, int, int], ...]:
    """What changes when any file under ``path`` (or ``path`` itself) is written, added or
    removed: names, inodes (git and editors replace files), modification times and sizes."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    found = []
    for file in files:
        try:
            stat = file.stat()
        except OSError:
            continue  # removed between listing and stat: the next request sees the new tree
        found.append((str(file), stat.st_ino, stat.st_mtime_ns, stat.st_size))
    return tuple(found)


class Reloading(Generic[T]):
    """A value loaded from files and loaded again when their fingerprint changes.

    The first load must succeed. A later failure is logged once per change and the last good
    value stays in force until a version that loads appears.
    """

    def __init__(self, what: str, fingerprint: Callable[[], object], load: Callable[[], T]):
        self._what, self._fingerprint, self._load = what, fingerprint, load
        self._seen = fingerprint()
        self._value = load()
        self._lock = threading.Lock()

    def current(self) -> T:
        seen = self._fingerprint()
        if seen != self._seen:
            with self._lock:
                if seen != self._seen:
                    self._seen = seen
                    self._reload()
        return self._value

    def _reload(self) -> None:
        try:
            self._value = self._load()
        except SyncerError as err:
            detail = "; ".join(str(err).splitlines())
            log.error("%s event=reload-failed what=%s kept=previous error=%s",
                      _now_text(), self._what, _log_value(detail))
            return
        log.info("%s event=reloaded what=%s", _now_text(), self._what)


# --- the HTTP service ------------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    status: str
    body: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = ()


class TokenService:
    """The WSGI application answering ``GET /token``."""

    def __init__(self, signer: TokenSigner, *, issuer: str, lifetime: int,
                 rules: Callable[[], Sequence[AccessGroup]], accounts: Callable[[], Accounts],
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self.signer, self.issuer, self.lifetime = signer, issuer, lifetime
        self.rules, self.accounts, self.clock = rules, accounts, clock

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        response = self.respond(environ)
        body = json.dumps(response.body).encode()
        start_response(response.status, [
            ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"), *response.headers])
        return [body]

    def respond(self, environ: Mapping[str, Any]) -> Response:
        if environ.get("PATH_INFO") != TOKEN_PATH:
            return _error("404 Not Found", "NOT_FOUND",
                          f"the token service answers on {TOKEN_PATH}")
        if environ.get("REQUEST_METHOD") != "GET":
            return Response("405 Method Not Allowed", _errors("UNSUPPORTED", "use GET"),
                            (("Allow", "GET"),))
        query = parse_qs(environ.get("QUERY_STRING", ""))
        service = query.get("service", [""])[0]
        if not service:
            return _error("400 Bad Request", "INVALID_REQUEST", "the service parameter is "
                          "missing; it is the registry's auth.token.service")
        try:
            scopes = parse_scopes(query.get("scope", []))
        except ValueError as err:
            return _error("400 Bad Request", "INVALID_SCOPE", str(err))
        now, client = self.clock(), environ.get("REMOTE_ADDR", "-")
        subject = self._authenticate(environ.get("HTTP_AUTHORIZATION"), now, client)
        if isinstance(subject, Response):
            return subject
        groups = self.rules()
        access = {scope: grant(subject, scope, groups) for scope in scopes}
        for scope, actions in access.items():
            _audit(now, "grant" if actions else "deny", subject, client,
                   scope=str(scope), granted=",".join(actions) or "-")
        if not scopes:
            _audit(now, "login", subject, client)
        token = issue_token(self.signer, issuer=self.issuer, service=service,
                            subject=subject or "", access=access, now=now,
                            lifetime=self.lifetime)
        issued = token.issued_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        return Response("200 OK", {"token": token.text, "access_token": token.text,
                                   "expires_in": token.expires_in, "issued_at": issued})

    def _authenticate(self, header: str | None, now: datetime,
                      client: str) -> str | None | Response:
        """The user name; None for a request without credentials; a 401 when refused."""
        user = _basic_user(header)
        if user is None:
            return None
        if isinstance(user, _Credentials):
            refusal = self.accounts().check(user.name, user.password)
            if refusal is None:
                return user.name
            _audit(now, "refused", user.name, client, reason=refusal)
            message = "incorrect username or password"
        else:
            _audit(now, "refused", None, client, reason="malformed Authorization header")
            message = "send credentials as HTTP Basic"
        return Response("401 Unauthorized", _errors("UNAUTHORIZED", message),
                        (("WWW-Authenticate", f'Basic realm="{BASIC_REALM}"'),))


@dataclass(frozen=True)
class _Credentials:
    name: str
    password: str = field(repr=False)


_MALFORMED = object()


def _basic_user(header: str | None) -> _Credentials | object | None:
    """The Basic credentials of ``header``; None without any; ``_MALFORMED`` otherwise."""
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return _MALFORMED
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return _MALFORMED
    name, sep, password = decoded.partition(":")
    return _Credentials(name, password) if sep and name else _MALFORMED


def _errors(code: str, message: str) -> dict[str, Any]:
    # The registry API's error shape, which docker, skopeo and our client all print.
    return {"errors": [{"code": code, "message": message}]}


def _error(status: str, code: str, message: str) -> Response:
    return Response(status, _errors(code, message))


def _now_text() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _log_value(value: str) -> str:
    return value if _PLAIN_LOG_VALUE.fullmatch(value) else json.dumps(value)


def _audit(now: datetime, event: str, user: str | None, client: str, **fields: str) -> None:
    parts = [now.strftime("%Y-%m-%dT%H:%M:%SZ"), f"event={event}",
             f"user={_log_value(user) if user is not None else '-'}",
             f"client={_log_value(client)}"]
    parts += [f"{key}={_log_value(value)}" for key, value in fields.items()]
    log.info(" ".join(parts))


def catalog_rules(root: Path) -> Reloading[tuple[AccessGroup, ...]]:
    """The access groups of the catalog at ``root``, reloaded when any catalog file changes.

    The whole catalog is loaded, as ``syncer validate`` checks it: a catalog that does not
    validate changes no permission.
    """
    from syncer.catalog import load_catalog

    return Reloading(f"catalog {root}", lambda: tree_fingerprint(root),
                     lambda: load_catalog(root).access)


def account_source(users_file: Path | None, robots: Mapping[str, str]) -> Reloading[Accounts]:
    """Users from ``users_file`` (reloaded when it changes) and the fixed ``robots``."""
    def load() -> Accounts:
        return Accounts(load_users(users_file) if users_file else {}, robots)

    fingerprint: Callable[[], object] = (
        (lambda: tree_fingerprint(users_file)) if users_file else (lambda: None))
    return Reloading(f"users file {users_file}", fingerprint, load)

