"""Manifest HEADs and tag lists against the hostile registry of tests/harness/hostile.py:
they go through the client's kept-alive connections (``KeptConnections``), and every bad
answer ends as the same typed error, through the same redirect, challenge, digest, body and
throttle code, as on the requests path."""

from __future__ import annotations

import time

import pytest

from syncer.errors import RegistryError
from syncer.tools.registry import RegistryClient
from tests.harness.hostile import BUSY_429S, DIGEST, TOKEN, HostileRegistry


@pytest.fixture
def hostile():
    with HostileRegistry() as server:
        yield server


def _client(server: HostileRegistry, **kwargs) -> RegistryClient:
    kwargs.setdefault("max_retries", 0)
    return RegistryClient("hostile.test", endpoint=server.host, tls_verify=False, **kwargs)


def test_headers_that_drip_end_the_head_at_its_deadline(hostile) -> None:
    started = time.monotonic()
    with (
        _client(hostile, deadline=2.0) as client,
        pytest.raises(RegistryError, match="sent its answer too slowly"),
    ):
        client.head_manifest("dripheaders", "1.0")
    assert time.monotonic() - started < 10


def test_headers_too_large_are_refused(hostile) -> None:
    with _client(hostile) as client, pytest.raises(RegistryError, match="headers larger than"):
        client.head_manifest("hugeheader", "1.0")


def test_a_malformed_digest_header_is_refused_and_not_shown(hostile) -> None:
    with (
        _client(hostile) as client,
        pytest.raises(RegistryError, match="malformed Docker-Content-Digest") as caught,
    ):
        client.head_manifest("baddigest", "1.0")
    assert "<img" not in str(caught.value)


def test_a_challenged_head_is_sent_again_with_the_token(hostile) -> None:
    with _client(hostile) as client:
        assert client.head_manifest("twice", "1.0").digest == DIGEST
    heads = [s for s in hostile.requests_to("twice") if s[0] == "HEAD"]
    assert [auth for _, _, auth in heads] == ["", f"Bearer {TOKEN}"]


def test_a_redirect_to_another_host_is_followed_without_the_credentials(hostile) -> None:
    with (
        HostileRegistry() as other,
        HostileRegistry(redirect_to=other.host) as server,
        _client(server) as client,
    ):
        client.list_tags("twice")  # learns the token server: HEADs carry a token from now on
        assert client.head_manifest("elsewhere", "1.0").digest == DIGEST
        assert server.requests_to("elsewhere") == [("HEAD", "/v2/elsewhere/manifests/1.0", f"Bearer {TOKEN}")]
        assert other.requests_to("elsewhere") == [("HEAD", "/v2/elsewhere/manifests/1.0", "")]


def test_a_head_answered_429_waits_and_the_host_slows_down(hostile) -> None:
    slept: list[float] = []
    with _client(hostile, max_retries=4, concurrency=8, sleep=slept.append) as client:
        assert client.head_manifest("busy", "1.0").digest == DIGEST
        assert client._throttle.limit == 2, "halved once per 429"
    assert len(hostile.requests_to("busy")) == BUSY_429S + 1
    assert len(slept) == BUSY_429S


def test_heads_over_tls_trust_the_registry_ca_as_the_requests_path_does(tmp_path) -> None:
    from syncer.demo.registry import make_tls_material

    ca, cert, key = make_tls_material(tmp_path)
    with HostileRegistry(tls=(cert, key)) as server:
        with RegistryClient("tls.test", endpoint=server.host, ca_file=str(ca), max_retries=0) as client:
            assert client.head_manifest("elsewhere", "1.0").digest == DIGEST
        with (
            RegistryClient("tls.test", endpoint=server.host, max_retries=0) as client,
            pytest.raises(RegistryError, match="could not be verified"),
        ):
            client.head_manifest("elsewhere", "1.0")


def test_tag_lists_and_heads_share_one_kept_alive_connection_without_requests(hostile) -> None:
    with _client(hostile) as client:
        for _ in range(3):
            assert client.list_tags("chunked").tags == ["1.0", "1.1"]
            assert client.head_manifest("elsewhere", "1.0").digest == DIGEST
            assert client.list_tags("junk").tags == ["1.0"]  # framed by Content-Length
        assert client._sessions == [], "nothing went through requests"
    assert len(hostile.ports) == 9 and len(set(hostile.ports)) == 1, "one connection for all"


@pytest.mark.parametrize(
    "repository, said",
    [
        ("badchunk", "broke off its answer"),
        ("cutchunk", "broke off its answer"),
        ("tegzip", "Transfer-Encoding 'gzip, chunked', which was not asked for"),
    ],
)
def test_bodies_that_break_their_framing_are_registry_errors_and_the_next_request_works(
    hostile, repository, said
) -> None:
    with _client(hostile) as client:
        with pytest.raises(RegistryError, match=said):
            client.list_tags(repository)
        assert client.list_tags("chunked").tags == ["1.0", "1.1"]
    assert len(set(hostile.ports)) == 2, "the broken answer's connection was not used again"


@pytest.mark.parametrize(
    "block",
    [
        b"HTTP/1.1 200 OK\r\nDocker-Content-Digest: sha256:ab\r\nContent-Length: 10\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
        (
            b'HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm="a"\r\n'
            b'www-authenticate:Bearer realm="b"  \r\n\r\n'
        ),
        b"HTTP/1.1 404\r\n\r\n",
        b"HTTP/1.1  200  spaced  \r\nX:\t tabbed\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n",
        b"HTTP/1.0 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nNo colon here\r\nDocker-Content-Digest: sha256:ab\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: caf\xe9\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 100 + b"\r\n",
        b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 204 \r\n\r\n",
        b"HTTP/1.1 200 O\nK\r\nX: y\r\n\r\n",
        b"HTTP/1.1 2\xb20 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n: empty name\r\n\r\n",
    ],
)
def test_header_blocks_read_as_http_client_reads_them(block: bytes) -> None:
    import http.client

    from syncer.tools.registry import _parse_head, _Received

    answer = http.client.HTTPResponse(_Received(block), method="HEAD")  # type: ignore[arg-type]
    try:
        answer.begin()
    except http.client.HTTPException as err:
        with pytest.raises(type(err)):
            _parse_head(block)
        return
    assert _parse_head(block) == (answer.status, answer.reason, answer.msg.items(), answer.will_close)


@pytest.mark.parametrize("keylog", [None, "/tmp/syncer-test-keylog"])
def test_the_kept_connections_tls_context_is_the_one_urllib3_builds(monkeypatch, keylog) -> None:
    from urllib3.util.ssl_ import create_urllib3_context

    from syncer.tools.registry import tls_context

    if keylog:
        monkeypatch.setenv("SSLKEYLOGFILE", keylog)
    else:
        monkeypatch.delenv("SSLKEYLOGFILE", raising=False)
    ours, theirs = tls_context(), create_urllib3_context()
    for name in (
        "protocol",
        "minimum_version",
        "maximum_version",
        "options",
        "verify_flags",
        "verify_mode",
        "check_hostname",
        "post_handshake_auth",
        "hostname_checks_common_name",
        "keylog_filename",
    ):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert [c["name"] for c in ours.get_ciphers()] == [c["name"] for c in theirs.get_ciphers()]
