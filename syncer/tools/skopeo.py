"""The only module that runs skopeo: copy, raw inspect and delete of ``docker://`` references.

Every run gets a private directory (mode 0700, removed afterwards) holding:

* ``policy.json`` (insecureAcceptAnything), passed with ``--policy``: skopeo otherwise reads the
  host's /etc/containers/policy.json, which may reject unsigned images or not exist at all, so a
  copy would behave differently per machine. The pipeline checks signatures itself and only
  ever copies the digest it resolved, so skopeo's policy would add nothing.
* ``registries.conf`` (empty, via CONTAINERS_REGISTRIES_CONF) and an empty ``--registries.d``:
  a host's mirrors, blocks or signature lookaside settings would silently redirect or add to
  what is copied; ``sources.<host>.endpoint`` in the catalog is the only redirection we honour.
* ``src-auth.json`` / ``dest-auth.json`` (mode 0600), given with ``--src-authfile`` /
  ``--dest-authfile``. Credentials never go on the command line (any user can read another
  process's argv) nor into skopeo's environment; without credentials we pass ``--*-no-creds``
  so that neither the user's auth.json nor ~/.docker/config.json is used. HOME points at the
  private directory too, for the same reason. Those files are read by syncer instead
  (``syncer.tools.credentials``), so that syncer's client, skopeo and Trivy use one credential.
* ``--*-cert-dir`` is a directory syncer made (``syncer.tools.trust``) holding every CA that applies
  to the registry: given one, skopeo reads no /etc/containers/certs.d of its own.

skopeo remembers where it has seen each blob (its blob-info cache) and mounts a blob already
in a sibling repository of the destination instead of sending it again. Inside
``shared_blob_cache()`` (``syncer run`` holds it for the run) every copy uses one such cache,
in a private directory of the run (``XDG_DATA_HOME``), so a layer mirrored into one
quarantine repository is mounted into the next; outside it each copy has its own, which
starts empty. skopeo keeps a non-root user's cache under ``XDG_DATA_HOME`` and root's in
/var/lib/containers/cache, shared with every container tool of the host; we pass
``_CONTAINERS_ROOTLESS_UID`` (containers/image's signal of a rootless user) so that root's
copies use the run's cache too and behave as a CI runner's non-root ones do. Copies between
two registries take turns within the block (one per pair of registries): parallel copies of
images sharing a layer would otherwise all send it, none yet knowing the others do.

Failures are classified from skopeo's message into a ``Kind``; network failures (including
HTTP 5xx and 429) are retried with backoff, others fail at once. We retry ourselves rather than
with ``--retry-times`` so that we decide what is transient, bound the delays and can report the
number of attempts. Messages never contain credentials.
"""

from __future__ import annotations

import base64
import enum
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from syncer.core.refs import parse_reference
from syncer.errors import SkopeoError
from syncer.tools.registry import Credentials

# Tests point this at a wrapper to observe what the operating system sees.
SKOPEO = "skopeo"

