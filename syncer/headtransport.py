"""Keep-alive HEAD requests on plain sockets: the transport of discovery's hot path.

A scheduled run sends one manifest HEAD per tracked tag, thousands when nothing changed, and
on a fast network the run's time is the client's CPU per request. Measured against the
benchmark's registry (``benchmarks/noop_discovery.py``), a HEAD costs about 0.5 ms of CPU
through requests and urllib3, 0.16 ms through ``http.client`` (most of it in its
email-based header parser), and 0.05 ms here. A HEAD answer is a status line and headers,
never a body (RFC 9110, 9.3.2), so reading it takes no more than finding the blank line.

``syncer.registry.RegistryClient`` sends its HEADs here unless a proxy applies, and every
other request (bodies, redirects, tokens, proxies) through requests. Failures are raised as
the requests exceptions the client already handles, so retries, TLS advice and the fall-back
to plain HTTP work alike on both paths.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import threading
from types import SimpleNamespace
from urllib.parse import SplitResult, urlsplit

import requests

MAX_HEADER_BYTES = 65536  # http.client's own limit on a header block


class Headers(dict):
    """Response headers by lower-case name, read case-insensitively like requests' headers.
    A repeated header keeps its first value, as ``http.client`` returns it."""

    def get(self, key: str, default=None):
        return dict.get(self, key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return dict.__getitem__(self, key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and dict.__contains__(self, key.lower())


class Answer:
    """What ``RegistryClient`` reads of a response, named as requests' ``Response`` names it."""

    content = b""

    def __init__(self, url: str, status: int, reason: str, headers: Headers):
        self.url = url
        self.status_code = status
        self.reason = reason
        self.headers = headers
        self.request = SimpleNamespace(method="HEAD")

    def json(self):
        raise ValueError("a HEAD answer has no body")


class _Connection:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.usable = True  # False once the server asked to close, or spoke out of turn


class HeadTransport:
    """One connection per thread and origin; safe to share between threads.

    ``verify``: False for no certificate check, a CA file or directory, or True for
    requests' own CA bundle (certifi), so both paths trust the same CAs.
    """

    def __init__(self, verify: str | bool):
        self._verify = verify
        self._context: ssl.SSLContext | None = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[_Connection] = []

    def head(self, url: str, headers: dict[str, str], timeout: float) -> Answer:
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        for name, value in headers.items():
            if any(c in name + value for c in "\r\n\0"):
                # A token from a token server could otherwise add headers of its own.
                raise requests.exceptions.InvalidHeader(f"the {name} header holds a line break")
        lines = [f"HEAD {path} HTTP/1.1", f"Host: {parts.netloc}",
                 *(f"{name}: {value}" for name, value in headers.items())]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        conn: _Connection | None = None
        try:
            conn = self._connection(parts, timeout)
            conn.sock.sendall(request)
            return self._answer(conn, url)
        except OSError as err:  # ssl.SSLError and timeouts included
            if conn is not None:
                conn.usable = False  # mid-exchange: what the socket holds next is unknown
            raise _as_requests_error(err) from err
        finally:
            if conn is not None and not conn.usable:
                self._forget(self._local.pool, (parts.scheme, parts.netloc), conn)

    def close(self) -> None:
        with self._lock:
            connections, self._open = self._open, []
        for conn in connections:
            conn.sock.close()

    def _answer(self, conn: _Connection, url: str) -> Answer:
        extra = b""
        while True:
            block, extra = _read_header_block(conn.sock, extra)
            lines = block.decode("latin-1").split("\r\n")
            version, _, rest = lines[0].partition(" ")
            code, _, reason = rest.partition(" ")
            if not version.startswith("HTTP/") or not code.isdigit():
                conn.usable = False
                raise ConnectionResetError(f"not an HTTP answer: {lines[0][:80]!r}")
            status = int(code)
            if not 100 <= status < 200:
                break  # else an interim answer: the real one follows
        found = Headers()
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                found.setdefault(name.strip().lower(), value.strip())
        keep = "close" not in found.get("connection", "").lower() and \
            (version != "HTTP/1.0" or "keep-alive" in found.get("connection", "").lower())
        # Bytes after the header block would be a body a HEAD answer must not have: the
        # connection can no longer be trusted to line up answers with requests.
        conn.usable = keep and not extra
        return Answer(url, status, reason, found)

    def _connection(self, parts: SplitResult, timeout: float) -> _Connection:
        pool = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = {}
        key = (parts.scheme, parts.netloc)
        conn = pool.get(key)
        if conn is not None:
            # A kept-alive connection the server has closed meanwhile reads as ready (EOF);
            # urllib3 makes the same check before reusing one.
            if not select.select([conn.sock], [], [], 0)[0]:
                return conn
            self._forget(pool, key, conn)
        host = parts.hostname or ""
        sock = socket.create_connection(
            (host, parts.port or (443 if parts.scheme == "https" else 80)), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if parts.scheme == "https":
                sock = self._ssl_context().wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        conn = _Connection(sock)
        pool[key] = conn
        with self._lock:
            self._open.append(conn)
        return conn

    def _forget(self, pool: dict, key: tuple[str, str], conn: _Connection) -> None:
        if pool.get(key) is conn:
            del pool[key]
        conn.sock.close()
        with self._lock:
            if conn in self._open:
                self._open.remove(conn)

    def _ssl_context(self) -> ssl.SSLContext:
        with self._lock:
            if self._context is None:
                if self._verify is False:
                    # Not create_default_context(): it loads the system's CAs, unused here.
                    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                else:
                    where = requests.certs.where() if self._verify is True else str(self._verify)
                    context = ssl.create_default_context(
                        **({"capath": where} if os.path.isdir(where) else {"cafile": where}))
                self._context = context
            return self._context


def _as_requests_error(err: OSError) -> requests.RequestException:
    """The requests exception ``RegistryClient`` handles for this socket or TLS failure."""
    if isinstance(err, ssl.SSLError):
        return requests.exceptions.SSLError(str(err))
    if isinstance(err, TimeoutError):  # socket.timeout is TimeoutError
        return requests.Timeout(f"{type(err).__name__}: timed out")
    return requests.ConnectionError(f"{type(err).__name__}: {err}")


def _read_header_block(sock: socket.socket, data: bytes) -> tuple[bytes, bytes]:
    """The bytes up to the blank line that ends a header block, and any bytes after it;
    ``data``: bytes already read."""
    while True:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            return data[:end], data[end + 4:]
        if len(data) > MAX_HEADER_BYTES:
            raise ConnectionResetError(f"the answer's headers exceed {MAX_HEADER_BYTES} bytes")
        chunk = sock.recv(MAX_HEADER_BYTES)
        if not chunk:
            raise ConnectionResetError("the server closed the connection without answering")
        data += chunk
