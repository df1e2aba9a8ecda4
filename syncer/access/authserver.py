"""The token service of the trusted registry: Docker registry token authentication, with the
permissions of the catalog's ``access.yaml``.

A registry in ``auth: token`` mode sends clients here (``GET /token?service=…&scope=…`` with
HTTP Basic credentials). Users come from a bcrypt htpasswd file, robots (the pipeline) from
environment variables; each requested scope gets exactly the actions ``syncer.core.access`` allows.
The answer is a short-lived JWT signed with our key, carrying the certificate chain in its
``x5c`` header so that the registry can check it against its ``rootcertbundle``.

The catalog and the users file are reloaded when they change on disk; a version that does
not load is logged and the last good one stays in force, so that a broken commit never
opens or closes the registry by accident. Every decision is logged as one line, never with
a password or a token. Failed logins make further attempts of that user or address wait
(``LoginThrottle``), and an unknown user costs the bcrypt check a known one does.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import math
import re
import secrets
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qs

import bcrypt
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from syncer.core.access import granted_actions
from syncer.core.model import AccessGroup
from syncer.errors import SyncerError, UsageError

log = logging.getLogger(__name__)

DEFAULT_ISSUER = "syncer"
DEFAULT_LIFETIME = 300  # seconds; clients fetch a new token per scope anyway
TOKEN_PATH = "/token"
BASIC_REALM = "syncer registry"
MIN_ROBOT_SECRET = 16

# The cost docs/access.md asks for (htpasswd -B defaults to 5, about 3 ms a guess here).
MIN_BCRYPT_COST = 10
# bcrypt reads no further; the library refuses longer input rather than truncate silently.
BCRYPT_MAX_PASSWORD = 72
# Said to the client as well: it tells nothing about accounts, and saves a long search.
TOO_LONG_PASSWORD = f"password longer than {BCRYPT_MAX_PASSWORD} bytes"

_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
# $2y$ (htpasswd), $2b$, $2a$; the cost; 22 characters of salt and 31 of hash.
_BCRYPT_HASH = re.compile(r"\$2[aby]\$([0-9]{2})\$[./A-Za-z0-9]{53}")
_BCRYPT_COSTS = range(4, 32)  # what the algorithm defines
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
                raise ValueError(
                    f"scope '{text}' is not TYPE:NAME:ACTIONS (e.g. repository:approved/nginx:pull)"
                )
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
        raise UsageError(
            f"cannot read {err.filename} ({err.strerror}); pass the files that `syncer access-config` wrote"
        ) from None
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except TypeError:
        raise UsageError(
            f"signing key {key_path} is encrypted; the token service needs it unencrypted (mode 0600)"
        ) from None
    except ValueError:
        raise UsageError(
            f"{key_path} is not a PEM private key; pass the signing key that `syncer access-config` wrote"
        ) from None
    try:
        certs = x509.load_pem_x509_certificates(cert_data)
    except ValueError:
        raise UsageError(
            f"{cert_path} is not a PEM certificate; pass the certificate that `syncer access-config` wrote"
        ) from None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in _EC_ALGORITHMS:
        algorithm = _EC_ALGORITHMS[key.curve.name]
    elif isinstance(key, rsa.RSAPrivateKey):
        algorithm = "RS256"
    else:
        raise UsageError(
            f"signing key {key_path} is neither RSA nor EC P-256/384/521, the "
            "kinds a registry verifies; generate one with `syncer access-config`"
        )
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if certs[0].public_key().public_bytes(serialization.Encoding.DER, spki) != key.public_key().public_bytes(
        serialization.Encoding.DER, spki
    ):
        raise UsageError(
            f"the first certificate in {cert_path} is not for the key {key_path}; "
            "pass the certificate made with that key"
        )
    return TokenSigner(
        key,
        algorithm,
        tuple(base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in certs),
    )


@dataclass(frozen=True)
class Token:
    text: str = field(repr=False)
    issued_at: datetime
    expires_in: int


def issue_token(
    signer: TokenSigner,
    *,
    issuer: str,
    service: str,
    subject: str,
    access: Mapping[Scope, tuple[str, ...]],
    now: datetime,
    lifetime: int,
) -> Token:
    """A registry JWT granting ``access`` (scope -> granted actions; empty grants left out)."""
    issued = int(now.timestamp())
    claims = {
        "iss": issuer,
        "sub": subject,
        "aud": service,
        "iat": issued,
        "nbf": issued,
        "exp": issued + lifetime,
        "jti": secrets.token_urlsafe(16),
        "access": [
            {"type": s.type, "name": s.name, "actions": list(actions)}
            for s, actions in access.items()
            if actions
        ],
    }
    text = jwt.encode(claims, signer.key, algorithm=signer.algorithm, headers={"x5c": list(signer.x5c)})
    return Token(text, datetime.fromtimestamp(issued, UTC), lifetime)


# --- accounts --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Accounts:
    """Who can log in: bcrypt hashes of htpasswd users, and robots' secrets."""

    users: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    robots: Mapping[str, str] = field(default_factory=dict, repr=False)
    # What an unknown user's password is checked against, so that it costs what a user's does.
    _dummy: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        both = sorted(set(self.users) & set(self.robots))
        if both:
            raise UsageError(
                f"{', '.join(both)} is both a user in the users file and a robot; rename one of them"
            )
        object.__setattr__(self, "_dummy", _dummy_hash(_usual_cost(self.users)))

    def is_robot(self, user: str) -> bool:
        return user in self.robots

    def check(self, user: str, password: str) -> str | None:
        """None when ``password`` is right for ``user``; otherwise why not, for the log."""
        if user in self.robots:
            good = hmac.compare_digest(self.robots[user].encode(), password.encode())
            return None if good else "wrong robot secret"
        secret = password.encode()
        if len(secret) > BCRYPT_MAX_PASSWORD:
            # Refused before the lookup, so known and unknown users are refused alike.
            return TOO_LONG_PASSWORD
        stored = self.users.get(user)
        good = bcrypt.checkpw(secret, stored or self._dummy)
        if stored is None:
            return "unknown user"
        return None if good else "wrong password"


