"""A hostile upstream registry: each repository answers with one thing a registry must not send.

A threaded HTTP server on 127.0.0.1 (HTTPS with ``tls=``), bounded in every way a client's
failure could make it run on: a dripping answer stops after ``DRIP_LIMIT`` seconds, a huge one
after its size, and every connection thread is a daemon that ``stop()`` outlives by at most
its own bound. Repositories (``/v2/<name>/…``) and what their tag list answers:

- ``seven``: ``{"tags": 7}``; ``nulltags``: ``{"tags": null}`` (what distribution answers
  for a repository whose tags were all deleted); ``junk``: a list of one tag and things that
  are no tags (numbers, null, Markdown, HTML, a line break).
- ``loop``: a redirect to itself; ``gzip``: ``Content-Encoding: gzip`` on a body that is not;
  ``cut``: a ``Content-Length`` of more than is sent before the connection closes.
- ``chunked``: tags ``1.0`` and ``1.1`` in chunked transfer coding, over several chunks,
  one with an extension, and a trailer field; the connection stays open. ``badchunk``: a
  chunk size that is not hex; ``cutchunk``: a chunk cut off by the connection's close;
  ``tegzip``: ``Transfer-Encoding: gzip, chunked``.
- ``huge``: 300 MiB of tag list, streamed without a length; ``announced``: 300 MiB announced
  by ``Content-Length``; ``hugemanifest``: a manifest as large.
- ``stall``: the start of an answer, then one byte every half second.
- ``malformed``: 401 with a ``WWW-Authenticate`` that is not one.
- ``realm``: 401 with two challenges, Basic and a Bearer whose token server is plain HTTP;
  ``twice``: the same, answered (tag ``1.0``) once the client sends the token that
  ``/token`` hands out (``TOKEN``), for a client that may use a plain-HTTP token server.
- ``echo403``, ``echo500``: with ``credentials`` set, 401 (Basic) until the client sends
  them, then 403 or 500 whose body and reason phrase echo the Authorization header and the
  password.

Manifest HEADs (``/v2/<name>/manifests/<tag>``), each answered with ``DIGEST`` when all goes
well: ``dripheaders``, the status line, then a header byte every half second;
``hugeheader``, a header of ``HUGE_HEADER`` bytes; ``baddigest``, a Docker-Content-Digest that
is markup; ``elsewhere``, a redirect to the same path on the server named by ``redirect_to``;
``busy``, 429 with ``Retry-After: 0`` to the first ``BUSY_429S`` HEADs; ``twice``, the
manifest once the client sends the token (as its tag list).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from tests.harness.localserver import LocalServer

HUGE = 300 << 20
DRIP_LIMIT = 60.0  # seconds a dripping answer goes on at most, whatever the client does
_CHUNK = b'"' + b"a" * 1022 + b'",'
_CASES = frozenset(
    {
        "seven",
        "nulltags",
        "junk",
        "loop",
        "gzip",
        "cut",
        "chunked",
        "badchunk",
        "cutchunk",
        "tegzip",
        "huge",
        "announced",
        "hugemanifest",
        "stall",
        "malformed",
        "realm",
        "twice",
        "echo403",
        "echo500",
    }
)
TOKEN = "hostile-token-0123456789"
DIGEST = "sha256:" + "ab" * 32
HUGE_HEADER = 100 << 10
BUSY_429S = 2
_HEAD_CASES = frozenset({"dripheaders", "hugeheader", "baddigest", "elsewhere", "busy"})


class HostileRegistry(LocalServer):
    """Started by the constructor; ``stop()`` shuts it down. ``seen`` lists (method, path,
    the Authorization header or "") of every request, ``ports`` the client's port of each."""

    def __init__(
        self,
        *,
        credentials: tuple[str, str] | None = None,
        tls: tuple[Path, Path] | None = None,
        redirect_to: str | None = None,
    ):
        self.credentials = credentials
        self.redirect_to = redirect_to  # host:port that ``elsewhere`` redirects to
        self.seen: list[tuple[str, str, str]] = []
        self.ports: list[int] = []
        self._lock = threading.Lock()
        super().__init__(self._handler_class(), tls)

    def requests_to(self, repository: str) -> list[tuple[str, str, str]]:
        with self._lock:
            return [s for s in self.seen if s[1].startswith(f"/v2/{repository}/")]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        hostile = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 30  # a client that stops reading does not hold a thread for longer

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def _answer(
                self, status: int, body: bytes = b"", headers: dict | None = None, reason: str | None = None
            ) -> None:
                self.send_response(status, reason)
                for name, value in (headers or {}).items():
                    for one in value if isinstance(value, list) else [value]:
                        self.send_header(name, one)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _tags(self, value: object) -> None:
                self._answer(
                    200,
                    json.dumps({"name": "x", "tags": value}).encode(),
                    {"Content-Type": "application/json"},
                )

            def _handle(self) -> None:
                auth = self.headers.get("Authorization", "")
                with hostile._lock:
                    hostile.seen.append((self.command, self.path, auth))
                    hostile.ports.append(self.client_address[1])
                parts = self.path.split("/")
                repo = parts[2] if len(parts) > 3 and parts[1] == "v2" else ""
                if self.path.startswith("/token"):
                    return self._answer(200, json.dumps({"token": TOKEN}).encode())
                if self.path == "/v2/" or not repo:
                    return self._answer(200, b"{}")
                try:
                    if repo in _HEAD_CASES or (repo == "twice" and "/manifests/" in self.path):
                        getattr(self, f"_head_{repo}")()
                    else:
                        getattr(self, f"_{repo}")() if repo in _CASES else self._unknown()
                except OSError:
                    self.close_connection = True  # the client gave up on the answer: right

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle

            def _unknown(self) -> None:
                self._answer(404, b'{"errors":[{"code":"NAME_UNKNOWN","message":"no"}]}')

            def _seven(self) -> None:
                self._tags(7)

            def _nulltags(self) -> None:
                self._tags(None)

            def _junk(self) -> None:
                self._tags(
                    [
                        "1.0",
                        7,
                        None,
                        "<img src=x onerror=alert(1)>",
                        "[Approve now](https://evil.example/)",
                        "a\nb",
                        "@acme/security",
                        {"tag": "x"},
                        "-rc",
                    ]
                )

            def _loop(self) -> None:
                self._answer(302, headers={"Location": self.path})

            def _gzip(self) -> None:
                self._answer(
                    200,
                    b'{"tags": ["1.0"]}',
                    {"Content-Encoding": "gzip", "Content-Type": "application/json"},
                )

            def _cut(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.write(b'{"tags": ["1.0", "1.1')
                self.wfile.flush()
                self.close_connection = True

            def _chunks(self, chunks: list[bytes], coding: str = "chunked") -> None:
                """``chunks``, each as it is, in chunked transfer coding."""
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", coding)
                self.end_headers()
                self.wfile.write(b"".join(chunks))

            def _chunked(self) -> None:
                body = json.dumps({"name": "x", "tags": ["1.0", "1.1"]}).encode()
                parts = [body[:5], body[5:17], body[17:]]
                self._chunks(
                    [
                        b"%x\r\n%s\r\n" % (len(parts[0]), parts[0]),
                        b"%x;note=here\r\n%s\r\n" % (len(parts[1]), parts[1]),
                        b"%X\r\n%s\r\n" % (len(parts[2]), parts[2]),
                        b"0\r\nX-Trailer: done\r\n\r\n",
                    ]
                )

            def _badchunk(self) -> None:
                self._chunks([b"zz\r\n{}\r\n0\r\n\r\n"])
                self.close_connection = True

            def _cutchunk(self) -> None:
                self._chunks([b"64\r\n" + b'{"tags": ["1.0"'])
                self.wfile.flush()
                self.close_connection = True

            def _tegzip(self) -> None:
                self._chunks([b"2\r\n{}\r\n0\r\n\r\n"], "gzip, chunked")
                self.close_connection = True

            def _stream(self, head: bytes, size: int, headers: dict[str, str]) -> None:
                """``head`` then filler up to ``size`` bytes; stops when the client leaves."""
                self.send_response(200)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.close_connection = True
                sent = 0
                try:
                    self.wfile.write(head)
                    while sent < size:
                        self.wfile.write(_CHUNK * 64)
                        sent += len(_CHUNK) * 64
                except OSError:
                    pass  # the client hung up, as it should

            def _huge(self) -> None:
                # No length: read until the connection closes, 300 MiB later.
                self._stream(b'{"tags": [', HUGE, {"Content-Type": "application/json", "Connection": "close"})

            def _announced(self) -> None:
                self._stream(
                    b'{"tags": [', HUGE, {"Content-Type": "application/json", "Content-Length": str(HUGE)}
                )

            def _hugemanifest(self) -> None:
                self._stream(
                    b'{"schemaVersion": 2, "layers": [',
                    HUGE,
                    {"Content-Type": "application/vnd.oci.image.manifest.v1+json", "Connection": "close"},
                )

            def _stall(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self._drip(b'{"tags": ["', b"a")

            def _drip(self, start: bytes, byte: bytes) -> None:
                """``start``, then ``byte`` every half second for DRIP_LIMIT seconds."""
                self.close_connection = True
                end = time.monotonic() + DRIP_LIMIT
                try:
                    self.wfile.write(start)
                    while time.monotonic() < end:
                        self.wfile.write(byte)
                        self.wfile.flush()
                        time.sleep(0.5)
                except OSError:
                    pass

            def _malformed(self) -> None:
                self._answer(401, headers={"WWW-Authenticate": 'Bearer realm="http://x/token'})

            def _realm(self) -> None:
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._answer(
                        401,
                        headers={
                            "WWW-Authenticate": [
                                'Basic realm="hostile"',
                                f'Bearer realm="http://{hostile.host}/token",service="hostile"',
                            ]
                        },
                    )
                    return
                self._tags(["1.0"])

            _twice = _realm

            def _echo(self, status: int) -> None:
                auth = self.headers.get("Authorization", "")
                if not auth:
                    self._answer(401, headers={"WWW-Authenticate": 'Basic realm="echo"'})
                    return
                password = hostile.credentials[1] if hostile.credentials else ""
                body = json.dumps(
                    {
                        "errors": [
                            {"code": "DENIED", "message": f"you sent Authorization: {auth} ({password})"}
                        ]
                    }
                )
                self._answer(
                    status, body.encode(), {"Content-Type": "application/json"}, reason=f"Denied {auth}"
                )

            def _manifest(self, digest: str = DIGEST, extra: dict | None = None) -> None:
                self._answer(
                    200,
                    b"{}",
                    {
                        "Docker-Content-Digest": digest,
                        "Content-Type": "application/vnd.oci.image.manifest.v1+json",
                        **(extra or {}),
                    },
                )

            def _head_dripheaders(self) -> None:
                self._drip(b"HTTP/1.1 200 OK\r\n", b"X")

            def _head_hugeheader(self) -> None:
                self._manifest(extra={"X-Filler": "a" * HUGE_HEADER})

            def _head_baddigest(self) -> None:
                self._manifest("<img src=x onerror=alert(1)>")

            def _head_elsewhere(self) -> None:
                if hostile.redirect_to is None:
                    self._manifest()
                    return
                self._answer(307, headers={"Location": f"http://{hostile.redirect_to}{self.path}"})

            def _head_busy(self) -> None:
                with hostile._lock:
                    busy = sum(s[1] == self.path for s in hostile.seen) <= BUSY_429S
                if busy:
                    self._answer(429, headers={"Retry-After": "0"})
                    return
                self._manifest()

            def _head_twice(self) -> None:
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._realm()
                    return
                self._manifest()

            def _echo403(self) -> None:
                self._echo(403)

            def _echo500(self) -> None:
                self._echo(500)

        return Handler
