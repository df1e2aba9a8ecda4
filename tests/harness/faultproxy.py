"""A fault-injecting HTTP proxy in front of a real registry.

Clients talk plain HTTP to the proxy on 127.0.0.1; it forwards every request to the upstream
registry unchanged (Host included, so the registry's Location and Link URLs point back to the
proxy) unless a queued fault matches, in which case the proxy answers with the fault instead:
a status with headers and body (429 with Retry-After, 503, Hub's pagination refusal…), a
dropped connection, or a stall (the real answer's headers and half its body, then silence). Faults are consumed in order, each for ``times`` matching requests.

distribution 2.8 ignores ``n`` and ``last`` on ``/tags/list`` and never sends a ``Link``
header; with ``paginate_tags=True`` the proxy pages the registry's full answer as the OCI
distribution spec (and distribution 3, and Docker Hub) do, so clients' pagination can be
tested against real content.

``add_headers`` are set on every forwarded answer (replacing the registry's own of the same
name): Docker Hub's ``ratelimit-limit``/``ratelimit-remaining``, which distribution never sends.
Assign a new dict to change them between requests.

    with FaultProxy(registry.url) as proxy:
        proxy.inject(429, headers={"Retry-After": "2"}, times=2, method="HEAD")
        client = RegistryClient(proxy.host, tls_verify=False)
        ...
        assert proxy.injected == 2
"""

from __future__ import annotations

import http.client
import json
import re
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.harness.localserver import LocalServer

# Headers that describe one hop, not the message: never forwarded.
_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
    }
)
UPSTREAM_TIMEOUT = 30.0

# Docker-Content-Digest values a lying front sends and no registry may: not algorithm:hex, the
# wrong length, and a bare line feed smuggling in a second digest header (http.client splits
# at the LF and requests joins the two headers with ", "): malformed either way.
INJECTED = "Docker-Content-Digest: sha256:" + "a" * 64
MALFORMED_DIGESTS = ("sha256:zz", "sha256:" + "a" * 63, "sha256:zz\n" + INJECTED)


@dataclass
class Fault:
    """An answer the proxy gives instead of forwarding, for the next ``times`` matches."""

    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    times: int = 1
    method: str | None = None  # only requests with this method
    path: str | None = None  # only requests whose path and query match this regex (search)
    drop: bool = False  # close the connection without answering
    # Forward the request, send the answer's headers and half its body, then send nothing
    # more for this many seconds (or until the proxy stops) and close: a stalled transfer.
    stall: float = 0.0
    # Forward the request after all and call ``then`` with the upstream's status before
    # answering: for crashes timed right after the upstream acted on a request.
    then: Callable[[int], None] | None = None

    def matches(self, method: str, uri: str) -> bool:
        if self.method and self.method != method:
            return False
        return self.path is None or re.search(self.path, uri) is not None


@dataclass(frozen=True)
class Seen:
    """One request the proxy received and what it answered."""

    method: str
    uri: str
    status: int  # 0 when the connection was dropped
    injected: bool
    headers: dict[str, str] = field(default_factory=dict)  # the request's, lower-case names
    received: int = 0  # bytes of the request's body
    sent: int = 0  # bytes of the answer's body (half of it for a stall)


