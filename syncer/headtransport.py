"""Keep-alive HEAD requests on ``http.client``: the transport of discovery's hot path.

A scheduled run sends one manifest HEAD per tracked tag, thousands when nothing changed, and
on a fast network the run's time is the client's CPU per request. Through requests and
urllib3 a HEAD costs about 0.5 ms of CPU; on a kept-alive ``http.client`` connection, 0.16 ms
(measured by ``benchmarks/noop_discovery.py``). ``syncer.registry.RegistryClient`` sends its
HEADs here unless a proxy applies, and everything else (bodies, redirects, token requests,
proxies) through requests. Failures are raised as the requests exceptions the client already
handles, so retries, TLS advice and the fall-back to plain HTTP work alike on both paths.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import socket
import ssl
import threading
from types import SimpleNamespace
from urllib.parse import urlsplit

import requests



class Answer:
    """What ``RegistryClient`` reads of a response, as requests' ``Response`` names it."""

    def __init__(self, method: str, url: str, resp: http.client.HTTPResponse):
        self.status_code = resp.status
        self.reason = resp.reason
        self.headers = resp.msg  # case-insensitive ``get``, like requests' headers
        self.url = url
        self.content = resp.read()
        self.request = SimpleNamespace(method=method)

    def json(self):
        return json.loads(self.content)


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
        self._open: list[http.client.HTTPConnection] = []

    def head(self, url: str, headers: dict[str, str], timeout: float) -> Answer:
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn = self._connection(parts.scheme, parts.netloc, timeout)
        try:
            return self._exchange(conn, url, path, headers)
        except ssl.SSLError as err:
            conn.close()
            raise requests.exceptions.SSLError(str(err)) from err
        except (socket.timeout, TimeoutError) as err:
            conn.close()
            raise requests.Timeout(f"{type(err).__name__}: timed out") from err
        except (OSError, http.client.HTTPException) as err:
            conn.close()
            raise requests.ConnectionError(f"{type(err).__name__}: {err}") from err

    def close(self) -> None:
        with self._lock:
            connections, self._open = self._open, []
        for conn in connections:
            conn.close()

    def _exchange(self, conn: http.client.HTTPConnection, url: str, path: str,
                  headers: dict[str, str]) -> Answer:
        conn.request("HEAD", path, headers=headers)
        # http.client itself closes the connection after a "Connection: close" answer.
        return Answer("HEAD", url, conn.getresponse())

    def _connection(self, scheme: str, netloc: str, timeout: float) -> http.client.HTTPConnection:
        pool = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = {}
        conn = pool.get((scheme, netloc))
        if conn is not None:
            # A kept-alive connection the server has closed meanwhile reads as ready (EOF):
            # closed here, http.client opens a fresh one, as urllib3 checks before reuse.
            if conn.sock is not None and select.select([conn.sock], [], [], 0)[0]:
                conn.close()
            return conn
        if scheme == "https":
            conn = http.client.HTTPSConnection(netloc, timeout=timeout, context=self._ssl_context())
        else:
            conn = http.client.HTTPConnection(netloc, timeout=timeout)
        pool[(scheme, netloc)] = conn
        with self._lock:
            self._open.append(conn)
        return conn

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
