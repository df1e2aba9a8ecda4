"""HTTP client for the OCI distribution API: cheap upstream checks, signatures, deletes.

Image copies between registries go through skopeo; this client does what skopeo cannot do
cheaply: HEAD-only discovery (Docker Hub counts a manifest GET as a pull and a HEAD as none),
small blob and manifest reads and writes for signatures, cross-repository blob mounts (copies
inside one registry, ``syncer.stages.mount``), and deletes. Every failure becomes a typed
``syncer.errors`` error naming the registry and what to do; credentials never leave this
module except in the Authorization header.
"""

from __future__ import annotations

import base64
import email.utils
import functools
import hashlib
import http.client
import io
import json
import logging
import os
import random
import re
import select
import socket
import ssl
import sys
import threading
import time
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urljoin, urlsplit

from syncer import __version__
from syncer.core import redact, refs
from syncer.core.model import Auth, RateLimit
from syncer.errors import (
    DigestMismatchError,
    NotFoundError,
    RateLimitError,
    RegistryAuthError,
    RegistryError,
    SyncerError,
    UsageError,
)
from syncer.tools.throttle import Throttle

if TYPE_CHECKING:
    # requests and urllib3 are imported where first used: a no-op run, whose requests all go
    # on KeptConnections, never needs them (their import is 0.2-0.3 s of its CPU).
    import requests

log = logging.getLogger(__name__)

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
IMAGE_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)

DOCKER_HUB = "docker.io"
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"

_SHOWABLE_RE = re.compile(r"[A-Za-z0-9:+._-]{1,140}")  # what a digest is made of, up to sha512's length