class FaultProxy(LocalServer):
    """Started by the constructor or ``with``; ``stop()`` shuts it down and joins its thread."""

    def __init__(
        self,
        upstream: str,
        *,
        ca_file: str | None = None,
        paginate_tags: bool = False,
        add_headers: dict[str, str] | None = None,
        latency: float = 0.0,
    ):
        parts = urlsplit(upstream)
        # Seconds every request waits before it is forwarded: a registry across the internet
        # (Hub) is never as near as 127.0.0.1. Sleeping costs no CPU, so clients are compared
        # on round trips, not on the proxy.
        self.latency = latency
        self.paginate_tags = paginate_tags
        self.add_headers = dict(add_headers or {})
        self._upstream_tls = parts.scheme == "https"
        self._upstream = parts.netloc
        self._context = ssl.create_default_context(cafile=ca_file) if self._upstream_tls else None
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._stopped = threading.Event()
        self.seen: list[Seen] = []
        super().__init__(self._handler_class())

    @property
    def injected(self) -> int:
        with self._lock:
            return sum(1 for s in self.seen if s.injected)

    def inject(self, status: int = 503, **kwargs) -> Fault:
        """Queues a fault (see ``Fault`` for the keywords) and returns it."""
        fault = Fault(status=status, **kwargs)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def stop(self) -> None:
        self._stopped.set()  # ends stalled answers before the server waits for them
        super().stop()

    # --- serving ---------------------------------------------------------------------------

    def _take_fault(self, method: str, uri: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.times > 0 and fault.matches(method, uri):
                    fault.times -= 1
                    return fault
        return None

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def _forward(
        self, method: str, uri: str, headers: list[tuple[str, str]], body: bytes | None
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        if self._upstream_tls:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self._upstream, timeout=UPSTREAM_TIMEOUT, context=self._context
            )
        else:
            conn = http.client.HTTPConnection(self._upstream, timeout=UPSTREAM_TIMEOUT)
        try:
            conn.putrequest(method, uri, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                conn.putheader(name, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.reason, resp.getheaders(), data
        finally:
            conn.close()

    def _page(
        self, uri: str, headers: list[tuple[str, str]], data: bytes
    ) -> tuple[list[tuple[str, str]], bytes]:
        """The page of a full tag list that ``n`` and ``last`` ask for, with its next Link."""
        parts = urlsplit(uri)
        query = parse_qs(parts.query)
        tags = sorted(json.loads(data).get("tags") or [])
        if "last" in query:
            tags = [t for t in tags if t > query["last"][0]]
        headers = [(k, v) for k, v in headers if k.lower() != "link"]
        if "n" in query:
            n = int(query["n"][0])
            if len(tags) > n:
                tags = tags[:n]
                nxt = f"{parts.path}?{urlencode({'last': tags[-1], 'n': n})}"
                headers.append(("Link", f'<{nxt}>; rel="next"'))
        name = parts.path[len("/v2/") : -len("/tags/list")]
        return headers, json.dumps({"name": name, "tags": tags}).encode()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body leave in two writes; with Nagle's algorithm the body waited
            # for the client's delayed ACK, about 40 ms added to every answer with a body.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # the test reads ``proxy.seen``; stderr noise helps nobody

            def _body(self) -> bytes | None:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    # skopeo streams layers chunked; the registry takes them with a length too.
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = self.headers.get("Content-Length")
                return self.rfile.read(int(length)) if length else None

            def _handle(self) -> None:
                method, uri = self.command, self.path
                request_headers = {k.lower(): v for k, v in self.headers.items()}
                body = self._body()
                fault = proxy._take_fault(method, uri)
                if proxy.latency:
                    time.sleep(proxy.latency)
                if fault is not None and fault.drop:
                    proxy._record(Seen(method, uri, 0, True, request_headers, received=len(body or b"")))
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault is not None and fault.then is None and not fault.stall:
                    status, reason = fault.status, None
                    headers, data = list(fault.headers.items()), fault.body
                else:
                    forward = [
                        (k, v)
                        for k, v in self.headers.items()
                        if k.lower() not in _HOP_HEADERS and k.lower() != "content-length"
                    ]
                    try:
                        status, reason, headers, data = proxy._forward(method, uri, forward, body)
                    except OSError:
                        # The upstream is down: answer like a gateway would.
                        status, reason, headers, data = 502, None, [], b""
                    if fault is not None and fault.then is not None:
                        fault.then(status)
                    if (
                        proxy.paginate_tags
                        and method == "GET"
                        and status == 200
                        and urlsplit(uri).path.endswith("/tags/list")
                    ):
                        headers, data = proxy._page(uri, headers, data)
                    added = proxy.add_headers
                    headers = [
                        (k, v) for k, v in headers if k.lower() not in {a.lower() for a in added}
                    ] + list(added.items())
                sent = (
                    0
                    if method == "HEAD"
                    else len(data) // 2
                    if fault is not None and fault.stall
                    else len(data)
                )
                proxy._record(
                    Seen(
                        method,
                        uri,
                        status,
                        fault is not None,
                        request_headers,
                        received=len(body or b""),
                        sent=sent,
                    )
                )
                self.send_response(status, reason)
                for name, value in headers:
                    if name.lower() not in _HOP_HEADERS and name.lower() != "content-length":
                        self.send_header(name, value)
                declared = next((v for k, v in headers if k.lower() == "content-length"), None)
                # A HEAD answer announces the length of the body a GET would get.
                self.send_header(
                    "Content-Length", declared if method == "HEAD" and declared else str(len(data))
                )
                self.end_headers()
                if fault is not None and fault.stall:
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    proxy._stopped.wait(fault.stall)
                    self.close_connection = True
                    return
                if method != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

        return Handler