def bcrypt_cost(hashed: bytes) -> int:
    """The cost of a ``$2y$NN$…`` hash (``parse_htpasswd`` checked its form)."""
    return int(hashed[4:6])


def weak_users(users: Mapping[str, bytes], minimum: int = MIN_BCRYPT_COST) -> dict[str, int]:
    """The users whose hash has a cost below ``minimum``, with that cost."""
    return {
        user: bcrypt_cost(hashed) for user, hashed in sorted(users.items()) if bcrypt_cost(hashed) < minimum
    }


def _usual_cost(users: Mapping[str, bytes]) -> int:
    """The cost most users' hashes have (the higher one on a tie), so that an unknown user
    takes as long as most known ones; MIN_BCRYPT_COST without users."""
    costs = Counter(bcrypt_cost(hashed) for hashed in users.values())
    return max(costs, key=lambda cost: (costs[cost], cost)) if costs else MIN_BCRYPT_COST


def _dummy_hash(cost: int) -> bytes:
    # Made once per cost: making it costs a bcrypt round of its own, which the request of an
    # unknown user must not pay (it would then take twice as long as a known user's).
    with _DUMMY_LOCK:
        if cost not in _DUMMY_HASHES:
            _DUMMY_HASHES[cost] = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=cost))
        return _DUMMY_HASHES[cost]


_DUMMY_HASHES: dict[int, bytes] = {}
_DUMMY_LOCK = threading.Lock()


def parse_htpasswd(text: str, file: str) -> dict[str, bytes]:
    """``user:$2y$…`` lines as ``htpasswd -B`` writes them; other hash schemes are refused."""
    users: dict[str, bytes] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not _USER_RE.fullmatch(user):
            raise UsageError(
                f"{file}:{number}: expected USER:HASH; create entries with `htpasswd -B FILE USER`"
            )
        form = _BCRYPT_HASH.fullmatch(hashed)
        if form is None or int(form.group(1)) not in _BCRYPT_COSTS:
            raise UsageError(
                f"{file}:{number}: user '{user}' has a hash that is not bcrypt; "
                f"set it again with "
                f"`htpasswd -B -C {MIN_BCRYPT_COST} {file} {user}`"
            )
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
            raise UsageError(
                f"environment variable {var} (--robots-env) is not set or empty; set it to ROBOT_NAME:SECRET"
            )
        name, sep, secret = value.partition(":")
        if not sep or not _USER_RE.fullmatch(name):
            raise UsageError(
                f"environment variable {var} (--robots-env) is not ROBOT_NAME:SECRET; set it in that form"
            )
        if len(secret) < MIN_ROBOT_SECRET:
            raise UsageError(
                f"the secret in {var} (robot '{name}') is shorter than "
                f"{MIN_ROBOT_SECRET} characters; use a random one "
                "(openssl rand -hex 24)"
            )
        if name in robots:
            raise UsageError(
                f"robot '{name}' is defined twice (--robots-env {var}); give each robot one variable"
            )
        robots[name] = secret
    return robots


# --- throttling failed logins --------------------------------------------------------------