RETRY_STATUSES = frozenset({500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10  # Go's http.Client, which skopeo and the docker CLI use, stops at 10 too
# distribution refuses manifests over 4 MiB (maxManifestBodySize) and serves tag lists in
# pages; no answer this client reads whole (manifests, tag-list pages, tokens, signature
# payloads) is larger. Error bodies are read only for their message.
BODY_MAX = 4 << 20
ERROR_BODY_MAX = 64 << 10
_READ_SIZE = 64 << 10
DEADLINE_DEFAULT = 120.0  # seconds for one answer: 4 MiB at 35 KB/s
TOKEN_LIFETIME_DEFAULT = 60  # seconds; the token spec's default when expires_in is absent
TOKEN_EXPIRY_MARGIN = 10  # refresh a little early so a token does not expire in flight
# Repositories per token request during discovery: Docker Hub's and distribution's token
# servers take repeated scope parameters. Each adds an access entry to the token, which goes
# in every request's Authorization header; ten keep it far below the 8 KiB a header line may
# have in common front ends (nginx's large_client_header_buffers).
TOKEN_BATCH = 10
# What may follow "Bearer " in a header: visible ASCII on one line, and short enough for
# header buffers (a batch of TOKEN_BATCH scopes stays far below the bound).
_TOKEN_VALUE_RE = re.compile(r"[\x21-\x7e]{1,16384}")
# Requests in flight to one registry unless settings.yaml says otherwise
# (``sources.<host>.concurrency``); chosen with benchmarks/noop_discovery.py, see
# docs/architecture.md.
DEFAULT_CONCURRENCY = 16


# --- credentials ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """A username and password (or token); ``origin`` says where they came from for messages."""

    username: str
    password: str = field(repr=False)
    origin: str = ""  # e.g. "HUB_USERNAME/HUB_TOKEN (sources.docker.io.auth)"

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password='***', origin={self.origin!r})"

    __str__ = __repr__


def credentials_from_env(auth: Auth, what: str) -> Credentials | None:
    """Reads the variables ``auth`` names; ``what`` is the catalog path of the auth block.

    None when the catalog names no variables (anonymous access). A named variable that is
    not set is a usage error: running anonymously instead would hide a broken CI secret.
    """
    if not auth.username_env and not auth.password_env:
        return None
    values: dict[str, str] = {}
    for key, var in (("username_env", auth.username_env), ("password_env", auth.password_env)):
        if not var:
            continue
        value = os.environ.get(var)
        if value is None:
            raise UsageError(
                f"environment variable {var} ({what}.{key}) is not set; export it or remove the auth block"
            )
        if not value:
            # GitHub Actions expands a secret that does not exist to an empty string.
            raise UsageError(
                f"environment variable {var} ({what}.{key}) is empty; set it (in CI: check "
                "that the secret exists and is passed to the job) or remove the auth block"
            )
        values[key] = value
    names = "/".join(v for v in (auth.username_env, auth.password_env) if v)
    redact.remember_credentials(values.get("username_env", ""), values.get("password_env", ""))
    return Credentials(
        username=values.get("username_env", ""),
        password=values.get("password_env", ""),
        origin=f"{names} ({what})",
    )


# --- results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TagListing:
    tags: list[str]  # in the registry's order, every one a valid tag
    dropped: tuple[str, ...] = ()  # what was not, each described for a message (``_described``)


@dataclass(frozen=True)
class ManifestRef:
    digest: str
    media_type: str
    size: int | None  # None when the registry sent no Content-Length


@dataclass(frozen=True)
class Manifest:
    digest: str
    media_type: str
    raw: bytes
    json: dict

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


@dataclass(frozen=True)
class PlatformManifest:
    platform: str  # os/architecture[/variant]
    digest: str
    media_type: str
    size: int


def parse_ratelimit(limit: str | None, remaining: str | None) -> RateLimit | None:
    """``100;w=21600`` and ``76;w=21600`` -> RateLimit(100, 76, 21600); None if absent or odd."""
    if not limit or not remaining:
        return None

    def split(value: str) -> tuple[int, int | None]:
        count, _, rest = value.partition(";")
        window = re.search(r"w=(\d+)", rest)
        return int(count.strip()), int(window.group(1)) if window else None

    try:
        lim, window = split(limit)
        rem, rem_window = split(remaining)
    except ValueError:
        return None
    return RateLimit(limit=lim, remaining=rem, window=window or rem_window)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from ``Retry-After`` (delta-seconds or an HTTP date); None if absent."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "basic" | "bearer"
    params: dict[str, str]


class ChallengeError(ValueError):
    """A ``WWW-Authenticate`` header that is not a list of challenges (RFC 9110, 11.6.1)."""


_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TOKEN68_RE = re.compile(r"[A-Za-z0-9._~+/-]+=*(?=\s*(?:,|$))")
_QUOTED_RE = re.compile(r'"((?:[^"\\]|\\.)*)"')
_SPACE_RE = re.compile(r"[ \t]*")


def parse_challenges(header: str) -> list[Challenge]:
    """Every challenge of a ``WWW-Authenticate`` value, several headers joined by commas as
    requests joins them. ChallengeError when it does not follow the grammar: a parameter
    before any scheme, a repeated parameter, an unterminated quoted string."""
    found: list[Challenge] = []
    pos = 0

    def skip(pattern: re.Pattern[str] = _SPACE_RE) -> None:
        nonlocal pos
        match = pattern.match(header, pos)
        assert match is not None  # whitespace patterns match everywhere, if only ""
        pos = match.end()

    while True:
        while True:  # empty list elements are allowed ("a, , b")
            skip()
            if header.startswith(",", pos):
                pos += 1
                continue
            break
        if pos >= len(header):
            return found
        name = _TOKEN_RE.match(header, pos)
        if name is None:
            raise ChallengeError(f"unexpected character at position {pos}")
        pos = name.end()
        skip()
        if not header.startswith("=", pos):
            found.append(Challenge(name.group().lower(), {}))
            token68 = _TOKEN68_RE.match(header, pos)
            if token68 is not None:
                pos = token68.end()  # the value some schemes carry instead of parameters
            continue
        if not found:
            raise ChallengeError(f"parameter {name.group()!r} before any scheme")
        pos += 1
        skip()
        quoted = _QUOTED_RE.match(header, pos)
        if quoted is not None:
            value = re.sub(r"\\(.)", r"\1", quoted.group(1))
            pos = quoted.end()
        elif (token := _TOKEN_RE.match(header, pos)) is not None:
            value = token.group()
            pos = token.end()
        elif header.startswith('"', pos):
            raise ChallengeError(f"the value of {name.group()!r} is an unterminated quoted string")
        else:
            raise ChallengeError(f"parameter {name.group()!r} has no value")
        key = name.group().lower()
        if key in found[-1].params:
            raise ChallengeError(f"parameter {key!r} appears twice in one challenge")
        found[-1].params[key] = value


def parse_challenge(header: str | None) -> Challenge | None:
    """The challenge to answer: Bearer if offered, else Basic, else None (no usable one).
    ChallengeError when the header is malformed."""
    if not header:
        return None
    challenges = parse_challenges(header)
    for scheme in ("bearer", "basic"):
        chosen = next((c for c in challenges if c.scheme == scheme), None)
        if chosen is not None:
            return chosen
    return None


def list_platforms(index: Manifest) -> list[PlatformManifest]:
    """The platform manifests of an index, without attestation entries (``unknown/unknown``)."""
    if not index.is_index:
        return []
    found = []
    for entry in index.json.get("manifests", []):
        plat = entry.get("platform") or {}
        os_, arch = plat.get("os", ""), plat.get("architecture", "")
        if (
            not os_
            or not arch
            or os_ == "unknown"
            or not isinstance(entry.get("digest"), str)
            or not refs.is_valid_digest(entry["digest"])
        ):
            continue
        name = "/".join(p for p in (os_, arch, plat.get("variant", "")) if p)
        found.append(
            PlatformManifest(name, entry["digest"], entry.get("mediaType", ""), int(entry.get("size", 0)))
        )
    return found


def descriptor_digest(value: object, where: str) -> str:
    """The digest of a descriptor in a manifest (an index's entry, a layer), before it names
    a URL, a record or a scan: the reference grammar's algorithm:hex, else RegistryError
    naming ``where`` (a manifest names a tag or a path only by mistake or malice)."""
    if isinstance(value, str) and refs.is_valid_digest(value):
        return value
    shown = _described(value) if value is not None else "no digest"
    raise RegistryError(
        f"{where} names {shown} where a digest (algorithm:hex) belongs; the "
        "manifest is malformed: report it to the image's publisher"
    )


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


# --- answers -------------------------------------------------------------------------------


@dataclass
class Answer:
    """A registry's answer, its body read within the request's cap; for a blob streamed
    (``stream``), the open response whose body ``chunks`` reads."""

    method: str
    url: str
    status_code: int
    reason: str
    headers: Mapping[str, str]  # by name in any case: requests' CaseInsensitiveDict, or _Fields
    content: bytes = b""
    stream: requests.Response | None = field(default=None, repr=False)

    @property
    def links(self) -> dict[str, dict[str, str]]:
        """``Link`` header entries by their ``rel``, as requests' ``Response.links``."""
        header = self.headers.get("Link")
        if not header:
            return {}
        import requests.utils

        links = requests.utils.parse_header_links(header)
        return {link.get("rel") or link.get("url", ""): link for link in links}

    def json(self) -> object:
        """The body as JSON; ValueError when it is not (too deep a nesting included)."""
        try:
            return json.loads(self.content)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()


class BodyError(Exception):
    """An answer's body is not what it may be: too large, too slow, or not in the encoding it
    names. Not retried: the registry sent it, and would send it again."""


def read_body(
    headers: Mapping[str, str], read1: Callable[[int], bytes], limit: int, deadline: float, status: int
) -> bytes:
    """The body of an answer, as ``read1(n)`` gives it (at most ``n`` bytes of whatever one
    read of the socket returns, without content decoding; b"" at its end): at most ``limit``
    bytes (decoded), in by ``deadline`` (time.monotonic()), whatever the server does. Both
    transports read bodies through it: requests' with ``stream=True``, ``KeptConnections``'.
    Redirect bodies are not read; error bodies only up to ERROR_BODY_MAX, for their message
    (b"" beyond that: the status tells what went wrong)."""
    if 300 <= status < 400:
        return b""
    error = status >= 400
    cap = min(limit, ERROR_BODY_MAX) if error else limit
    try:
        return _read_capped(headers, read1, cap, deadline)
    except (BodyError, OSError, http.client.HTTPException):
        if error:
            return b""
        raise
    except Exception as err:
        if error and _raised_by(err, "urllib3.exceptions", "HTTPError"):
            return b""
        raise


def _read_capped(
    headers: Mapping[str, str], read1: Callable[[int], bytes], cap: int, deadline: float
) -> bytes:
    encoding = headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ("", "identity", "gzip"):
        raise BodyError(f"sent a body in Content-Encoding {_described(encoding)}, which was not asked for")
    length = headers.get("Content-Length", "")
    if length.isdigit() and int(length) > cap:
        raise BodyError(
            f"announced an answer of {int(length)} bytes, more than the "
            f"{_amount(cap)} such an answer may have"
        )
    too_large = BodyError(f"sent an answer larger than the {_amount(cap)} such an answer may have")
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding == "gzip" else None
    body = bytearray()
    received = 0
    while True:
        if time.monotonic() > deadline:
            raise BodyError(f"sent its answer too slowly ({received} bytes received before the deadline)")
        # read1: whatever one read of the socket returns, so that a server sending a byte at
        # a time cannot hold the loop past the deadline.
        data = read1(_READ_SIZE)
        if not data:
            break
        received += len(data)
        if decoder is None:
            body += data
        else:
            try:
                body += decoder.decompress(data, cap + 1 - len(body))
            except zlib.error:
                raise BodyError("sent a body marked Content-Encoding: gzip that is not gzip") from None
            if decoder.unconsumed_tail:
                raise too_large
        if len(body) > cap or received > cap:
            raise too_large
    if decoder is not None and not decoder.eof:
        raise BodyError("sent a gzip body that ends before its gzip stream does")
    return bytes(body)


def _amount(size: int) -> str:
    return f"{size >> 20} MiB" if size >= 1 << 20 and not size % (1 << 20) else f"{size} bytes"


def transport_failure(err: BaseException) -> tuple[bool, str]:
    """Whether trying again may help, and what happened, for any failure of a request below
    the status line: requests' and urllib3's exceptions, socket and TLS errors (as a body
    read may raise them bare), and BodyError. The one mapping every request
    path goes through, so that each failure reads the same wherever it happened."""
    if isinstance(err, BodyError):
        return False, str(err)
    import requests  # a failure is rare: its mapping may import what KeptConnections spares
    import urllib3

    if isinstance(
        err,
        (
            requests.exceptions.ChunkedEncodingError,
            urllib3.exceptions.ProtocolError,
            http.client.IncompleteRead,
        ),
    ):
        return True, "broke off its answer (the connection closed before the end of the body)"
    if isinstance(err, (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)):
        return True, "timed out"
    if isinstance(err, (requests.exceptions.ContentDecodingError, urllib3.exceptions.DecodeError)):
        return False, "sent a body its Content-Encoding header does not describe"
    if isinstance(err, requests.TooManyRedirects):
        return False, f"redirected more than {MAX_REDIRECTS} times, a loop"
    if isinstance(
        err,
        (
            requests.exceptions.InvalidURL,
            requests.exceptions.InvalidSchema,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidHeader,
            urllib3.exceptions.LocationParseError,
            http.client.InvalidURL,
            UnicodeError,
        ),
    ):
        return False, (
            f"could not be asked: a URL or header it sent for this request is invalid ({type(err).__name__})"
        )
    if isinstance(
        err, (requests.ConnectionError, urllib3.exceptions.HTTPError, OSError, http.client.HTTPException)
    ):
        return True, f"could not be reached ({_network_reason(err)})"
    return False, f"failed ({type(err).__name__})"


# --- kept-alive connections ---------------------------------------------------------------

# The header block of an answer read by ``KeptConnections``: http.client's own bound on one
# header line, and far above the ~1 KiB a registry's answer has. Also the bound on one line
# of a chunked body's framing.
HEAD_MAX = 64 << 10
_REQUEST_TARGET_RE = re.compile(r"/[!-~]*")  # printable ASCII, no space: sent as it is


class _Received:
    """The bytes of a header block, as the socket ``http.client.HTTPResponse`` reads from."""

    def __init__(self, data: bytes):
        self._data = data

    def makefile(self, mode: str) -> io.BytesIO:
        return io.BytesIO(self._data)


class KeptConnections:
    """The transport of ``RegistryClient``'s HEADs and GETs (those read whole: manifests,
    tag lists, signature payloads) to its own registry: one kept-alive connection per thread
    and origin, the answer's header block read from the socket within the request's deadline
    and parsed as ``http.client`` parses it under requests (``_parse_head``), its body
    delimited as its framing says (``_Framed``) and read by ``read_body``, as requests' is.

    A no-op run sends one manifest HEAD per tracked tag and one tag list per repository, and
    on a two-core runner its time is the client's CPU per request: through requests a HEAD
    costs 1.6-2.2 ms of CPU and a tag list about 2 ms, most of it in request preparation,
    here a third of that or less (benchmarks/README.md). This is no second HTTP client: it
    only exchanges bytes. The client decides what is sent and does all the rest (throttle,
    retries, redirects, challenges, digest checks, body caps) for both transports alike, and
    its failures are those ``transport_failure`` maps: socket, TLS and ``http.client``
    errors, and BodyError for an answer too slow, too large or framed in a way it does not
    read.

    ``verify``: the client's requests setting (False, True for requests' CA bundle, or a CA
    file or directory), turned into the TLS context requests' urllib3 would build from it."""

    def __init__(self, verify: str | bool, user_agent: str, client_cert: tuple[str, str] | None = None):
        self._verify = verify
        self._client_cert = client_cert  # shown to the registry, as requests' session.cert
        self._user_agent = user_agent
        self._context: ssl.SSLContext | None = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()

    @staticmethod
    def serves(url: str) -> bool:
        """Whether the request target of ``url`` can go on the wire unchanged (requests
        would quote anything else)."""
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        return bool(_REQUEST_TARGET_RE.fullmatch(target)) and not parts.fragment

    def exchange(
        self, method: str, url: str, headers: Mapping[str, str], timeout: float, deadline: float, limit: int
    ) -> Answer:
        """``method`` (HEAD or GET, no request body) of ``url`` and its answer, the body read
        within ``limit`` as ``read_body`` reads it."""
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = [
            f"{method} {target} HTTP/1.1",
            f"Host: {parts.netloc}",
            f"User-Agent: {self._user_agent}",
            "Accept-Encoding: gzip",
        ]
        for name, value in headers.items():
            if any(c in name or c in value for c in "\r\n\0"):
                # A value from a registry or token server could otherwise add headers.
                import requests

                raise requests.exceptions.InvalidHeader(f"the {name} header holds a line break")
            lines.append(f"{name}: {value}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        key = (parts.scheme, parts.netloc)
        sock = self._connection(parts, key, timeout)
        keep = False
        try:
            sock.settimeout(timeout)
            sock.sendall(request)
            block, extra = _read_header_block(sock, timeout, deadline)
            status, reason, fields, will_close = _parse_head(block)
            found = _Fields(fields)
            if method == "HEAD" or status < 200 or status in (204, 304):
                # Bytes after the headers of an answer without a body would be one it must
                # not have: what the connection holds next would not line up with the next
                # request.
                keep = not will_close and not extra
                return Answer(method, url, status, reason, found)
            body = _Framed(sock, extra, found, timeout, deadline)
            content = read_body(found, body.read1, limit, deadline, status)
            keep = not will_close and body.complete
            return Answer(method, url, status, reason, found, content)
        finally:
            if not keep:
                self._forget(key, sock)

    def close(self) -> None:
        with self._lock:
            sockets, self._open = self._open, set()
        for sock in sockets:
            sock.close()

    def _connection(self, parts: SplitResult, key: tuple[str, str], timeout: float) -> socket.socket:
        pool = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = {}
        sock = pool.get(key)
        # A kept-alive connection the server has closed meanwhile reads as ready (EOF);
        # urllib3 makes the same check before reusing one.
        if sock is not None and not _readable(sock):
            return sock
        if sock is not None:
            self._forget(key, sock)
        host = parts.hostname or ""
        sock = socket.create_connection(
            (host, parts.port or (443 if parts.scheme == "https" else 80)), timeout=timeout
        )
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if parts.scheme == "https":
                sock = self._ssl_context().wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        pool[key] = sock
        with self._lock:
            self._open.add(sock)
        return sock

    def _forget(self, key: tuple[str, str], sock: socket.socket) -> None:
        pool = self._local.pool
        if pool.get(key) is sock:
            del pool[key]
        sock.close()
        with self._lock:
            self._open.discard(sock)

    def _ssl_context(self) -> ssl.SSLContext:
        with self._lock:
            if self._context is None:
                import certifi

                context = tls_context()
                if self._verify is False:
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                else:
                    where = certifi.where() if self._verify is True else str(self._verify)
                    context.load_verify_locations(
                        **({"capath": where} if os.path.isdir(where) else {"cafile": where})
                    )
                if self._client_cert is not None:
                    context.load_cert_chain(*self._client_cert)
                self._context = context
            return self._context


def tls_context() -> ssl.SSLContext:
    """The TLS context urllib3's ``create_urllib3_context()`` builds by default, the one
    requests would use, before its trust is set: made here because the first request of a
    run with tls_verify off tries HTTPS, and urllib3's import costs more CPU than the rest
    of a no-op's start-up (a test compares both contexts)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_SSLv2 | ssl.OP_NO_SSLv3 | ssl.OP_NO_COMPRESSION | ssl.OP_NO_TICKET
    if sys.version_info >= (3, 13):
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN | ssl.VERIFY_X509_STRICT
    context.post_handshake_auth = True
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    context.hostname_checks_common_name = False
    if "SSLKEYLOGFILE" in os.environ:
        keylog = os.path.expandvars(os.environ["SSLKEYLOGFILE"])
        if keylog:
            context.keylog_filename = keylog
    return context


class _Fields(Mapping[str, str]):
    """An answer's header fields, found by name in any case, as in requests'
    CaseInsensitiveDict; repeated fields joined by commas, as urllib3 joins them."""

    def __init__(self, fields: Iterable[tuple[str, str]]):
        self._fields: dict[str, tuple[str, str]] = {}  # lower-cased name: (name, value)
        for name, value in fields:
            key = name.lower()
            known = self._fields.get(key)
            self._fields[key] = (name, value) if known is None else (known[0], f"{known[1]}, {value}")

    def __getitem__(self, name: str) -> str:
        return self._fields[name.lower()][1]

    def get(self, name: str, default: Any = None) -> Any:  # Mapping's, without its try/except
        found = self._fields.get(name.lower())
        return default if found is None else found[1]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._fields.values())

    def __len__(self) -> int:
        return len(self._fields)


def _readable(sock: socket.socket) -> bool:
    """Whether a kept-alive connection has something to read before a request is sent on
    it: it was closed by the server meanwhile (EOF), or holds bytes no request asked for.
    urllib3 makes the same check before reusing a connection."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _raised_by(err: BaseException, module: str, *names: str) -> bool:
    """Whether ``err`` is one of the exceptions ``names`` of ``module``; never when that
    module was not imported (nothing of it can have raised), so it is not imported for it."""
    found = sys.modules.get(module)
    return found is not None and isinstance(err, tuple(getattr(found, name) for name in names))


class _Framed:
    """The body of an answer on a ``KeptConnections`` socket, as its framing delimits it:
    chunked, a Content-Length, or the connection's end. ``read1`` as ``read_body`` wants it,
    each read of the socket within the request's deadline; a body cut short raises
    http.client.IncompleteRead, as urllib3 and http.client do."""

    def __init__(
        self, sock: socket.socket, data: bytes, headers: Mapping[str, str], timeout: float, deadline: float
    ):
        self._sock, self._data = sock, data
        self._timeout, self._deadline = timeout, deadline
        self._done = False
        self._chunked = False
        self._left: int | None = None  # bytes of the body (chunked: of this chunk); None: until the end
        self._chunks = 0  # chunks begun
        coding = headers.get("Transfer-Encoding", "").strip().lower()
        length = headers.get("Content-Length")
        if coding:
            if coding != "chunked":
                raise BodyError(
                    f"sent a body in Transfer-Encoding {_described(coding)}, which was not asked for"
                )
            self._chunked, self._left = True, 0
        elif length is not None:
            values = {v.strip() for v in length.split(",")}  # repeated headers, joined
            value = values.pop() if len(values) == 1 else ""
            if not value.isdigit():
                raise BodyError(f"sent a Content-Length that is no length ({_described(length)})")
            self._left = int(value)

    @property
    def complete(self) -> bool:
        """Whether the body was read to its end and nothing follows it: the connection
        may carry the next request."""
        return self._done and self._left is not None and not self._data

    def read1(self, size: int) -> bytes:
        if self._done:
            return b""
        if self._chunked and not self._left:
            if self._chunks:
                self._line()  # the line break that ends the chunk before
            line = self._line().split(b";", 1)[0].strip()
            if not line or any(c not in b"0123456789abcdefABCDEF" for c in line):
                raise http.client.IncompleteRead(b"")  # as urllib3's InvalidChunkLength
            self._left, self._chunks = int(line, 16), self._chunks + 1
            if not self._left:
                while self._line():  # trailer fields, up to the blank line
                    pass
                self._done = True
                return b""
        elif self._left == 0:
            self._done = True
            return b""
        if not self._data:
            self._data = self._recv()
            if not self._data:
                if self._left is not None:
                    raise http.client.IncompleteRead(b"", self._left)
                self._done = True
                return b""
        want = size if self._left is None else min(size, self._left)
        chunk, self._data = self._data[:want], self._data[want:]
        if self._left is not None:
            self._left -= len(chunk)
        return chunk

    def _line(self) -> bytes:
        """One line of the chunked framing, without its line break."""
        while (end := self._data.find(b"\r\n", 0, HEAD_MAX)) < 0:
            if len(self._data) >= HEAD_MAX:
                raise BodyError(f"sent a chunk header longer than {HEAD_MAX >> 10} KiB")
            more = self._recv()
            if not more:
                raise http.client.IncompleteRead(b"")
            self._data += more
        line, self._data = self._data[:end], self._data[end + 2 :]
        return line

    def _recv(self) -> bytes:
        return _recv_within(self._sock, self._timeout, self._deadline, "not all of the body")


def _recv_within(sock: socket.socket, timeout: float, deadline: float, received: str) -> bytes:
    """One read of the socket, within ``timeout`` and by ``deadline``; b"" at its end.
    BodyError when the deadline comes first (``received`` says how far the answer got)."""
    too_slow = BodyError(f"sent its answer too slowly ({received} received before the deadline)")
    left = deadline - time.monotonic()
    if left <= 0:
        raise too_slow
    sock.settimeout(min(timeout, left))
    try:
        return sock.recv(_READ_SIZE)
    except TimeoutError:
        if left < timeout:  # the wait was cut short by the deadline, not the read timeout
            raise too_slow from None
        raise


_MAX_FIELDS = 99  # http.client's bound (_MAXHEADERS, 100 lines: the empty one counts)
# A plain HTTP/1.1 header block: a final status, then fields of a name, a colon and a value
# on one line each, then the empty line; matched whole, then split into its fields.
_PLAIN_HEAD_RE = re.compile(
    rf"HTTP/1\.1 ([2-5][0-9][0-9])(?: ([^\r\n]*))?\r\n((?:[!-9;-~]+:[^\r\n]*\r\n){{0,{_MAX_FIELDS}}})\r\n"
)
_PLAIN_FIELD_RE = re.compile(r"([!-9;-~]+):[ \t]*([^\r\n]*)\r\n")


def _parse_head(block: bytes) -> tuple[int, str, list[tuple[str, str]], bool]:
    """Status, reason, header fields in order and whether the server closes the connection,
    of a header block as ``http.client`` reads it. A plain HTTP/1.1 answer, which is every
    registry's, is split here: http.client's email-based parser was a third of a HEAD's CPU.
    Anything else (another version, an interim answer, folded or odd lines) is parsed by
    http.client itself, so both read every answer alike."""
    plain = _PLAIN_HEAD_RE.fullmatch(block.decode("iso-8859-1"))
    if plain is not None:
        pairs: list[tuple[str, str]] = _PLAIN_FIELD_RE.findall(plain.group(3))
        connection = next((v for n, v in pairs if n.lower() == "connection"), "")
        return int(plain.group(1)), (plain.group(2) or "").strip(), pairs, "close" in connection.lower()
    answer = http.client.HTTPResponse(_Received(block), method="HEAD")  # type: ignore[arg-type]
    answer.begin()
    return answer.status, answer.reason or "", answer.msg.items(), answer.will_close


def _read_header_block(sock: socket.socket, timeout: float, deadline: float) -> tuple[bytes, bytes]:
    """The bytes up to the blank line that ends an answer's header block, and those after
    it: within HEAD_MAX bytes and by ``deadline``, however slowly the server sends them."""
    data = b""
    while True:
        end = data.find(b"\r\n\r\n", 0, HEAD_MAX + 4)
        if end >= 0:
            return data[: end + 4], data[end + 4 :]
        if len(data) >= HEAD_MAX + 4:
            raise BodyError(f"sent headers larger than the {HEAD_MAX >> 10} KiB an answer's headers may have")
        chunk = _recv_within(sock, timeout, deadline, f"{len(data)} bytes of headers")
        if not chunk:
            raise http.client.RemoteDisconnected("Remote end closed connection without response")
        data += chunk


# --- client --------------------------------------------------------------------------------


@dataclass
class _Token:
    value: str
    expires: float  # time.monotonic()


class RegistryClient:
    """One registry host. Safe to share between worker threads."""

    def __init__(
        self,
        host: str,
        *,
        endpoint: str | None = None,
        tls_verify: bool = True,
        ca_file: str | None = None,
        client_cert: tuple[str, str] | None = None,
        credentials: Credentials | None = None,
        timeout: float = 30.0,
        deadline: float = DEADLINE_DEFAULT,
        max_retries: int = 4,
        max_wait: float = 120.0,
        concurrency: int = DEFAULT_CONCURRENCY,
        user_agent: str = f"syncer/{__version__}",
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.host = host
        self.endpoint = endpoint or (DOCKER_HUB_ENDPOINT if host == DOCKER_HUB else host)
        self.tls_verify = tls_verify
        self.ca_file = ca_file
        self.client_cert = client_cert  # (certificate, key) files shown to the registry
        self.timeout = timeout  # seconds to connect, and between two reads of an answer
        self.deadline = deadline  # seconds for one answer, body included
        self.max_retries = max_retries
        self.max_wait = max_wait  # seconds one request may spend retrying: sleeps and failed tries
        self.user_agent = user_agent
        self.ratelimit: RateLimit | None = None
        self.stats: Counter[str] = Counter()
        self._credentials = credentials
        self._sleep = sleep
        self._throttle = Throttle(concurrency, sleep=sleep)
        self._scheme = "https"
        self._scheme_probe = threading.Lock()
        self._scheme_settled = threading.Event()  # set once the registry's scheme is known
        if tls_verify:
            self._scheme_settled.set()  # HTTPS, always
        self._lock = threading.Lock()
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._kept: KeptConnections | None = None  # once a request goes through it
        # Passed with every request: requests lets REQUESTS_CA_BUNDLE override a session's
        # verify setting, which would silently drop ca_file and tls_verify: false.
        self._requests_verify: str | bool = (ca_file or _env_ca_bundle() or True) if tls_verify else False
        self._proxies: dict[str, dict[str, str]] = {}
        self._basic = False  # the registry asked for Basic: send it up front from now on
        self._bearer: Challenge | None = None  # realm and service of its token server
        self._tokens: dict[str, _Token] = {}  # by scope
        self._fetching: dict[str, threading.Event] = {}  # scopes whose token is being fetched
        self._batching = True  # ask for several repositories' tokens at once (expect_pulls)
        self._batched: set[str] = set()  # scopes whose cached token came from such a request
        self._expected: list[str] = []  # scopes expect_pulls named, in order
        self._expected_set: set[str] = set()
        self._expected_next = 0  # the first of them not yet offered to a batch

    def __repr__(self) -> str:
        return f"RegistryClient({self.host!r}, endpoint={self.endpoint!r})"

    @property
    def where(self) -> str:
        """The registry as named in messages."""
        return self.host if self.endpoint == self.host else f"{self.host} (via {self.endpoint})"

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        if self._kept is not None:
            self._kept.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- public API ------------------------------------------------------------------------

    def list_tags(
        self, repository: str, *, page_size: int | None = None, max_pages: int = 1000
    ) -> TagListing:
        """All tags, following ``Link: <…>; rel="next"`` for at most ``max_pages`` pages.

        Entries that are not tags (not strings, or outside the reference grammar) are
        dropped, and named in ``dropped``: they could not be pulled by that name anyway, and
        would otherwise reach selection regexes, paths and reports. A page whose ``tags`` is
        not a list is an error; ``null`` is an empty page, as distribution answers for a
        repository whose tags were all deleted."""
        _check_repository(repository)
        url = self._url(f"/v2/{repository}/tags/list")
        params = {"n": str(page_size)} if page_size else None
        tags: list[str] = []
        dropped: list[object] = []
        for page in range(1, max_pages + 1):
            resp = self._request("GET", url, kind="tags", repository=repository, params=params)
            if resp.status_code in (400, 403) and (page > 1 or b"pagination" in resp.content):
                raise RegistryError(
                    f"{self.where} refused page {page} of the tags of {repository} "
                    f"({_error_text(resp)}); name the tags you need under tags: in the catalog "
                    "entry instead of match:, or give credentials for this registry in "
                    "catalog/settings.yaml",
                    registry=self.host,
                    status=resp.status_code,
                )
            self._check(resp, f"repository {repository}", repository)
            listed = _json(resp, self.where).get("tags")
            if listed is None:
                listed = []
            if not isinstance(listed, list):
                raise RegistryError(
                    f"{self.where} sent a tag list for {repository} whose 'tags' is "
                    f"{_described(listed)}, not a list (page {page}); the registry, or a proxy in "
                    f"front of it, is broken: check what answers at {self.endpoint}, or name the "
                    "tags you need under tags: in the catalog entry",
                    registry=self.host,
                )
            for value in listed:
                (tags if isinstance(value, str) and refs.is_valid_tag(value) else dropped).append(value)
            next_url, params = self._next_link(resp), None
            if next_url is None:
                return TagListing(tags, tuple(_described(v) for v in dropped))
            url = next_url
        raise RegistryError(
            f"{self.where} returned more than {max_pages} pages of tags for {repository}; "
            "name the tags you need under tags: in the catalog entry",
            registry=self.host,
        )

    def head_manifest(self, repository: str, reference: str) -> ManifestRef:
        """Digest, media type and size of a tag or digest by HEAD only: never a pull."""
        _check_reference(repository, reference)
        resp = self._request(
            "HEAD",
            self._url(f"/v2/{repository}/manifests/{reference}"),
            kind="manifest",
            repository=repository,
            headers={"Accept": ", ".join(MANIFEST_TYPES)},
        )
        subject = _manifest_name(repository, reference)
        self._check(resp, f"manifest {subject}", repository)
        asked = reference if refs.is_valid_digest(reference) else None
        digest = self._announced_digest(resp, subject, asked) or asked
        if not digest:
            raise RegistryError(
                f"{self.where} sent no Docker-Content-Digest for {subject}, so "
                "its digest cannot be known without a pull; use a registry that implements "
                "the distribution API fully, or list the image by digest",
                registry=self.host,
            )
        length = resp.headers.get("Content-Length")
        return ManifestRef(
            digest=digest,
            media_type=_media_type(resp.headers.get("Content-Type", "")),
            size=int(length) if length and length.isdigit() else None,
        )

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        """The manifest bytes, checked against the digest asked for or announced."""
        _check_reference(repository, reference)
        resp = self._request(
            "GET",
            self._url(f"/v2/{repository}/manifests/{reference}"),
            kind="manifest",
            repository=repository,
            headers={"Accept": ", ".join(MANIFEST_TYPES)},
        )
        subject = _manifest_name(repository, reference)
        self._check(resp, f"manifest {subject}", repository)
        raw = resp.content
        asked = reference if refs.is_valid_digest(reference) else None
        announced = self._announced_digest(resp, subject, asked)
        digest = self._verify(raw, asked or announced, f"manifest {subject}")
        try:
            doc = resp.json()
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise RegistryError(
                f"{self.where} sent a manifest for {subject} that is not a JSON object", registry=self.host
            )
        media_type = _media_type(resp.headers.get("Content-Type", "")) or doc.get("mediaType", "")
        return Manifest(digest=digest, media_type=media_type, raw=raw, json=doc)

    def put_manifest(self, repository: str, reference: str, raw: bytes, media_type: str) -> str:
        """Stores ``raw`` under a tag or its digest; returns the digest."""
        _check_reference(repository, reference)
        digest = digest_of(raw)
        if refs.is_valid_digest(reference) and reference != digest:
            raise RegistryError(f"manifest bytes have digest {digest}, not {reference}", registry=self.host)
        resp = self._request(
            "PUT",
            self._url(f"/v2/{repository}/manifests/{reference}"),
            kind="manifest",
            repository=repository,
            data=raw,
            headers={"Content-Type": media_type},
        )
        subject = _manifest_name(repository, reference)
        self._check(resp, f"manifest {subject}", repository)
        self._announced_digest(resp, subject, digest)
        return digest

    def blob_exists(self, repository: str, digest: str) -> bool:
        _check_digest(repository, digest)
        resp = self._request(
            "HEAD", self._url(f"/v2/{repository}/blobs/{digest}"), kind="blob", repository=repository
        )
        if resp.status_code == 404:
            return False
        self._check(resp, f"blob {repository}@{digest}", repository)
        return True

    def get_blob(self, repository: str, digest: str, size: int | None = None) -> bytes:
        """A small blob whole (a signature payload), of the ``size`` its descriptor gives:
        refused before any download when that is over BODY_MAX, and never read past it
        (without a size, past BODY_MAX)."""
        _check_digest(repository, digest)
        what = f"blob {repository}@{digest}"
        size = BODY_MAX if size is None else size
        if not 0 <= size <= BODY_MAX:
            raise RegistryError(
                f"{what} is described as {size} bytes; a blob read whole may "
                f"have up to {BODY_MAX >> 20} MiB, so it was not downloaded",
                registry=self.host,
            )
        resp = self._request(
            "GET",
            self._url(f"/v2/{repository}/blobs/{digest}"),
            kind="blob",
            repository=repository,
            limit=size,
        )
        self._check(resp, what, repository)
        self._verify(resp.content, digest, what)
        return resp.content

    def iter_blob(self, repository: str, digest: str, *, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The blob in chunks, for blobs too large to hold (layers). Its digest is checked
        after the last chunk: a caller that reads to the end gets RegistryError instead of
        the end when the bytes differ, so it must not trust what it read before then."""
        _check_digest(repository, digest)
        what = f"blob {repository}@{digest}"
        hasher = hashlib.new(self._algorithm(digest, what))
        resp = self._request(
            "GET",
            self._url(f"/v2/{repository}/blobs/{digest}"),
            kind="blob",
            repository=repository,
            stream=True,
            # the bytes as stored: their digest is the blob's
            headers={"Accept-Encoding": "identity"},
        )
        try:  # also when the caller stops early: the connection is not left half read
            self._check(resp, what, repository)
            stream = resp.stream
            assert stream is not None  # a successful answer to a streamed request
            while True:
                try:
                    chunk = stream.raw.read(chunk_size, decode_content=False)
                except Exception as err:  # noqa: BLE001 - the boundary, as in _send_with_retries
                    raise RegistryError(
                        f"{self.where} failed sending {what}: {transport_failure(err)[1]}; run again",
                        registry=self.host,
                    ) from None
                if not chunk:
                    break
                hasher.update(chunk)
                yield chunk
        finally:
            resp.close()
        self._same_digest(f"{digest.split(':', 1)[0]}:{hasher.hexdigest()}", digest, what)

    def put_blob(self, repository: str, data: bytes, *, check: bool = True) -> str:
        """Monolithic upload (POST then PUT); nothing is sent when the blob is there already.

        ``check=False`` skips asking first, for a caller that knows the blob is most likely
        new: uploading a blob again is harmless, and asking costs a request every time.
        """
        digest = digest_of(data)
        if check and self.blob_exists(repository, digest):
            return digest
        resp = self._request(
            "POST", self._url(f"/v2/{repository}/blobs/uploads/"), kind="upload", repository=repository
        )
        self._check(resp, f"blob upload to {repository}", repository)
        location = resp.headers.get("Location")
        if not location:
            raise RegistryError(
                f"{self.where} started an upload to {repository} without a Location header",
                registry=self.host,
            )
        upload = self._same_origin(location, resp.url)
        upload += ("&" if "?" in upload else "?") + f"digest={digest}"
        resp = self._request(
            "PUT",
            upload,
            kind="upload",
            repository=repository,
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        self._check(resp, f"blob upload to {repository}", repository)
        return digest

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Links blob ``digest`` of ``from_repository`` into ``repository`` of the same registry
        without sending its bytes (cross-repository mount). False when the registry declined
        (it then starts an ordinary upload, which is cancelled here): it does not support
        mounts, or the blob is not in ``from_repository``."""
        _check_digest(repository, digest)
        _check_repository(from_repository)
        resp = self._request(
            "POST",
            self._url(f"/v2/{repository}/blobs/uploads/"),
            kind="upload",
            repository=repository,
            params={"mount": digest, "from": from_repository},
            scope=f"{_scope(repository, 'POST')} {_scope(from_repository, 'GET')}",
        )
        if resp.status_code == 201:
            return True
        self._check(resp, f"blob mount into {repository}", repository)
        location = resp.headers.get("Location")
        if resp.status_code == 202 and location:
            try:  # an abandoned upload would linger until the registry purges uploads
                self._request(
                    "DELETE", self._same_origin(location, resp.url), kind="upload", repository=repository
                )
            except SyncerError as err:
                log.debug("cancelling the upload %s on %s failed: %s", location, self.where, err)
        return False

    def delete_manifest(self, repository: str, digest: str) -> None:
        _check_digest(repository, digest)
        resp = self._request(
            "DELETE",
            self._url(f"/v2/{repository}/manifests/{digest}"),
            kind="manifest",
            repository=repository,
        )
        if resp.status_code == 405:
            raise RegistryError(
                f"deletes are disabled on {self.where} (DELETE {repository}@{digest} answered "
                "405); enable them in the registry's configuration (distribution: "
                "storage.delete.enabled: true, or REGISTRY_STORAGE_DELETE_ENABLED=true)",
                registry=self.host,
                status=405,
            )
        self._check(resp, f"manifest {repository}@{digest}", repository)

    # --- HTTP ------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self._scheme}://{self.endpoint}{path}"

    def _same_origin(self, url: str, base: str) -> str:
        """Refuses URLs (Link, Location) that would take our credentials to another host, and
        keeps our scheme: a registry behind a TLS proxy may announce http:// URLs."""
        parts = self._split(url, base)
        if parts.netloc != self.endpoint:
            raise RegistryError(
                f"{self.where} pointed to another host "
                f"({_printable(parts.netloc, 80)}); "
                "refusing to follow it with this registry's credentials",
                registry=self.host,
            )
        return parts._replace(scheme=self._scheme).geturl()

    def _split(self, url: str, base: str = "") -> SplitResult:
        """``url`` (a Location, Link or realm the registry sent), resolved against ``base``
        and split; RegistryError if it cannot be, rather than urllib's ValueError."""
        try:
            parts = urlsplit(urljoin(base, url))
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            raise RegistryError(
                f"{self.where} sent a URL that cannot be parsed "
                f"({_described(url, 80)}); check what answers at "
                f"{self.endpoint}",
                registry=self.host,
            ) from None
        return parts

    def _next_link(self, resp: Answer) -> str | None:
        nxt = resp.links.get("next", {}).get("url")
        return self._same_origin(nxt, resp.url) if nxt else None

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            import requests
            from urllib3.exceptions import InsecureRequestWarning

            if not self.tls_verify:
                # The catalog asked for no verification; urllib3's warning on every request
                # would only bury the progress lines.
                warnings.filterwarnings("ignore", category=InsecureRequestWarning)
            session = requests.Session()
            # The environment (proxies, CA bundle) is read once per host by this client, not
            # by requests on every request: that scan of os.environ was a third of the CPU
            # time of a HEAD, and discovery sends one per tracked tag.
            session.trust_env = False
            session.cert = self.client_cert
            session.headers["User-Agent"] = self.user_agent
            # The one encoding read_body decodes (within its cap); requests would offer
            # whichever decoders happen to be installed.
            session.headers["Accept-Encoding"] = "gzip"
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def _request(
        self,
        method: str,
        url: str,
        *,
        kind: str,
        repository: str,
        headers: dict[str, str] | None = None,
        scope: str | None = None,
        **kwargs: Any,
    ) -> Answer:
        """Sends with the known auth; on 401 authenticates as challenged and sends once more.

        ``scope``: the token scopes the request needs, space-separated, when it is more than
        the method's actions on ``repository`` (a mount also pulls from another repository).
        """
        scope = scope or _scope(repository, method)
        headers = dict(headers or {})
        auth = self._authorization(scope)
        if auth:
            headers["Authorization"] = auth
        resp = self._send(method, url, kind=kind, headers=headers, **kwargs)
        if resp.status_code != 401:
            return resp
        try:
            challenge = parse_challenge(resp.headers.get("WWW-Authenticate"))
        except ChallengeError as err:
            raise RegistryAuthError(
                f"{self.where} answered 401 with a malformed "
                f"WWW-Authenticate header ({err}); the registry, or a proxy "
                f"in front of it, is broken: check what answers at "
                f"{self.endpoint}",
                registry=self.host,
                status=401,
            ) from None
        if challenge is None:
            raise self._auth_error(
                f"{self.where} answered 401 without a usable WWW-Authenticate challenge (Bearer or Basic)",
                repository,
            )
        headers["Authorization"] = self._authenticate(
            challenge, scope, repository, headers.get("Authorization")
        )
        resp = self._send(method, url, kind=kind, headers=headers, **kwargs)
        if resp.status_code == 401:
            raise self._auth_error(
                f"{self.where} refused access to {repository} (or it does not exist)", repository
            )
        return resp

    def _send(self, method: str, url: str, *, kind: str, headers: dict[str, str], **kwargs: Any) -> Answer:
        if self._scheme_settled.is_set() or urlsplit(url).netloc != self.endpoint:
            return self._send_with_retries(method, url, kind=kind, headers=headers, **kwargs)
        # With tls_verify off the registry may speak HTTPS or plain HTTP. The first request
        # finds out (``_fall_back_to_http``) while the others wait: threads starting together
        # would each set up TLS first, loading the system's CAs (~17 ms of CPU) for nothing.
        with self._scheme_probe:
            try:
                return self._send_with_retries(method, url, kind=kind, headers=headers, **kwargs)
            finally:
                self._scheme_settled.set()

    def _send_with_retries(
        self, method: str, url: str, *, kind: str, headers: dict[str, str], **kwargs: Any
    ) -> Answer:
        """One request with retries: 429 after Retry-After, 5xx and network errors with
        exponential backoff and jitter, bounded by ``max_retries`` and ``max_wait``.

        The error boundary of this module: whatever the transport raises ends here as a
        RegistryError saying what happened (``transport_failure``)."""
        waited = 0.0  # sleeps and failed attempts: a dripping answer cut off at its end
        attempt = 0  # must not be tried max_retries times over, deadline after deadline
        while True:
            url = self._rescheme(url)
            status: int | None = None
            delay: float | None = None
            started = time.monotonic()
            try:
                resp = self._follow(
                    method, url, kind=kind, headers=headers, patience=self.max_wait - waited, **kwargs
                )
            except RegistryError:
                raise
            except Exception as err:  # noqa: BLE001 - the boundary: nothing untyped leaves
                if isinstance(err, ssl.SSLError) or _raised_by(err, "requests.exceptions", "SSLError"):
                    if urlsplit(url).netloc == self.endpoint and self._fall_back_to_http(err):
                        continue
                    raise self._tls_error(err) from None
                retry, reason = transport_failure(err)
                problem = reason
                if not retry:
                    raise RegistryError(
                        f"{self.where} {reason} on {method} "
                        f"{_shown_path(url)}; check what answers at "
                        f"{self.endpoint} (a proxy or the registry itself is "
                        "broken), then run again",
                        registry=self.host,
                    ) from None
            else:
                status = resp.status_code
                if resp.status_code == 429:
                    delay = parse_retry_after(resp.headers.get("Retry-After"), time.time())
                    problem = "is rate limiting us (429 Too Many Requests)"
                elif resp.status_code in RETRY_STATUSES:
                    problem = f"answered {resp.status_code} ({_error_text(resp)})"
                else:
                    return resp
            if delay is None:
                delay = min(30.0, 0.5 * 2**attempt) * random.uniform(0.5, 1.0)
            waited += time.monotonic() - started
            attempt += 1
            if attempt > self.max_retries or waited + delay > self.max_wait:
                message = (
                    f"{self.where} {problem} on {method} {_shown_path(url)}; gave up "
                    f"after {attempt} attempts over {waited:.0f}s"
                )
                if status == 429:
                    self._throttle.give_up()
                    raise RateLimitError(
                        message + "; wait for the rate limit to reset or authenticate to get a larger budget",
                        registry=self.host,
                        status=429,
                    )
                raise RegistryError(
                    message + "; check that the registry is up and reachable, then run again",
                    registry=self.host,
                    status=status,
                )
            log.debug("%s %s; retrying in %.1fs", self.where, problem, delay)
            if status == 429:
                self._throttle.pause(delay)  # the other threads hold back too
            self._sleep(delay)
            waited += delay

    def _follow(
        self, method: str, url: str, *, kind: str, headers: dict[str, str], patience: float, **kwargs: Any
    ) -> Answer:
        """One exchange, following redirects of reads (blob GETs go to storage or a CDN).

        Followed here rather than by requests, which reads each redirect's body whole and
        sends on to any scheme: the Authorization header goes only to the registry's own
        origin, and with tls_verify nothing is fetched over plain HTTP."""
        for _ in range(MAX_REDIRECTS + 1):
            resp = self._once(method, url, kind=kind, headers=headers, patience=patience, **kwargs)
            location = resp.headers.get("Location")
            if resp.status_code not in REDIRECT_STATUSES or method not in ("GET", "HEAD") or not location:
                return resp
            parts = self._split(location, url)
            target = parts.geturl()
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise RegistryError(
                    f"{self.where} redirected {method} {_shown_path(url)} to "
                    "something that is not an HTTP URL; check what answers at "
                    f"{self.endpoint}",
                    registry=self.host,
                )
            if self.tls_verify and parts.scheme == "http":
                raise RegistryError(
                    f"{self.where} redirected {method} {_shown_path(url)} to "
                    f"plain HTTP ({_shown(parts.netloc)}); with tls_verify on, "
                    "nothing is fetched unencrypted",
                    registry=self.host,
                )
            if urlsplit(url).netloc != parts.netloc:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            url = target
        raise RegistryError(
            f"{self.where} redirected {method} more than {MAX_REDIRECTS} times "
            f"(last to {_shown_path(url)}), a loop; check what answers at "
            f"{self.endpoint}",
            registry=self.host,
        )

    def _once(
        self,
        method: str,
        url: str,
        *,
        kind: str,
        headers: dict[str, str],
        patience: float,
        stream: bool = False,
        limit: int = BODY_MAX,
        **kwargs: Any,
    ) -> Answer:
        """One request and its answer, once a slot is free (``syncer.tools.throttle``), the body
        read unless ``stream`` and it succeeded; waits at most ``patience`` seconds for a
        pause that a 429 asked for. Transport failures are raised as they come:
        ``transport_failure`` maps them."""
        if self._throttle.acquire(patience) is None:
            raise RateLimitError(
                f"{self.where} is rate limiting us (429 Too Many Requests) for longer than the "
                f"retry budget of {method} {_shown_path(url)} allows; wait for the rate limit "
                "to reset or authenticate to get a larger budget, then run again",
                registry=self.host,
                status=429,
            )
        status: int | None = None
        try:
            deadline = time.monotonic() + self.deadline
            kept = self._kept_connections(method, url, stream, kwargs)
            if kept is not None:
                resp = kept.exchange(method, url, headers, self.timeout, deadline, limit)
            else:
                raw = self._session().request(
                    method,
                    url,
                    headers=headers,
                    timeout=(self.timeout, self.timeout),
                    verify=self._requests_verify,
                    proxies=self._proxies_for(url),
                    allow_redirects=False,
                    stream=True,
                    **kwargs,
                )
                resp = Answer(method, raw.url, raw.status_code, raw.reason or "", raw.headers)
                if stream and raw.status_code < 300:
                    resp.stream = raw
                else:
                    try:
                        resp.content = read_body(
                            raw.headers,
                            functools.partial(raw.raw.read1, decode_content=False),
                            limit,
                            deadline,
                            raw.status_code,
                        )
                    finally:
                        raw.close()
            status = resp.status_code
        finally:
            # The slot is held until the body is in (or the failure is known): a 429 counts
            # for the throttle only with the answer it came with.
            self._throttle.release(status)
        # Counted once answered, so the numbers match what the registry's access log shows.
        with self._lock:
            self.stats[method] += 1
            self.stats[f"{method} {kind}"] += 1
        log.debug("%s %s -> %s", method, url, resp.status_code)
        budget = parse_ratelimit(resp.headers.get("ratelimit-limit"), resp.headers.get("ratelimit-remaining"))
        if budget is not None:
            with self._lock:
                self.ratelimit = budget
        return resp

    def _kept_connections(self, method: str, url: str, stream: bool, kwargs: dict) -> KeptConnections | None:
        """The transport for a HEAD, or a GET read whole, with no parameters or body beyond
        its URL, to the registry itself, not through a proxy; None for everything else
        (uploads, streamed blobs, token requests, other hosts), which requests sends."""
        if (
            method not in ("HEAD", "GET")
            or stream
            or any(value is not None for value in kwargs.values())
            or urlsplit(url).netloc != self.endpoint
            or self._proxies_for(url)
            or not KeptConnections.serves(url)
        ):
            return None
        if self._kept is None:
            with self._lock:
                if self._kept is None:
                    self._kept = KeptConnections(self._requests_verify, self.user_agent, self.client_cert)
        return self._kept

    def _proxies_for(self, url: str) -> dict[str, str]:
        """HTTP(S)_PROXY and NO_PROXY as requests would apply them, once per scheme and host."""
        parts = urlsplit(url)
        key = f"{parts.scheme}://{parts.netloc}"
        if key not in self._proxies:
            # requests reads the *_proxy variables (urllib's getproxies); with none set, its
            # answer is {} whatever the URL, and requests need not be imported for it.
            if any(name.lower().endswith("_proxy") for name in os.environ):
                import requests.utils

                self._proxies[key] = requests.utils.get_environ_proxies(key)
            else:
                self._proxies[key] = {}
        return self._proxies[key]

    def _rescheme(self, url: str) -> str:
        """The registry's URLs in the scheme it speaks; other hosts' (a token realm) as given."""
        if self._scheme == "http" and url.startswith(f"https://{self.endpoint}/"):
            return "http://" + url[len("https://") :]
        return url

    def _fall_back_to_http(self, err: Exception) -> bool:
        """With tls_verify off, a server that answers TLS with plain HTTP is spoken to in HTTP
        from then on, as containers/image does for insecure registries."""
        if self.tls_verify:
            return False
        text = str(err).lower()
        if not any(
            s in text
            for s in ("wrong version number", "record layer failure", "unknown protocol", "http request")
        ):
            return False
        # Another thread may have switched already; retrying in HTTP is right either way.
        with self._lock:
            self._scheme = "http"
        log.debug("%s speaks plain HTTP; using it", self.where)
        return True

    def _tls_error(self, err: Exception) -> RegistryError:
        text = str(err)
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
            reason = re.search(r"certificate verify failed: ([^(')\"]*)", text)
            detail = reason.group(1).strip() if reason else "certificate verify failed"
            return RegistryError(
                f"the TLS certificate of {self.where} could not be verified ({detail}); put the "
                "CA that issued it in a directory as ca.crt and name that directory as this "
                "registry's ca_dir in catalog/settings.yaml (or set tls_verify: false there)",
                registry=self.host,
            )
        if "wrong version number" in text or "record layer failure" in text:
            return RegistryError(
                f"{self.where} does not speak HTTPS; set tls_verify: false for it in "
                "catalog/settings.yaml to allow plain HTTP",
                registry=self.host,
            )
        return RegistryError(
            f"TLS with {self.where} failed ({_network_reason(err)}); check "
            "the registry's certificate and tls_verify",
            registry=self.host,
        )

    # --- auth ------------------------------------------------------------------------------

    def expect_pulls(self, repositories: Iterable[str]) -> None:
        """Names the repositories that pulls (tag lists, manifest HEADs) will follow for, in
        order, so that a token service taking several scopes is asked for their tokens
        ``TOKEN_BATCH`` repositories at a time instead of once per repository."""
        scopes = [_scope(r, "GET") for r in dict.fromkeys(repositories) if refs.is_valid_repository_path(r)]
        with self._lock:
            self._expected, self._expected_set, self._expected_next = scopes, set(scopes), 0

    def _authorization(self, scope: str) -> str | None:
        """The Authorization header known to work, without a round trip if possible."""
        with self._lock:
            basic, bearer = self._basic, self._bearer
        if basic and self._credentials:
            return _basic_header(self._credentials)
        if bearer is not None:
            return f"Bearer {self._token(bearer, scope, scope)}"
        return None

    def _authenticate(self, challenge: Challenge, scope: str, repository: str, refused: str | None) -> str:
        """The Authorization header for a request answered 401 that carried ``refused``."""
        if challenge.scheme == "basic":
            if not self._credentials:
                raise self._auth_error(f"{self.where} requires credentials", repository)
            with self._lock:
                self._basic = True
            return _basic_header(self._credentials)
        if "realm" not in challenge.params:
            raise self._auth_error(f"{self.where} sent a Bearer challenge without a realm", repository)
        self._check_realm(challenge.params["realm"])
        with self._lock:
            self._bearer = challenge
            cached = self._tokens.get(scope)
            if cached is not None and refused == f"Bearer {cached.value}":
                del self._tokens[scope]
                if scope in self._batched:
                    # The others of its batch are as suspect: each would cost a 401 to find out.
                    for other in self._batched:
                        self._tokens.pop(other, None)
                    self._batched.clear()
                    self._stop_batching("the registry refused a token asked for with others")
        # The challenge's scope is what the registry wants for this request; cache the token
        # under our own scope key so the next request on this repository sends it up front.
        want = challenge.params.get("scope") or scope
        return f"Bearer {self._token(challenge, want, scope)}"

    def _check_realm(self, realm: str) -> None:
        """The token server must be an absolute URL; with tls_verify, an HTTPS one: the
        credentials and the token it returns would otherwise cross the network in clear."""
        parts = self._split(realm)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RegistryAuthError(
                f"{self.where} names a token server (realm) that is not an absolute http(s) "
                f"URL ({_described(realm, 80)}); check what answers at {self.endpoint}",
                registry=self.host,
            )
        if parts.scheme == "http" and self.tls_verify:
            raise RegistryAuthError(
                f"{self.where} names a plain-HTTP token server ({_described(parts.netloc, 80)}); "
                "with tls_verify on, no credentials or tokens are sent unencrypted: fix the "
                "registry's auth.token.realm, or set tls_verify: false for this registry in "
                "catalog/settings.yaml if it is a test registry",
                registry=self.host,
            )

    def _token(self, challenge: Challenge, want: str, key: str) -> str:
        """A token for ``want``, cached under ``key``: from the cache, from a fetch another
        thread has under way, or fetched, with the next expected scopes when batching."""
        if want != key:  # the registry asked for more than our usual scope: ask for exactly it
            return self._fetch_and_cache(challenge, want, key, [])
        while True:
            with self._lock:
                token = self._tokens.get(key)
                if token is not None and token.expires > time.monotonic():
                    return token.value
                pending = self._fetching.get(key)
                if pending is None:
                    extra = self._next_batch(key)
                    done = threading.Event()
                    for scope in (key, *extra):
                        self._fetching[scope] = done
                    break
            # Bounded by that fetch's own deadlines; if it failed, the loop fetches anew.
            pending.wait()
        try:
            return self._fetch_and_cache(challenge, want, key, extra)
        finally:
            with self._lock:
                for scope in (key, *extra):
                    if self._fetching.get(scope) is done:
                        del self._fetching[scope]
            done.set()

    def _next_batch(self, key: str) -> list[str]:
        """Expected scopes to ask for along with ``key``: neither cached nor being fetched.
        Called with the lock held; each expected scope is offered once, in order."""
        if not self._batching or key not in self._expected_set:
            return []
        now = time.monotonic()
        extra: list[str] = []
        while self._expected_next < len(self._expected) and len(extra) < TOKEN_BATCH - 1:
            scope = self._expected[self._expected_next]
            self._expected_next += 1
            token = self._tokens.get(scope)
            if scope == key or scope in self._fetching or (token and token.expires > now):
                continue
            extra.append(scope)
        return extra

    def _fetch_and_cache(self, challenge: Challenge, want: str, key: str, extra: list[str]) -> str:
        if extra:
            try:
                token = self._fetch_token(challenge, [want, *extra])
            except RegistryError as err:
                # A 4xx for the batch (too many scopes, one of them not allowed): ask for this
                # scope alone, as the client did before batching. Outages and 429s are not
                # the batch's fault and surface as they are.
                if err.status is None or not 400 <= err.status < 500 or err.status == 429:
                    raise
                self._stop_batching(
                    f"its token service answered {err.status} to {len(extra) + 1} scopes in one request"
                )
            else:
                covered = [scope for scope in extra if token_grants(token.value, scope)]
                if not covered:
                    self._stop_batching("its token service granted only the first of several scopes")
                with self._lock:
                    for scope in (key, want, *covered):
                        self._tokens[scope] = token
                    self._batched.update(covered)
                    self._batched.add(key)
                return token.value
        token = self._fetch_token(challenge, want.split(" "))
        with self._lock:
            self._tokens[key] = self._tokens[want] = token
            self._batched.discard(key)
        return token.value

    def _stop_batching(self, why: str) -> None:
        log.debug("asking %s's token service for one repository at a time: %s", self.where, why)
        self._batching = False

    def _fetch_token(self, challenge: Challenge, scopes: list[str]) -> _Token:
        realm = challenge.params["realm"]
        # Several scopes go as repeated parameters, as the token specification has them.
        params: dict[str, str | list[str]] = {"scope": scopes}
        if challenge.params.get("service"):
            params["service"] = challenge.params["service"]
        auth = (self._credentials.username, self._credentials.password) if self._credentials else None
        # Same retries as the registry itself: Docker Hub's token service has bad minutes too.
        resp = self._send("GET", realm, kind="token", headers={}, params=params, auth=auth)
        if resp.status_code in (401, 403):
            refused = "the credentials" if self._credentials else "an anonymous token"
            raise self._auth_error(
                f"the token server of {self.where} ({urlsplit(realm).netloc}) refused {refused}",
                scope_repository(scopes[0]),
            )
        if resp.status_code != 200:
            raise RegistryError(
                f"the token server of {self.where} answered {resp.status_code} "
                f"({_error_text(resp)}); run again later",
                registry=self.host,
                status=resp.status_code,
            )
        body = _json(resp, self.where)
        value = body.get("token") or body.get("access_token")
        if not value:
            raise RegistryError(f"the token server of {self.where} sent no token", registry=self.host)
        if not isinstance(value, str) or not _TOKEN_VALUE_RE.fullmatch(value):
            # Never shown: it is a credential. A line break in it would add headers of the
            # token server's choosing to our requests (requests refuses CR and LF, not NUL).
            raise RegistryError(
                f"the token server of {self.where} sent a token that is not "
                "printable ASCII without spaces, so it cannot go in an "
                "Authorization header; the token service, or something in "
                "between, is broken",
                registry=self.host,
            )
        expires_in = body.get("expires_in")
        lifetime = (
            expires_in
            if isinstance(expires_in, int) and not isinstance(expires_in, bool) and expires_in > 0
            else TOKEN_LIFETIME_DEFAULT
        )
        redact.remember(value)
        return _Token(value, time.monotonic() + max(0, lifetime - TOKEN_EXPIRY_MARGIN))

    def _auth_error(self, what: str, repository: str) -> RegistryAuthError:
        if self._credentials:
            advice = (
                f"check {self._credentials.origin or 'the credentials'}: they must hold a "
                f"valid username and password or token with access to {repository}"
            )
        else:
            advice = (
                f"no credentials are configured for {self.host}; add an auth block for it "
                "in catalog/settings.yaml (or check that the repository exists)"
            )
        return RegistryAuthError(f"{what}; {advice}", registry=self.host, status=401)

    # --- responses -------------------------------------------------------------------------

    def _check(self, resp: Answer, what: str, repository: str) -> None:
        status = resp.status_code
        if status < 400:
            return
        detail = _error_text(resp)
        if status == 404:
            raise NotFoundError(
                f"{what} not found on {self.where} ({detail}); check the repository, tag or digest",
                registry=self.host,
                status=404,
            )
        if status == 403:
            advice = (
                f"check that the account in {self._credentials.origin} may access it"
                if self._credentials
                else "configure credentials for this registry in catalog/settings.yaml"
            )
            raise RegistryAuthError(
                f"{self.where} denied {resp.method} on {repository} ({detail}); {advice}",
                registry=self.host,
                status=403,
            )
        raise RegistryError(
            f"{self.where} answered {status} to {resp.method} {_shown_path(resp.url)} ({detail})",
            registry=self.host,
            status=status,
        )

    def _announced_digest(self, resp: Answer, subject: str, expected: str | None) -> str | None:
        """The answer's Docker-Content-Digest, None when it sent none.

        The value would become a record's digest, a URL path and a signed payload, so it must
        be the reference grammar's algorithm:hex. When the request named ``expected`` (by
        digest, or the bytes just stored), an answer naming another digest is refused: the
        caller acts on the digest it asked for, never on the registry's say-so."""
        value = resp.headers.get("Docker-Content-Digest")
        if not value:
            return None
        if not refs.is_valid_digest(value):
            raise RegistryError(
                f"{self.where} sent a malformed Docker-Content-Digest for {subject} "
                f"({_shown(value)}; a digest is algorithm:hex, such as sha256: and 64 hex "
                "digits); the registry, or a proxy in front of it, is broken or rewriting "
                f"answers: check what answers at {self.endpoint}",
                registry=self.host,
                status=resp.status_code,
            )
        if expected is not None and value != expected:
            raise DigestMismatchError(
                f"{self.where} named another digest for {subject}: asked for {expected}, the "
                f"registry named {value}",
                registry=self.host,
                expected=expected,
                found=value,
            )
        return value

    def _verify(self, data: bytes, expected: str | None, what: str) -> str:
        actual = digest_of(data, self._algorithm(expected, what))
        if expected:
            self._same_digest(actual, expected, what)
        return actual

    def _algorithm(self, expected: str | None, what: str) -> str:
        algorithm = expected.split(":", 1)[0] if expected else "sha256"
        if algorithm not in ("sha256", "sha512"):
            raise RegistryError(
                f"{what} on {self.where} uses unsupported digest algorithm {algorithm}", registry=self.host
            )
        return algorithm

    def _same_digest(self, actual: str, expected: str, what: str) -> None:
        if actual != expected:
            raise DigestMismatchError(
                f"{what} from {self.where} has digest {actual}, expected "
                f"{expected}; the registry or something in between "
                "altered it",
                registry=self.host,
                expected=expected,
                found=actual,
            )


# --- helpers -------------------------------------------------------------------------------


# Names are checked against the reference grammar (core.refs) before they become part of a
# URL, so that a catalog value cannot reach another path.
def _check_repository(repository: str) -> None:
    if not refs.is_valid_repository_path(repository) or len(repository) > 255:
        raise UsageError(
            f"invalid repository name {repository!r}: use lower-case path components such as library/nginx"
        )


def _check_reference(repository: str, reference: str) -> None:
    _check_repository(repository)
    if not (refs.is_valid_tag(reference) or refs.is_valid_digest(reference)):
        raise UsageError(f"invalid tag or digest {reference!r} for {repository}")


def _shown(value: str) -> str:
    """A value a registry sent, for a message: quoted if it looks like a digest gone wrong,
    else only described. Messages reach terminals, CI logs and the run reports in git, where
    line breaks, escapes or Markdown from a hostile registry have no business."""
    if _SHOWABLE_RE.fullmatch(value):
        return f"'{value}'"
    return f"{len(value)} characters, some that no digest has"


def _manifest_name(repository: str, reference: str) -> str:
    """``repo:tag`` or ``repo@digest``, as references write them."""
    separator = "@" if refs.is_valid_digest(reference) else ":"
    return f"{repository}{separator}{reference}"


def _check_digest(repository: str, digest: str) -> None:
    _check_repository(repository)
    if not refs.is_valid_digest(digest):
        raise UsageError(
            f"{digest!r} is not a digest (sha256:…) for {repository}; blobs are "
            "read and manifests deleted by digest only"
        )


def _scope(repository: str, method: str) -> str:
    actions = {"GET": "pull", "HEAD": "pull", "DELETE": "delete"}.get(method, "pull,push")
    return f"repository:{repository}:{actions}"


def scope_repository(scope: str) -> str:
    parts = scope.split(":")
    return parts[1] if len(parts) >= 3 else scope


def token_grants(token: str, scope: str) -> bool:
    """Whether a JWT's ``access`` claim grants ``scope``'s actions. True for a token that is
    no JWT this can read: whether an opaque token covers a scope only the registry can say,
    and a 401 to it makes the client ask for that scope alone."""
    parts = token.split(".")
    if len(parts) != 3:
        return True
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:  # binascii.Error and UnicodeDecodeError included
        return True
    access = claims.get("access") if isinstance(claims, dict) else None
    if not isinstance(access, list):
        return True
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    wanted = set(actions.split(","))
    return any(
        isinstance(a, dict)
        and a.get("type") == kind
        and a.get("name") == name
        and isinstance(a.get("actions"), list)
        and wanted <= set(a["actions"])
        for a in access
    )


def _basic_header(creds: Credentials) -> str:
    pair = f"{creds.username}:{creds.password}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip()


def _json(resp: Answer, where: str) -> dict:
    try:
        body = resp.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise RegistryError(
            f"{where} sent an answer that is not a JSON object to {resp.method} {_shown_path(resp.url)}"
        )
    return body


def _error_text(resp: Answer) -> str:
    """The registry's own error codes and messages, short and on one line; falls back to the
    HTTP status. Only printable text of the answer is kept: it reaches terminals, CI logs and
    the reports in git."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            text = "; ".join(
                f"{e.get('code', '')}: {e.get('message', '')}".strip(": ")
                for e in errors
                if isinstance(e, dict)
            )
            if text:
                return _printable(text, 300)
        if isinstance(body.get("message"), str):
            return _printable(body["message"], 300)
    return f"{resp.status_code} {_printable(resp.reason, 60)}".strip()


def _printable(text: str, limit: int) -> str:
    """``text`` with control characters as spaces, cut to ``limit`` characters."""
    text = re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _described(value: object, limit: int = 40) -> str:
    """A JSON value a registry sent, for a message: escaped (no line break, escape sequence
    or non-ASCII character reaches a terminal or log) and cut to ``limit`` characters."""
    if isinstance(value, str):
        text = ascii(value)
    elif value is None or isinstance(value, (bool, int, float)):
        text = json.dumps(value)
    else:
        text = "an object" if isinstance(value, dict) else "an array"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _shown_path(url: str) -> str:
    """The path of a URL for a message, as ``_printable`` text (a redirect or realm from the
    registry may hold anything)."""
    return _printable(urlsplit(url).path, 120)


def _env_ca_bundle() -> str | None:
    # What requests itself would take from the environment for verify=True.
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or None


def _network_reason(err: Exception) -> str:
    """A short reason without the URL (which would repeat the host) or urllib3's reprs."""
    text = str(err)
    for needle in (
        "Connection refused",
        "timed out",
        "Name or service not known",
        "Temporary failure in name resolution",
        "Connection reset",
        "RemoteDisconnected",
        "certificate verify failed",
        "No route to host",
    ):
        if needle.lower() in text.lower():
            return needle.lower()
    return type(err).__name__
