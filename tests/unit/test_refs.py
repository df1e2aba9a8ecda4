"""The reference grammar and safe report paths (syncer.core.refs)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncer.core.refs import (
    Reference,
    is_sha256_digest,
    is_valid_digest,
    is_valid_domain,
    is_valid_tag,
    parse_reference,
    safe_relpath,
    version_key,
)
from tests.harness.properties import examples

SHA = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "text, expected",
    [
        ("nginx", Reference("docker.io", "library/nginx")),
        ("nginx:1.27.3", Reference("docker.io", "library/nginx", "1.27.3")),
        ("bitnami/redis", Reference("docker.io", "bitnami/redis")),
        ("docker.io/nginx", Reference("docker.io", "library/nginx")),
        ("index.docker.io/library/nginx", Reference("docker.io", "library/nginx")),
        ("index.docker.io/bitnami/redis:7", Reference("docker.io", "bitnami/redis", "7")),
        ("localhost/app", Reference("localhost", "app")),
        ("localhost:5000/team/app:v1", Reference("localhost:5000", "team/app", "v1")),
        ("127.0.0.1:5000/a/b/c", Reference("127.0.0.1:5000", "a/b/c")),
        ("[::1]:5000/app", Reference("[::1]:5000", "app")),
        ("ghcr.io/org/app@" + SHA, Reference("ghcr.io", "org/app", None, SHA)),
        ("nginx:1.27@" + SHA, Reference("docker.io", "library/nginx", "1.27", SHA)),
        ("Registry.Example.com/app", Reference("Registry.Example.com", "app")),
        ("quay.io/a__b/c--d.e_f", Reference("quay.io", "a__b/c--d.e_f")),
    ],
)
def test_parse_normalises_like_docker(text: str, expected: Reference) -> None:
    assert parse_reference(text) == expected


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty"),
        (" nginx", "whitespace"),
        ("docker.io/library/Nginx", "must be lowercase"),
        ("docker.io/library/ngi__x-", "component 'ngi__x-' is invalid"),
        ("docker.io/a//b", "empty component"),
        ("docker.io/library/nginx:", "no tag"),
        ("docker.io/library/nginx@", "no digest"),
        ("nginx:-bad", "tag '-bad' is invalid"),
        ("nginx:" + "a" * 129, "is invalid"),
        ("nginx@sha256:abc", "digest 'sha256:abc' is invalid"),
        ("nginx@sha256:" + "AB" * 32, "is invalid"),
        ("a" * 64, "64-digit hex identifier"),
        ("example.com/", "no repository path"),
        ("bad_host.com/app", "registry 'bad_host.com'"),
        ("example.com/" + "a" * 250, "longer than 255"),
        ("docker.io/library/../etc", "component '..' is invalid"),
    ],
)
def test_parse_rejects_with_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_reference(text)
    assert reason in str(err.value)


def test_name_familiar_path_and_str() -> None:
    ref = parse_reference("nginx:1.27@" + SHA)
    assert ref.name == "docker.io/library/nginx"
    assert ref.familiar_path == "nginx"
    assert str(ref) == f"docker.io/library/nginx:1.27@{SHA}"
    assert parse_reference("bitnami/redis").familiar_path == "bitnami/redis"
    # library/ is only dropped for a single component on Hub, and never elsewhere.
    assert parse_reference("library/a/b").familiar_path == "library/a/b"
    assert parse_reference("ghcr.io/library/x").familiar_path == "library/x"


@pytest.mark.parametrize(
    "tag, ok",
    [
        ("latest", True),
        ("1.27.3", True),
        ("_x", True),
        ("A-b.C_9", True),
        ("a" * 128, True),
        ("a" * 129, False),
        (".x", False),
        ("-x", False),
        ("", False),
        ("a/b", False),
        ("a:b", False),
        ("é", False),
        ("1.0\n", False),
    ],
)
def test_tag_grammar(tag: str, ok: bool) -> None:
    assert is_valid_tag(tag) is ok


@pytest.mark.parametrize(
    "digest, ok, sha256",
    [
        (SHA, True, True),
        ("sha256:" + "a" * 63, False, False),
        ("sha256:" + "A" * 64, False, False),
        ("sha512:" + "0" * 128, True, False),
        ("sha512:" + "0" * 64, False, False),
        ("multihash+base58:" + "0" * 32, True, False),  # general grammar, unregistered algorithm
        ("sha256" + "0" * 64, False, False),
        ("1sha:" + "0" * 32, False, False),
    ],
)
def test_digest_grammar(digest: str, ok: bool, sha256: bool) -> None:
    assert is_valid_digest(digest) is ok
    assert is_sha256_digest(digest) is sha256


def test_domain_grammar() -> None:
    assert is_valid_domain("registry.example.com")
    assert is_valid_domain("127.0.0.1:5000")
    assert is_valid_domain("[fe80::1]:443")
    assert not is_valid_domain("https://x")
    assert not is_valid_domain("-x.com")
    assert not is_valid_domain("x.com:port")


@pytest.mark.parametrize("name", ["nginx", "bitnami/redis", "a.b/c_d/e--f"])
def test_safe_relpath_accepts_repository_paths(name: str) -> None:
    assert safe_relpath(name) == name


@pytest.mark.parametrize(
    "name, reason",
    [
        ("", "empty"),
        ("..", "'..' segment"),
        ("a/../b", "'..' segment"),
        ("./a", "'.' or '..' segment"),
        ("/etc/passwd", "absolute path"),
        ("a//b", "empty path segment"),
        ("a/", "empty path segment"),
        ("a\\b", "backslash"),
        ("Nginx", "lowercase"),
        ("a b", "not a valid repository path"),
        ("-a", "not a valid repository path"),
        ("a:b", "not a valid repository path"),
    ],
)
def test_safe_relpath_rejects_escapes(name: str, reason: str) -> None:
    with pytest.raises(ValueError) as err:
        safe_relpath(name)
    assert reason in str(err.value)


_component = st.from_regex(r"[a-z0-9]{1,5}(?:(?:[._]|__|-{1,2})[a-z0-9]{1,5}){0,2}", fullmatch=True)
_tags = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)


@settings(max_examples=examples(200), deadline=None)
@given(
    registry=st.sampled_from(["docker.io", "ghcr.io", "localhost:5000", "10.0.0.1:443"]),
    path=st.lists(_component, min_size=2, max_size=4),
    tag=st.none() | _tags,
    digest=st.none() | st.from_regex(r"sha256:[a-f0-9]{64}", fullmatch=True),
)
def test_str_round_trips(registry: str, path: list[str], tag: str | None, digest: str | None) -> None:
    ref = Reference(registry, "/".join(path), tag, digest)
    assert parse_reference(str(ref)) == ref
    assert safe_relpath(ref.repository) == ref.repository


def test_tags_sort_as_versions() -> None:
    tags = [
        "latest",
        "1.10.0",
        "1.2.0",
        "1.2.0-rc1",
        "10-alpine",
        "9-alpine",
        "1.2",
        "1.07",
        "1.7",
        "v2",
        "v10",
    ]
    assert sorted(tags, key=version_key) == [
        "1.2",
        "1.2.0",
        "1.2.0-rc1",
        "1.07",
        "1.7",
        "1.10.0",
        "9-alpine",
        "10-alpine",
        "latest",
        "v2",
        "v10",
    ]


@settings(max_examples=examples(300), deadline=None)
@given(tags=st.lists(_tags, min_size=2, max_size=8, unique=True))
def test_version_order_is_total_and_deterministic(tags: list[str]) -> None:
    # Distinct tags never tie, so the order cannot depend on the order they came in.
    assert len({version_key(t) for t in tags}) == len(tags)
    ordered = sorted(tags, key=version_key)
    assert all(version_key(a) < version_key(b) for a, b in itertools.pairwise(ordered))