_TRANSPORT = "docker://"
_POLICY = {"default": [{"type": "insecureAcceptAnything"}]}
# Only what skopeo needs from the caller's environment: where to find programs, where to put
# big temporary files, and how to reach the network.
_PASSED_ENV = (
    "PATH",
    "TMPDIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)
_BACKOFF_FIRST, _BACKOFF_MAX = 2.0, 60.0
# Seconds one copy may take before skopeo is stopped: `syncer run --copy-timeout` sets it. A
# stalled transfer holds no lock, but it holds a --jobs slot and the run's end.
COPY_TIMEOUT = 1800.0
# Any non-zero user id: containers/image then keeps its blob-info cache under XDG_DATA_HOME.
_ROOTLESS_UID = "65534"


class Kind(str, enum.Enum):
    AUTH = "auth"
    NOT_FOUND = "not_found"
    NETWORK = "network"
    TLS = "tls"
    MANIFEST_INVALID = "manifest_invalid"
    REFERENCE = "reference"
    TIMEOUT = "timeout"
    OTHER = "other"


class SkopeoCommandError(SkopeoError):
    """skopeo failed; ``kind`` says how, ``registry`` which registry (host[:port]) was at fault."""

    def __init__(
        self, message: str, *, kind: Kind, registry: str = "", reference: str = "", attempts: int = 1
    ):
        super().__init__(message)
        self.kind = kind
        self.registry = registry
        self.reference = reference
        self.attempts = attempts


@dataclass(frozen=True)
class _Side:
    """One registry end of a command: its reference and how to talk to it."""

    ref: str  # docker://host/repo:tag or @digest
    registry: str  # host[:port], the key of the auth file
    name: str  # host[:port]/repository, for messages
    tls_verify: bool
    creds: Credentials | None
    cert_dir: str | None
    role: str  # "source", "destination" or "" for single-reference commands


# --- public commands -----------------------------------------------------------------------


def copy(
    src: str,
    dst: str,
    *,
    all_platforms: bool = True,
    preserve_digests: bool = True,
    src_tls_verify: bool = True,
    dst_tls_verify: bool = True,
    src_creds: Credentials | None = None,
    dst_creds: Credentials | None = None,
    src_cert_dir: str | None = None,
    dst_cert_dir: str | None = None,
    retries: int = 2,
    timeout: float = COPY_TIMEOUT,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """``skopeo copy`` between two ``docker://`` references; raises SkopeoCommandError.

    With the defaults the whole index is copied and its digest kept, so the destination holds
    exactly the digest that was resolved upstream.
    """
    source = _side(src, src_tls_verify, src_creds, src_cert_dir, "source")
    dest = _side(dst, dst_tls_verify, dst_creds, dst_cert_dir, "destination")
    options = ["--quiet"]
    if all_platforms:
        options.append("--all")
    if preserve_digests:
        options.append("--preserve-digests")
    with _turn(source.registry, dest.registry):
        _run("copy", options, (source, dest), retries=retries, timeout=timeout, sleep=sleep)


# --- the run's blob-info cache -------------------------------------------------------------


class _SharedCache:
    def __init__(self, path: str):
        self.path = path
        self._guard = threading.Lock()
        self._turns: dict[tuple[str, str], threading.Lock] = {}

    def turn(self, source: str, destination: str) -> threading.Lock:
        with self._guard:
            return self._turns.setdefault((source, destination), threading.Lock())


_shared: _SharedCache | None = None


@contextmanager
def shared_blob_cache() -> Iterator[str]:
    """One blob-info cache for every copy made inside the block, in a private directory
    (mode 0700) removed afterwards; yields its path. A block inside another shares its cache."""
    global _shared
    if _shared is not None:
        yield _shared.path
        return
    path = tempfile.mkdtemp(prefix="syncer-skopeo-run-")
    _shared = _SharedCache(path)
    try:
        yield path
    finally:
        _shared = None
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def _turn(source: str, destination: str) -> Iterator[None]:
    """Within a shared cache, one copy at a time from ``source`` to ``destination``, so each
    copy knows every blob the ones before it brought. The tag's own copy of the layer would
    cost what waiting costs: the bytes cross the same link either way."""
    shared = _shared
    if shared is None or source == destination:
        yield
        return
    with shared.turn(source, destination):
        yield


# --- command line --------------------------------------------------------------------------


def _build_argv(command: str, options: list[str], sides: tuple[_Side, ...], workdir: str) -> list[str]:
    """The full command line; credentials are referred to by auth file path only."""
    argv = [
        SKOPEO,
        "--policy",
        os.path.join(workdir, "policy.json"),
        "--registries.d",
        os.path.join(workdir, "registries.d"),
        command,
        *options,
    ]
    for side in sides:
        prefix = {"source": "src-", "destination": "dest-", "": ""}[side.role]
        argv.append(f"--{prefix}tls-verify={'true' if side.tls_verify else 'false'}")
        if side.cert_dir:
            argv += [f"--{prefix}cert-dir", side.cert_dir]
        if side.creds is None:
            argv.append(f"--{prefix}no-creds")
        else:
            argv += [f"--{prefix}authfile", _authfile_path(workdir, side)]
    # "--" so that no reference can ever be read as an option.
    return [*argv, "--", *(side.ref for side in sides)]


def _auth_json(registry: str, creds: Credentials) -> str:
    """containers-auth.json(5) with one entry."""
    token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
    return json.dumps({"auths": {registry: {"auth": token}}})


def _authfile_path(workdir: str, side: _Side) -> str:
    return os.path.join(workdir, f"{side.role or 'registry'}-auth.json")


@contextmanager
def _workdir(sides: tuple[_Side, ...]) -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="syncer-skopeo-")  # mode 0700
    try:
        _write_private(os.path.join(path, "policy.json"), json.dumps(_POLICY))
        _write_private(os.path.join(path, "registries.conf"), "")
        os.mkdir(os.path.join(path, "registries.d"), 0o700)
        for side in sides:
            if side.creds is not None:
                _write_private(_authfile_path(path, side), _auth_json(side.registry, side.creds))
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _environment(workdir: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in _PASSED_ENV}
    env["HOME"] = workdir
    env["CONTAINERS_REGISTRIES_CONF"] = os.path.join(workdir, "registries.conf")
    shared = _shared
    env["XDG_DATA_HOME"] = shared.path if shared is not None else workdir
    env["_CONTAINERS_ROOTLESS_UID"] = str(os.geteuid() or _ROOTLESS_UID)
    return env


# --- running and retrying ------------------------------------------------------------------


def _run(
    command: str,
    options: list[str],
    sides: tuple[_Side, ...],
    *,
    retries: int,
    timeout: float,
    sleep: Callable[[float], None],
) -> bytes:
    with _workdir(sides) as workdir:
        argv = _build_argv(command, options, sides, workdir)
        env = _environment(workdir)
        attempt = 0
        while True:
            attempt += 1
            try:
                done = subprocess.run(
                    argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
                )
            except subprocess.TimeoutExpired:
                # subprocess.run has already killed and reaped skopeo.
                raise _timeout_error(command, sides, timeout, attempt) from None
            except FileNotFoundError:
                raise SkopeoCommandError(
                    f"skopeo is not installed or not on PATH ({SKOPEO!r}): install skopeo 1.9 or newer",
                    kind=Kind.OTHER,
                ) from None
            if done.returncode == 0:
                return done.stdout
            reason = _reason(done.stderr.decode("utf-8", "replace"), sides)
            kind = classify(reason)
            if kind is not Kind.NETWORK or attempt > retries:
                raise _error(command, sides, reason, kind, attempt)
            sleep(min(_BACKOFF_FIRST * 2 ** (attempt - 1), _BACKOFF_MAX))


# --- understanding failures ----------------------------------------------------------------

_FATAL = re.compile(r'level=(?:fatal|error) msg="((?:[^"\\]|\\.)*)"')
# Order matters: a TLS handshake *timeout* is the network's fault, not the certificate's, and
# a 5xx or 429 is a transient registry failure worth retrying like a dropped connection.
_KINDS: tuple[tuple[Kind, re.Pattern[str]], ...] = (
    (Kind.NETWORK, re.compile(r"tls handshake timeout")),
    (
        Kind.TLS,
        re.compile(
            r"x509:|tls:|certificate|server gave http response to https client|"
            r"does not look like a tls handshake"
        ),
    ),
    (
        Kind.NETWORK,
        re.compile(
            r"connection refused|no such host|i/o timeout|connection reset|network is unreachable|"
            r"no route to host|server misbehaving|temporary failure in name resolution|"
            r"timeout awaiting response headers|context deadline exceeded|broken pipe|\beof\b|"
            r"status:? 5\d\d\b|\b5\d\d (?:internal server error|bad gateway|service unavailable|"
            r"gateway timeout)|toomanyrequests|too many requests"
        ),
    ),
    (
        Kind.AUTH,
        re.compile(
            r"unauthorized|authentication required|denied|forbidden|"
            r"invalid username/password|incorrect username or password"
        ),
    ),
    (
        Kind.NOT_FOUND,
        re.compile(
            r"manifest unknown|name unknown|not found|no such image|"
            r"repository name not known"
        ),
    ),
    (
        Kind.MANIFEST_INVALID,
        re.compile(
            r"manifest invalid|manifest blob unknown|invalid manifest|unsupported manifest|"
            r"unsupported mime type|digest did not match|does not match|digest invalid|"
            r"unknown media type"
        ),
    ),
    (Kind.REFERENCE, re.compile(r"invalid reference format|invalid (?:source|destination) name")),
)


def classify(reason: str) -> Kind:
    """The kind of failure skopeo's message describes (pure)."""
    text = reason.lower()
    return next((kind for kind, pattern in _KINDS if pattern.search(text)), Kind.OTHER)


def _reason(stderr: str, sides: tuple[_Side, ...]) -> str:
    """skopeo's own message (logrus ``msg="…"``), else its last line; credentials redacted."""
    messages = _FATAL.findall(stderr)
    if messages:
        try:
            text = json.loads(f'"{messages[-1]}"')  # Go's %q escapes are JSON's for text
        except json.JSONDecodeError:
            text = messages[-1]
    else:
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        text = lines[-1] if lines else "skopeo failed without a message"
    return _redact(text, [s.creds for s in sides if s.creds is not None])


def _redact(text: str, creds: list[Credentials]) -> str:
    """``text`` with every password, and its auth-file encoding, replaced by ``***``."""
    for c in creds:
        secrets = [
            base64.b64encode(f"{c.username}:{c.password}".encode()).decode(),
            f"{c.username}:{c.password}",
            c.password,
        ]
        for secret in secrets:
            if c.password and secret:
                text = text.replace(secret, "***")
    return text


def _at_fault(reason: str, sides: tuple[_Side, ...]) -> _Side:
    if len(sides) == 1 or sides[0].registry == sides[1].registry:
        return sides[0]
    named = [s for s in sides if s.registry in reason]
    if len(named) == 1:
        return named[0]
    writes = re.search(r"destination|writing|uploading|pushing", reason, re.IGNORECASE)
    return sides[1] if writes else sides[0]


_ADVICE = {
    Kind.AUTH: "check the credentials{origin} and that they may {access} {repo}",
    Kind.NOT_FOUND: "check that {ref} exists on {registry} (was the tag or digest deleted?)",
    Kind.NETWORK: "check that {registry} is up and reachable from here",
    Kind.TLS: "if {registry} uses a private certificate authority, configure its CA directory "
    "for this registry; use tls_verify: false only for a plain-HTTP test registry",
    Kind.MANIFEST_INVALID: "{registry} served or refused a manifest skopeo cannot use; inspect {ref}",
    Kind.REFERENCE: "fix the reference {ref}",
    Kind.OTHER: "see skopeo's reason above",
}
_WHAT = {
    Kind.AUTH: "{registry} refused access",
    Kind.NOT_FOUND: "{ref} was not found",
    Kind.NETWORK: "{registry} is unreachable or failing",
    Kind.TLS: "TLS with {registry} failed",
    Kind.MANIFEST_INVALID: "bad manifest at {registry}",
    Kind.REFERENCE: "invalid reference {ref}",
    Kind.OTHER: "skopeo failed on {registry}",
}


def _error(
    command: str, sides: tuple[_Side, ...], reason: str, kind: Kind, attempts: int
) -> SkopeoCommandError:
    side = _at_fault(reason, sides)
    values = {
        "registry": side.registry,
        "ref": side.ref.removeprefix(_TRANSPORT),
        "repo": side.name,
        "access": "push to"
        if side.role == "destination"
        else "pull from"
        if side.role == "source"
        else "access",
        "origin": f" from {side.creds.origin}"
        if side.creds and side.creds.origin
        else ""
        if side.creds
        else " (none were given: the registry needs them)",
    }
    role = f" ({side.role})" if side.role else ""
    tried = f" after {attempts} attempts" if attempts > 1 else ""
    message = (
        f"skopeo {command}: {_WHAT[kind].format(**values)}{role}{tried}: {reason}. "
        f"What to do: {_ADVICE[kind].format(**values)}."
    )
    return SkopeoCommandError(
        message, kind=kind, registry=side.registry, reference=values["ref"], attempts=attempts
    )


def _timeout_error(
    command: str, sides: tuple[_Side, ...], timeout: float, attempts: int
) -> SkopeoCommandError:
    refs = " -> ".join(s.ref.removeprefix(_TRANSPORT) for s in sides)
    return SkopeoCommandError(
        f"skopeo {command} {refs} did not finish within {timeout:g}s and was stopped. "
        "What to do: check the registries' speed, or raise the timeout for very large images "
        "(syncer run --copy-timeout SECONDS); the next run tries again.",
        kind=Kind.TIMEOUT,
        registry=sides[-1].registry,
        reference=sides[-1].ref,
        attempts=attempts,
    )


def _side(ref: str, tls_verify: bool, creds: Credentials | None, cert_dir: str | None, role: str) -> _Side:
    if not ref.startswith(_TRANSPORT):
        raise SkopeoCommandError(
            f"skopeo: {role or 'image'} reference {ref!r} must start with {_TRANSPORT}",
            kind=Kind.REFERENCE,
            reference=ref,
        )
    try:
        parsed = parse_reference(ref.removeprefix(_TRANSPORT))
    except ValueError as err:
        raise SkopeoCommandError(
            f"skopeo: {role or 'image'} reference {ref!r} is invalid: {err}. What to do: fix the reference.",
            kind=Kind.REFERENCE,
            reference=ref,
        ) from None
    return _Side(
        ref=ref,
        registry=parsed.registry,
        name=parsed.name,
        tls_verify=tls_verify,
        creds=creds,
        cert_dir=cert_dir,
        role=role,
    )
