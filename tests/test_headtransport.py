"""``syncer.headtransport``: HEAD answers the way servers actually send them, from a scripted
server on 127.0.0.1 (answers a real registry never gives: interim answers, stray bodies,
garbage, a close). The transport against a real registry is covered by test_registry_client.
"""

from __future__ import annotations

import socket
import threading

import pytest
import requests

from syncer.headtransport import HeadTransport

DIGEST = "sha256:" + "a" * 64
OK = (f"HTTP/1.1 200 OK\r\nDocker-Content-Digest: {DIGEST}\r\n"
      "Content-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 512\r\n\r\n")


class ScriptedServer:
    """Answers the n-th request it reads (on whatever connection) with ``answers[n]``."""

    def __init__(self, answers: list[str]):
        self.answers = [a.encode("latin-1") for a in answers]
        self.requests: list[bytes] = []
        self.connections = 0
        self._stopped = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def _serve(self) -> None:
        while len(self.requests) < len(self.answers) and not self._stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(5)
                data = b""
                while len(self.requests) < len(self.answers):
                    try:
                        chunk = conn.recv(65536)
                    except OSError:
                        break
                    if not chunk:
                        break
                    data += chunk
                    while b"\r\n\r\n" in data and len(self.requests) < len(self.answers):
                        request, data = data.split(b"\r\n\r\n", 1)
                        self.requests.append(request)
                        answer = self.answers[len(self.requests) - 1]
                        conn.sendall(answer)
                        if b"Connection: close" in answer:
                            break
                    else:
                        continue
                    break

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()
        self._thread.join(timeout=5)


@pytest.fixture
def serve():
    servers: list[ScriptedServer] = []

    def start(*answers: str) -> ScriptedServer:
        servers.append(ScriptedServer(list(answers)))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def head(transport: HeadTransport, server: ScriptedServer, path: str = "/v2/app/manifests/1.0"):
    return transport.head(server.url + path, {"Accept": "application/json"}, timeout=5)


def test_headers_are_read_case_insensitively_and_the_connection_is_kept(serve) -> None:
    server = serve(OK, OK)
    transport = HeadTransport(False)
    for _ in range(2):
        answer = head(transport, server)
        assert (answer.status_code, answer.reason) == (200, "OK")
        assert answer.headers.get("docker-content-digest") == answer.headers["Docker-Content-Digest"] == DIGEST
        assert answer.headers.get("Ratelimit-Remaining") is None
    assert server.connections == 1
    first = server.requests[0].decode()
    assert first.startswith("HEAD /v2/app/manifests/1.0 HTTP/1.1\r\n")
    assert f"Host: {server.url[len('http://'):]}" in first and "Accept: application/json" in first
    transport.close()


def test_a_connection_close_answer_is_not_reused(serve) -> None:
    server = serve(OK.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n"), OK)
    transport = HeadTransport(False)
    assert head(transport, server).status_code == 200
    assert head(transport, server).status_code == 200
    assert server.connections == 2


def test_an_interim_answer_is_skipped(serve) -> None:
    server = serve("HTTP/1.1 100 Continue\r\n\r\n" + OK)
    assert head(HeadTransport(False), server).headers.get("Docker-Content-Digest") == DIGEST


def test_a_head_answer_with_a_body_is_not_trusted_for_another_request(serve) -> None:
    # The stray bytes would be read as the start of the next answer on that connection.
    server = serve(OK + "stray body", OK)
    transport = HeadTransport(False)
    assert head(transport, server).status_code == 200
    assert head(transport, server).headers.get("Docker-Content-Digest") == DIGEST
    assert server.connections == 2


def test_garbage_instead_of_an_answer_is_a_connection_error(serve) -> None:
    server = serve("SSH-2.0-OpenSSH_9.6\r\n\r\n")
    with pytest.raises(requests.ConnectionError, match="not an HTTP answer"):
        head(HeadTransport(False), server)


def test_a_closed_port_is_a_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(requests.ConnectionError, match="(?i)connection refused"):
        HeadTransport(False).head(f"http://127.0.0.1:{port}/v2/", {}, timeout=5)


def test_a_server_that_never_answers_times_out(serve) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        with pytest.raises(requests.Timeout):
            HeadTransport(False).head(f"http://127.0.0.1:{listener.getsockname()[1]}/v2/", {},
                                      timeout=0.3)
    finally:
        listener.close()


def test_a_header_with_a_line_break_is_refused_before_sending(serve) -> None:
    server = serve(OK)
    with pytest.raises(requests.exceptions.InvalidHeader, match="Authorization"):
        HeadTransport(False).head(server.url + "/v2/", {"Authorization": "Bearer x\r\nX-Evil: 1"},
                                  timeout=5)
    assert server.requests == []