@dataclass(frozen=True)
class ThrottleSettings:
    """When failed logins make further attempts wait (see ``LoginThrottle``)."""

    user_failures: int = 5  # of one user, before that user's logins wait
    client_failures: int = 20  # of one client address: people behind one NAT share it
    max_delay: float = 60.0  # seconds; the longest any wait lasts
    first_delay: float = 1.0
    forget_after: float = 900.0  # seconds without a failure, after which a key starts afresh
    capacity: int = 10_000  # keys remembered; the oldest are forgotten first

    def __post_init__(self) -> None:
        if min(self.user_failures, self.client_failures, self.capacity) < 1:
            raise UsageError("--user-login-failures and --client-login-failures must be at least 1")
        if not 0 < self.first_delay <= self.max_delay <= self.forget_after:
            raise UsageError(
                f"--login-lockout must be between {self.first_delay:g} and {self.forget_after:g} seconds"
            )


@dataclass
class _Failures:
    count: int
    last: float
    locked_until: float


class LoginThrottle:
    """Failed logins per user and per client address, in memory of bounded size.

    Once a key (a user, or a client address) has failed ``*_failures`` times, its next
    attempts are answered 429 with ``Retry-After`` and not checked at all until a delay has
    passed: ``first_delay``, doubling with each further failure, never above ``max_delay``.
    Attempts refused that way neither count nor prolong the wait, so a lock always ends
    within ``max_delay`` of the last checked failure. Failures are forgotten after
    ``forget_after`` seconds without one, and a user's when the user logs in.

    So that guessing at a password cannot keep its user out, a user's lock does not apply at
    addresses the user logged in from within ``forget_after`` (their own limit still does), and
    robots have no per-user lock at all: their secrets are long and random, and a lock would
    only let anyone stop the pipeline.
    """

    def __init__(
        self, settings: ThrottleSettings = ThrottleSettings(), clock: Callable[[], float] = time.monotonic
    ):
        self.settings, self._clock = settings, clock
        # Both ordered by last use, oldest first, so that forgetting pops from the front.
        self._failures: OrderedDict[tuple[str, str], _Failures] = OrderedDict()
        self._known: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()

    def wait(self, user: str | None, client: str, *, robot: bool = False) -> float:
        """Seconds before this attempt may be checked; 0 when it may be now."""
        with self._lock:
            now = self._forget(self._clock())
            waits = [
                entry.locked_until - now
                for key in self._keys(user, client, robot)
                if (entry := self._failures.get(key)) is not None
            ]
            return max([0.0, *waits])

    def failed(self, user: str | None, client: str, *, robot: bool = False) -> None:
        with self._lock:
            now = self._forget(self._clock())
            for key in self._keys(user, client, robot):
                entry = self._failures.pop(key, None) or _Failures(0, now, now)
                entry.count, entry.last = entry.count + 1, now
                limit = self.settings.user_failures if key[0] == "user" else self.settings.client_failures
                if entry.count >= limit:
                    # Capped before the power: the count of a long attack would overflow it.
                    doublings = min(entry.count - limit, 32)
                    entry.locked_until = now + min(
                        self.settings.first_delay * 2**doublings, self.settings.max_delay
                    )
                _bounded_put(self._failures, key, entry, self.settings.capacity)

    def succeeded(self, user: str, client: str) -> None:
        with self._lock:
            now = self._forget(self._clock())
            self._failures.pop(("user", user), None)
            self._known.pop((user, client), None)
            _bounded_put(self._known, (user, client), now, self.settings.capacity)

    def _keys(self, user: str | None, client: str, robot: bool) -> list[tuple[str, str]]:
        keys = [("client", client)]
        if user is not None and not robot and (user, client) not in self._known:
            keys.append(("user", user))
        return keys

    def _forget(self, now: float) -> float:
        horizon = now - self.settings.forget_after
        while self._failures and next(iter(self._failures.values())).last < horizon:
            self._failures.popitem(last=False)
        while self._known and next(iter(self._known.values())) < horizon:
            self._known.popitem(last=False)
        return now


