"""The registry client's error boundary, challenge parsing, body caps and redaction, against
the hostile registry of tests/harness/hostile.py and a real distribution registry."""

from __future__ import annotations

import ssl

import pytest
import requests
import urllib3

from syncer.core import redact
from syncer.errors import RegistryAuthError, RegistryError, SyncerError
from syncer.tools.registry import (
    BODY_MAX,
    BodyError,
    ChallengeError,
    RegistryClient,
    descriptor_digest,
    digest_of,
    parse_challenge,
    parse_challenges,
    transport_failure,
)
from tests.harness.hostile import TOKEN, HostileRegistry
from tests.harness.registry import Registry


@pytest.fixture
def hostile():
    with HostileRegistry() as server:
        yield server


def _client(server: HostileRegistry, **kwargs) -> RegistryClient:
    return RegistryClient("hostile.test", endpoint=server.host, tls_verify=False, max_retries=0, **kwargs)


# --- challenges ----------------------------------------------------------------------------


def test_several_challenges_in_one_answer_are_each_parsed_and_bearer_is_chosen() -> None:
    joined = (
        'Basic realm="a, b", Bearer realm="https://auth.example/token",'
        'service="registry.example",scope="repository:x/y:pull,push", Negotiate abc=='
    )
    found = parse_challenges(joined)
    assert [c.scheme for c in found] == ["basic", "bearer", "negotiate"]
    assert found[0].params == {"realm": "a, b"}
    assert found[1].params["scope"] == "repository:x/y:pull,push"
    assert parse_challenge(joined).scheme == "bearer"
    assert parse_challenge('Negotiate, Basic realm="x"').scheme == "basic"


@pytest.mark.parametrize(
    "header",
    [
        'realm="x"',  # a parameter before any scheme
        'Bearer realm="https://x/token',  # unterminated
        'Bearer realm="a", realm="b"',  # twice in one challenge
        "Bearer realm=;",  # no value
        '"Bearer"',
    ],
)
def test_a_malformed_challenge_is_a_clear_error(header: str) -> None:
    with pytest.raises(ChallengeError):
        parse_challenge(header)


def test_two_challenges_in_one_answer_authenticate_with_the_bearer_one(hostile) -> None:
    with _client(hostile) as client:
        assert client.list_tags("twice").tags == ["1.0"]
    assert [s for s in hostile.seen if s[1].startswith("/token")]
    assert hostile.requests_to("twice")[-1][2] == f"Bearer {TOKEN}"


def test_a_plain_http_token_server_is_refused_when_tls_is_verified(tmp_path) -> None:
    from syncer.demo.registry import make_tls_material

    ca, cert, key = make_tls_material(tmp_path)
    with (
        HostileRegistry(tls=(cert, key)) as server,
        RegistryClient("tls.test", endpoint=server.host, ca_file=str(ca), max_retries=0) as client,
    ):
        with pytest.raises(RegistryAuthError, match="plain-HTTP token server"):
            client.list_tags("twice")
    assert not [s for s in server.seen if s[1].startswith("/token")]


# --- the boundary --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "repository, said",
    [
        ("loop", "redirected GET more than 10 times"),
        ("gzip", "Content-Encoding: gzip that is not gzip"),
        ("cut", "broke off its answer"),
        ("announced", "announced an answer of 314572800 bytes"),
        ("seven", "'tags' is 7, not a list"),
        ("malformed", "malformed WWW-Authenticate header"),
    ],
)
def test_every_failure_of_an_answer_is_a_registry_error_saying_what(hostile, repository, said) -> None:
    with _client(hostile) as client, pytest.raises(RegistryError, match=said):
        client.list_tags(repository)


def test_tag_lists_keep_only_tags_and_name_what_was_dropped(hostile) -> None:
    with _client(hostile) as client:
        listing = client.list_tags("junk")
        assert listing.tags == ["1.0"]
        assert listing.dropped[:3] == ("7", "null", "'<img src=x onerror=alert(1)>'")
        assert "'a\\nb'" in listing.dropped and "an object" in listing.dropped
        assert client.list_tags("nulltags").tags == []


@pytest.mark.parametrize(
    "err, retry, said",
    [
        (requests.exceptions.ChunkedEncodingError("x"), True, "broke off"),
        (urllib3.exceptions.ProtocolError("x"), True, "broke off"),
        (requests.exceptions.ReadTimeout("x"), True, "timed out"),
        (requests.exceptions.ContentDecodingError("x"), False, "Content-Encoding"),
        (requests.exceptions.TooManyRedirects("x"), False, "a loop"),
        (requests.exceptions.InvalidHeader("x"), False, "invalid"),
        (requests.exceptions.InvalidURL("x"), False, "invalid"),
        (UnicodeEncodeError("latin-1", "\u20ac", 0, 1, "x"), False, "invalid"),
        (ConnectionResetError("x"), True, "could not be reached"),
        (ssl.SSLError("x"), True, "could not be reached"),
        (BodyError("sent junk"), False, "sent junk"),
        (KeyError("x"), False, "failed (KeyError)"),
    ],
)
def test_transport_failures_map_to_a_reason(err, retry, said) -> None:
    assert transport_failure(err)[0] is retry
    assert said in transport_failure(err)[1]


def test_signature_payloads_are_read_within_their_descriptor_size(registry: Registry) -> None:
    data = b"x" * 100
    with RegistryClient(registry.host, tls_verify=False) as client:
        digest = client.put_blob("lib/app", data)
        assert client.get_blob("lib/app", digest, 100) == data
        with pytest.raises(RegistryError, match="more than the 10 bytes"):
            client.get_blob("lib/app", digest, 10)
        before = client.stats["GET"]
        with pytest.raises(RegistryError, match="was not downloaded"):
            client.get_blob("lib/app", digest, BODY_MAX + 1)
        assert client.stats["GET"] == before


def test_descriptor_digests_must_be_digests() -> None:
    good = digest_of(b"x")
    assert descriptor_digest(good, "entry 1") == good
    for bad in ("latest", "../../x", 7, None, "sha256:" + "A" * 64):
        with pytest.raises(RegistryError, match=r"entry 1 names .* where a digest"):
            descriptor_digest(bad, "entry 1")


# --- redaction -----------------------------------------------------------------------------


def test_errors_are_redacted_of_credentials_tokens_and_authorization_echoes() -> None:
    redact.remember_credentials("alice", "pa ss/wörd")
    redact.remember("tok-0123456789abcdef")
    jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
    text = str(
        SyncerError(
            'echo: Authorization: Basic YWxpY2U6cGEgc3Mvd8O2cmQ= {"authorization": "Bearer zz"} '
            "pa ss/wörd pa%20ss%2Fw%C3%B6rd tok-0123456789abcdef " + jwt + " Authorization=abc"
        )
    )
    for secret in ("YWxpY2U6", "zz", "pa ss", "pa%20ss", "tok-0123", jwt, "abc"):
        assert secret not in text, text
    assert text.count(redact.MASK) >= 6
    assert (
        str(SyncerError("a token that cannot be an Authorization header"))
        == "a token that cannot be an Authorization header"
    )