def _bounded_put(
    table: OrderedDict[tuple[str, str], Any], key: tuple[str, str], value: Any, capacity: int
) -> None:
    """Puts ``key`` last (newest), forgetting the oldest keys beyond ``capacity``."""
    table[key] = value
    while len(table) > capacity:
        table.popitem(last=False)


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
            log.error(
                "%s event=reload-failed what=%s kept=previous error=%s",
                _now_text(),
                self._what,
                _log_value(detail),
            )
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

    def __init__(
        self,
        signer: TokenSigner,
        *,
        issuer: str,
        lifetime: int,
        rules: Callable[[], Sequence[AccessGroup]],
        accounts: Callable[[], Accounts],
        throttle: LoginThrottle | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.signer, self.issuer, self.lifetime = signer, issuer, lifetime
        self.rules, self.accounts, self.clock = rules, accounts, clock
        self.throttle = throttle or LoginThrottle()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        response = self.respond(environ)
        body = json.dumps(response.body).encode()
        start_response(
            response.status,
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
                *response.headers,
            ],
        )
        return [body]

    def respond(self, environ: Mapping[str, Any]) -> Response:
        if environ.get("PATH_INFO") != TOKEN_PATH:
            return _error("404 Not Found", "NOT_FOUND", f"the token service answers on {TOKEN_PATH}")
        if environ.get("REQUEST_METHOD") != "GET":
            return Response("405 Method Not Allowed", _errors("UNSUPPORTED", "use GET"), (("Allow", "GET"),))
        query = parse_qs(environ.get("QUERY_STRING", ""))
        service = query.get("service", [""])[0]
        if not service:
            return _error(
                "400 Bad Request",
                "INVALID_REQUEST",
                "the service parameter is missing; it is the registry's auth.token.service",
            )
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
            _audit(
                now,
                "grant" if actions else "deny",
                subject,
                client,
                scope=str(scope),
                granted=",".join(actions) or "-",
            )
        if not scopes:
            _audit(now, "login", subject, client)
        token = issue_token(
            self.signer,
            issuer=self.issuer,
            service=service,
            subject=subject or "",
            access=access,
            now=now,
            lifetime=self.lifetime,
        )
        issued = token.issued_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        return Response(
            "200 OK",
            {
                "token": token.text,
                "access_token": token.text,
                "expires_in": token.expires_in,
                "issued_at": issued,
            },
        )

    def _authenticate(self, header: str | None, now: datetime, client: str) -> str | Response | None:
        """The user name; None for a request without credentials; a 401 when refused, a 429
        while failed logins of this user or address make it wait."""
        user = _basic_user(header)
        if user is None:
            return None
        name = user.name if isinstance(user, _Credentials) else None
        accounts = self.accounts()
        robot = name is not None and accounts.is_robot(name)
        wait = self.throttle.wait(name, client, robot=robot)
        if wait > 0:
            seconds = str(math.ceil(wait))
            _audit(now, "throttled", name, client, retry_after=seconds)
            return Response(
                "429 Too Many Requests",
                _errors("TOOMANYREQUESTS", f"too many failed logins; try again in {seconds} seconds"),
                (("Retry-After", seconds),),
            )
        if isinstance(user, _Credentials):
            refusal = accounts.check(user.name, user.password)
            if refusal is None:
                self.throttle.succeeded(user.name, client)
                return user.name
            message = refusal if refusal == TOO_LONG_PASSWORD else "incorrect username or password"
        else:
            refusal, message = "malformed Authorization header", "send credentials as HTTP Basic"
        _audit(now, "refused", name, client, reason=refusal)
        self.throttle.failed(name, client, robot=robot)
        return Response(
            "401 Unauthorized",
            _errors("UNAUTHORIZED", message),
            (("WWW-Authenticate", f'Basic realm="{BASIC_REALM}"'),),
        )


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
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _log_value(value: str) -> str:
    return value if _PLAIN_LOG_VALUE.fullmatch(value) else json.dumps(value)


def _audit(now: datetime, event: str, user: str | None, client: str, **fields: str) -> None:
    parts = [
        now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        f"event={event}",
        f"user={_log_value(user) if user is not None else '-'}",
        f"client={_log_value(client)}",
    ]
    parts += [f"{key}={_log_value(value)}" for key, value in fields.items()]
    log.info(" ".join(parts))


def catalog_rules(root: Path) -> Reloading[tuple[AccessGroup, ...]]:
    """The access groups of the catalog at ``root``, reloaded when any catalog file changes.

    The whole catalog is loaded, as ``syncer validate`` checks it: a catalog that does not
    validate changes no permission.
    """
    from syncer.catalog import load_catalog

    return Reloading(f"catalog {root}", lambda: tree_fingerprint(root), lambda: load_catalog(root).access)


def account_source(users_file: Path | None, robots: Mapping[str, str]) -> Reloading[Accounts]:
    """Users from ``users_file`` (reloaded when it changes) and the fixed ``robots``."""

    def load() -> Accounts:
        return Accounts(load_users(users_file) if users_file else {}, robots)

    fingerprint: Callable[[], object] = (
        (lambda: tree_fingerprint(users_file)) if users_file else (lambda: None)
    )
    return Reloading(f"users file {users_file}", fingerprint, load)
