"""``syncer.tools.registry.RegistryClient`` against a real distribution registry.

Images are pushed with plain ``requests`` (not the client under test) so that digests are
checked against what the test itself computed. Faults (429, 5xx, Hub's pagination refusal,
tampered bodies) come from ``tests.harness.faultproxy`` in front of the real registry.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate

import pytest
import requests

from syncer.errors import (
    DigestMismatchError,
    NotFoundError,
    RateLimitError,
    RegistryError,
    UsageError,
)
from syncer.tools.registry import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Manifest,
    RateLimit,
    RegistryClient,
    list_platforms,
    parse_challenge,
    parse_ratelimit,
    parse_retry_after,
)
from tests.harness.faultproxy import INJECTED, MALFORMED_DIGESTS, FaultProxy
from tests.harness.registry import Registry

HUB_REFUSAL = (
    b'{"message":"pagination offset too large for anonymous requests; sign in to page further","errinfo":{}}'
)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(reg: Registry, repo: str, data: bytes) -> str:
    digest = sha(data)
    with reg.session() as s:
        start = s.post(f"{reg.url}/v2/{repo}/blobs/uploads/", timeout=10)
        assert start.status_code == 202, start.text
        location = requests.compat.urljoin(reg.url, start.headers["Location"])
        sep = "&" if "?" in location else "?"
        done = s.put(
            f"{location}{sep}digest={digest}",
            data=data,
            timeout=10,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert done.status_code == 201, done.text
    return digest


def push_manifest(reg: Registry, repo: str, ref: str, doc: dict, media_type: str) -> bytes:
    raw = json.dumps(doc, indent=3).encode()  # indented: the digest is of these bytes exactly
    with reg.session() as s:
        resp = s.put(
            f"{reg.url}/v2/{repo}/manifests/{ref}", data=raw, timeout=10, headers={"Content-Type": media_type}
        )
        assert resp.status_code == 201, resp.text
    return raw


def push_image(reg: Registry, repo: str, tag: str, arch: str = "amd64") -> bytes:
    config = json.dumps(
        {"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    ).encode()
    layer = f"layer for {arch}".encode()
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": push_blob(reg, repo, config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": push_blob(reg, repo, layer),
                "size": len(layer),
            }
        ],
    }
    return push_manifest(reg, repo, tag, doc, OCI_MANIFEST)


def push_index(reg: Registry, repo: str, tag: str) -> tuple[bytes, dict[str, str]]:
    """A two-platform index plus an attestation entry; returns its bytes and platform digests."""
    entries, platforms = [], {}
    for arch in ("amd64", "arm64"):
        raw = push_image(reg, repo, f"{tag}-{arch}", arch)
        platforms[f"linux/{arch}"] = sha(raw)
        entries.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": sha(raw),
                "size": len(raw),
                "platform": {"os": "linux", "architecture": arch},
            }
        )
    entries.append({**entries[0], "platform": {"os": "unknown", "architecture": "unknown"}})
    raw = push_manifest(
        reg, repo, tag, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, OCI_INDEX
    )
    return raw, platforms


class Sleeps(list):
    """An injectable sleep that records instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def proxy(registry: Registry):
    with FaultProxy(registry.url) as fault_proxy:
        yield fault_proxy


@pytest.fixture
def paging_proxy(registry: Registry):
    """distribution 2.8 does not page tag lists; this proxy pages them as the spec says."""
    with FaultProxy(registry.url, paginate_tags=True) as fault_proxy:
        yield fault_proxy


def client_for(host: str, **kwargs) -> RegistryClient:
    kwargs.setdefault("tls_verify", False)
    return RegistryClient(host, **kwargs)


# --- discovery -------------------------------------------------------------------------------


def test_list_tags_follows_pagination(registry: Registry, paging_proxy) -> None:
    raw = push_image(registry, "lib/app", "1.0.0")
    tags = ["1.0.0"] + [f"1.0.{i}" for i in range(1, 7)]
    for tag in tags[1:]:
        push_manifest(registry, "lib/app", tag, json.loads(raw), OCI_MANIFEST)
    with client_for(paging_proxy.host) as client:
        assert client.list_tags("lib/app", page_size=2).tags == sorted(tags)
    pages = [s.uri for s in paging_proxy.seen]
    assert pages == [
        "/v2/lib/app/tags/list?n=2",
        "/v2/lib/app/tags/list?last=1.0.1&n=2",
        "/v2/lib/app/tags/list?last=1.0.3&n=2",
        "/v2/lib/app/tags/list?last=1.0.5&n=2",
    ]
    assert registry.count("GET", "/tags/list") == 4


def test_list_tags_without_page_size_takes_one_request(registry: Registry) -> None:
    raw = push_image(registry, "lib/app", "a")
    push_manifest(registry, "lib/app", "b", json.loads(raw), OCI_MANIFEST)
    with client_for(registry.host) as client:
        assert sorted(client.list_tags("lib/app").tags) == ["a", "b"]
    assert registry.count("GET", "/tags/list") == 1


def test_list_tags_stops_at_max_pages(registry: Registry, paging_proxy) -> None:
    raw = push_image(registry, "lib/app", "a")
    for tag in ("b", "c", "d"):
        push_manifest(registry, "lib/app", tag, json.loads(raw), OCI_MANIFEST)
    with client_for(paging_proxy.host) as client:
        with pytest.raises(RegistryError, match="more than 2 pages of tags for lib/app"):
            client.list_tags("lib/app", page_size=1, max_pages=2)


def test_list_tags_pagination_refusal_suggests_explicit_tags(registry: Registry, paging_proxy) -> None:
    raw = push_image(registry, "lib/app", "a")
    push_manifest(registry, "lib/app", "b", json.loads(raw), OCI_MANIFEST)
    paging_proxy.inject(
        403, path=r"/tags/list\?.*last=", body=HUB_REFUSAL, headers={"Content-Type": "application/json"}
    )
    with client_for(paging_proxy.host) as client:
        with pytest.raises(RegistryError) as info:
            client.list_tags("lib/app", page_size=1)
    message = str(info.value)
    assert "lib/app" in message and paging_proxy.host in message and "page 2" in message
    assert "pagination offset too large" in message and "tags:" in message
    assert info.value.status == 403


def test_list_tags_of_missing_repository(registry: Registry) -> None:
    with client_for(registry.host) as client:
        with pytest.raises(NotFoundError, match="repository lib/none not found"):
            client.list_tags("lib/none")


def test_head_matches_get_for_single_manifest_without_any_get(registry: Registry) -> None:
    raw = push_image(registry, "lib/app", "1.0")
    with client_for(registry.host) as client:
        ref = client.head_manifest("lib/app", "1.0")
        assert (ref.digest, ref.media_type, ref.size) == (sha(raw), OCI_MANIFEST, len(raw))
        assert client.head_manifest("lib/app", ref.digest) == ref
        assert client.stats["GET"] == 0
        assert registry.count("GET") == 0
        assert registry.count("HEAD", "/manifests/") == 2

        manifest = client.get_manifest("lib/app", "1.0")
    assert manifest.digest == ref.digest and manifest.raw == raw
    assert manifest.json["config"]["mediaType"].endswith("config.v1+json")
    assert not manifest.is_index


def test_head_matches_get_for_multi_platform_index(registry: Registry) -> None:
    raw, platforms = push_index(registry, "lib/multi", "2.0")
    with client_for(registry.host) as client:
        ref = client.head_manifest("lib/multi", "2.0")
        assert registry.count("GET") == 0
        index = client.get_manifest("lib/multi", "2.0")
    assert ref.digest == index.digest == sha(raw)
    assert ref.media_type == index.media_type == OCI_INDEX
    assert index.is_index
    found = {p.platform: p.digest for p in list_platforms(index)}
    assert found == platforms  # the unknown/unknown attestation entry is left out


def test_head_of_missing_tag_is_not_found(registry: Registry) -> None:
    push_image(registry, "lib/app", "1.0")
    with client_for(registry.host) as client:
        with pytest.raises(NotFoundError) as info:
            client.head_manifest("lib/app", "9.9")
    assert "lib/app:9.9" in str(info.value) and registry.host in str(info.value)


def test_head_without_digest_header_fails_instead_of_pulling(registry: Registry, proxy) -> None:
    push_image(registry, "lib/app", "1.0")
    proxy.inject(200, method="HEAD", headers={"Content-Type": OCI_MANIFEST})
    with client_for(proxy.host) as client:
        with pytest.raises(RegistryError, match="no Docker-Content-Digest"):
            client.head_manifest("lib/app", "1.0")
    assert [s.method for s in proxy.seen] == ["HEAD"]


def test_head_sends_accept_for_all_manifest_types(registry: Registry, proxy) -> None:
    push_image(registry, "lib/app", "1.0")
    with client_for(proxy.host) as client:
        client.head_manifest("lib/app", "1.0")
    accept = proxy.seen[-1].headers["accept"]
    for media_type in (
        OCI_INDEX,
        OCI_MANIFEST,
        DOCKER_MANIFEST,
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ):
        assert media_type in accept


def test_ratelimit_headers_are_read(registry: Registry, proxy) -> None:
    digest = sha(push_image(registry, "lib/app", "1.0"))
    proxy.inject(
        200,
        method="HEAD",
        headers={
            "Docker-Content-Digest": digest,
            "Content-Type": OCI_MANIFEST,
            "ratelimit-limit": "100;w=21600",
            "ratelimit-remaining": "76;w=21600",
        },
    )
    with client_for(proxy.host) as client:
        assert client.ratelimit is None
        assert client.head_manifest("lib/app", "1.0").digest == digest
        assert client.ratelimit == RateLimit(limit=100, remaining=76, window=21600)


# --- reads and writes ------------------------------------------------------------------------


def test_put_and_get_blob_and_manifest(registry: Registry) -> None:
    with client_for(registry.host) as client:
        data = b"signature payload"
        digest = client.put_blob("lib/app", data)
        assert digest == sha(data)
        assert client.blob_exists("lib/app", digest)
        assert client.get_blob("lib/app", digest) == data
        assert list(client.iter_blob("lib/app", digest, chunk_size=7)) == [
            data[i : i + 7] for i in range(0, len(data), 7)
        ]
        assert client.put_blob("lib/app", data) == digest  # already there: no second upload
        assert client.stats["POST upload"] == 1

        doc = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest,
                "size": len(data),
            },
            "layers": [],
        }
        raw = json.dumps(doc).encode()
        assert client.put_manifest("lib/app", "sha256-abc.sig", raw, OCI_MANIFEST) == sha(raw)
        got = client.get_manifest("lib/app", "sha256-abc.sig")
        assert (got.raw, got.digest, got.media_type) == (raw, sha(raw), OCI_MANIFEST)
        assert not client.blob_exists("lib/app", sha(b"absent"))
    with registry.session() as s:  # what the registry itself serves
        assert s.get(f"{registry.url}/v2/lib/app/blobs/{digest}", timeout=5).content == data


@pytest.mark.parametrize(
    "read",
    [
        lambda client, digest: client.get_blob("lib/app", digest),
        lambda client, digest: b"".join(client.iter_blob("lib/app", digest)),
    ],
    ids=["get_blob", "iter_blob"],
)
def test_tampered_blob_is_refused(registry: Registry, proxy, read) -> None:
    digest = push_blob(registry, "lib/app", b"genuine")
    proxy.inject(200, method="GET", path="/blobs/", body=b"forged")
    with client_for(proxy.host) as client:
        with pytest.raises(RegistryError, match=f"expected {digest}"):
            read(client, digest)


def test_tampered_manifest_is_refused(registry: Registry, proxy) -> None:
    digest = sha(push_image(registry, "lib/app", "1.0"))
    proxy.inject(
        200,
        method="GET",
        path="/manifests/",
        body=b'{"forged": true}',
        headers={"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": digest},
    )
    with client_for(proxy.host) as client:
        with pytest.raises(RegistryError, match="altered"):
            client.get_manifest("lib/app", "1.0")


@pytest.mark.parametrize("value", MALFORMED_DIGESTS)
def test_malformed_digest_headers_are_refused_naming_registry_and_repository(
    registry: Registry, proxy, value: str
) -> None:
    raw = push_image(registry, "lib/app", "1.0")
    proxy.inject(
        200,
        path="/manifests/",
        times=1000,
        body=raw,
        headers={"Docker-Content-Digest": value, "Content-Type": OCI_MANIFEST},
    )
    with client_for(proxy.host) as client:
        for call in (
            lambda: client.head_manifest("lib/app", "1.0"),
            lambda: client.get_manifest("lib/app", "1.0"),
            lambda: client.get_manifest("lib/app", sha(raw)),
            lambda: client.put_manifest("lib/app", "1.1", raw, OCI_MANIFEST),
        ):
            with pytest.raises(RegistryError, match="malformed Docker-Content-Digest") as info:
                call()
            message = str(info.value)
            assert proxy.host in message and "lib/app" in message
            assert f"\n{INJECTED}" not in message, "the value is quoted, never printed raw"


def test_an_answer_naming_another_digest_than_the_one_asked_for_is_refused(registry: Registry, proxy) -> None:
    asked = sha(push_image(registry, "lib/app", "1.0"))
    other_raw = push_image(registry, "lib/app", "2.0", arch="arm64")
    other = sha(other_raw)
    proxy.inject(
        200,
        path=f"/manifests/{asked}$",
        times=1000,
        body=other_raw,
        headers={"Docker-Content-Digest": other, "Content-Type": OCI_MANIFEST},
    )
    with client_for(proxy.host) as client:
        for call in (client.head_manifest, client.get_manifest):
            with pytest.raises(DigestMismatchError) as info:
                call("lib/app", asked)
            assert (info.value.expected, info.value.found) == (asked, other)
            assert asked in str(info.value) and other in str(info.value)


def test_delete_manifest(registry: Registry) -> None:
    digest = sha(push_image(registry, "lib/app", "1.0"))
    with client_for(registry.host) as client:
        client.delete_manifest("lib/app", digest)
        with pytest.raises(NotFoundError):
            client.head_manifest("lib/app", digest)
        with pytest.raises(UsageError, match="deleted by digest only"):
            client.delete_manifest("lib/app", "1.0")


def test_delete_on_registry_without_deletes_says_how_to_enable(registry_factory) -> None:
    reg = registry_factory(delete=False)
    digest = sha(push_image(reg, "lib/app", "1.0"))
    with client_for(reg.host) as client:
        with pytest.raises(RegistryError) as info:
            client.delete_manifest("lib/app", digest)
        assert client.head_manifest("lib/app", digest).digest == digest
    assert "deletes are disabled" in str(info.value)
    assert "storage.delete.enabled" in str(info.value) and info.value.status == 405


def test_invalid_names_never_reach_the_registry(registry: Registry) -> None:
    with client_for(registry.host) as client:
        for repo, ref in (
            ("../v2/_catalog", "x"),
            ("Lib/App", "1"),
            ("lib/app", "a/../b"),
            ("lib/app", "tag with space"),
        ):
            with pytest.raises(UsageError):
                client.head_manifest(repo, ref)
        with pytest.raises(UsageError, match="not a digest"):
            client.get_blob("lib/app", "latest")
    assert registry.requests() == []


# --- transport: TLS, plain HTTP, threads -----------------------------------------------------


def test_tls_with_ca_file(tls_registry: Registry) -> None:
    digest = sha(push_image(tls_registry, "lib/app", "1.0"))
    with RegistryClient(tls_registry.host, ca_file=str(tls_registry.ca_file)) as client:
        assert client.head_manifest("lib/app", "1.0").digest == digest


def test_tls_without_ca_is_a_clear_error(tls_registry: Registry) -> None:
    sleeps = Sleeps()
    with RegistryClient(tls_registry.host, sleep=sleeps) as client:
        with pytest.raises(RegistryError) as info:
            client.head_manifest("lib/app", "1.0")
    message = str(info.value)
    assert tls_registry.host in message and "could not be verified" in message
    assert "tls_verify" in message and "CA" in message
    assert sleeps == []  # a certificate problem is not retried


def test_tls_verify_off_still_uses_https_when_offered(tls_registry: Registry) -> None:
    digest = sha(push_image(tls_registry, "lib/app", "1.0"))
    with RegistryClient(tls_registry.host, tls_verify=False) as client:
        assert client.head_manifest("lib/app", "1.0").digest == digest
        assert client._scheme == "https"


def test_tls_verify_off_falls_back_to_plain_http(registry: Registry) -> None:
    digest = sha(push_image(registry, "lib/app", "1.0"))
    with RegistryClient(registry.host, tls_verify=False) as client:
        assert client.head_manifest("lib/app", "1.0").digest == digest
        assert client.head_manifest("lib/app", "1.0").digest == digest
        assert client.stats["HEAD"] == 2


def test_threads_starting_together_learn_plain_http_once(registry: Registry) -> None:
    """Each HTTPS attempt loads the system's CAs; only the first request should make one."""
    digest = sha(push_image(registry, "lib/app", "1.0"))
    fallbacks: list[str] = []

    class Counting(RegistryClient):
        def _fall_back_to_http(self, err: Exception) -> bool:
            fallbacks.append(str(err))
            return super()._fall_back_to_http(err)

    start = threading.Barrier(8)
    with Counting(registry.host, tls_verify=False) as client:

        def work() -> str:
            start.wait(timeout=10)
            return client.head_manifest("lib/app", "1.0").digest

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(lambda _: work(), range(8))) == [digest] * 8
    assert len(fallbacks) == 1


def test_plain_http_registry_with_tls_verify_on_is_a_clear_error(registry: Registry) -> None:
    with RegistryClient(registry.host) as client:
        with pytest.raises(RegistryError, match="does not speak HTTPS; set tls_verify: false"):
            client.head_manifest("lib/app", "1.0")


def test_one_client_shared_by_threads(registry: Registry) -> None:
    digests = {f"t{i}": sha(push_image(registry, "lib/app", f"t{i}", f"arch{i}")) for i in range(4)}
    results: dict[str, str] = {}
    with client_for(registry.host) as client:

        def work(tag: str) -> None:
            for _ in range(3):
                results[tag] = client.head_manifest("lib/app", tag).digest

        threads = [threading.Thread(target=work, args=(tag,)) for tag in digests]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
        assert results == digests
        assert client.stats["HEAD manifest"] == 12
        assert len(client._kept._open) == 4, "one kept-alive connection per thread"


def test_heads_reconnect_when_the_registry_closed_the_kept_alive_connection(registry: Registry) -> None:
    digest = sha(push_image(registry, "lib/app", "1.0"))
    sleeps = Sleeps()
    with client_for(registry.host, sleep=sleeps) as client:
        assert client.head_manifest("lib/app", "1.0").digest == digest
        registry.stop()  # closes every connection it had, as an idle timeout would
        registry.start()
        assert client.head_manifest("lib/app", "1.0").digest == digest
        assert sleeps == [], "a connection closed while idle is reopened, not retried after a wait"
        assert client.stats["HEAD"] == 2


# --- retries ---------------------------------------------------------------------------------


def test_stopped_registry_fails_after_bounded_retries(registry: Registry) -> None:
    registry.stop()
    sleeps = Sleeps()
    started = time.monotonic()
    with client_for(registry.host, max_retries=3, sleep=sleeps) as client:
        with pytest.raises(RegistryError) as info:
            client.head_manifest("lib/app", "1.0")
    assert time.monotonic() - started < 5
    assert len(sleeps) == 3
    for n, waited in enumerate(sleeps):
        assert 0.25 * 2**n <= waited <= 0.5 * 2**n
    message = str(info.value)
    assert registry.host in message and "could not be reached" in message
    assert "connection refused" in message and "4 attempts" in message


def test_429_honours_retry_after_seconds(registry: Registry, proxy) -> None:
    digest = sha(push_image(registry, "lib/app", "1.0"))
    proxy.inject(429, method="HEAD", times=2, headers={"Retry-After": "7"})
    sleeps = Sleeps()
    with client_for(proxy.host, sleep=sleeps) as client:
        assert client.head_manifest("lib/app", "1.0").digest == digest
    assert sleeps == [7.0, 7.0]
    assert proxy.injected == 2


def test_429_honours_retry_after_http_date(registry: Registry, proxy) -> None:
    push_image(registry, "lib/app", "1.0")
    proxy.inject(429, method="HEAD", headers={"Retry-After": formatdate(time.time() + 20, usegmt=True)})
    sleeps = Sleeps()
    with client_for(proxy.host, sleep=sleeps) as client:
        client.head_manifest("lib/app", "1.0")
    assert len(sleeps) == 1 and 17 <= sleeps[0] <= 21


def test_persistent_429_is_a_rate_limit_error(registry: Registry, proxy) -> None:
    proxy.inject(429, times=100, headers={"Retry-After": "1"})
    sleeps = Sleeps()
    with client_for(proxy.host, max_retries=2, sleep=sleeps) as client:
        with pytest.raises(RateLimitError) as info:
            client.list_tags("lib/app")
    assert info.value.status == 429 and proxy.host in str(info.value)
    assert sleeps == [1.0, 1.0] and proxy.injected == 3


def test_after_one_request_gives_up_on_429_the_host_is_not_asked_again(registry: Registry, proxy) -> None:
    """A run of thousands of tags against a host that keeps answering 429 would otherwise
    wait out the retry budget once per tag."""
    proxy.inject(429, times=100, headers={"Retry-After": "1"})
    sleeps = Sleeps()
    with client_for(proxy.host, max_retries=2, sleep=sleeps) as client:
        with pytest.raises(RateLimitError):
            client.head_manifest("lib/app", "1.0")
        asked = len(proxy.seen)
        with pytest.raises(RateLimitError, match="for longer than the retry budget"):
            client.head_manifest("lib/app", "2.0")
    assert len(proxy.seen) == asked == 3 and sleeps == [1.0, 1.0]


def test_a_429_halves_the_requests_in_flight(registry: Registry, proxy) -> None:
    digest = sha(push_image(registry, "lib/app", "1.0"))
    proxy.inject(429, method="HEAD", headers={"Retry-After": "0"})
    with client_for(proxy.host, concurrency=8) as client:
        assert client.head_manifest("lib/app", "1.0").digest == digest
        assert client._throttle.limit == 4


def test_no_more_requests_in_flight_than_the_concurrency(registry: Registry) -> None:
    digest = sha(push_image(registry, "lib/app", "1.0"))
    with FaultProxy(registry.url, latency=0.2) as slow, client_for(slow.host, concurrency=2) as client:
        started = time.monotonic()
        with ThreadPoolExecutor(6) as pool:
            done = list(pool.map(lambda _: client.head_manifest("lib/app", "1.0").digest, range(6)))
        elapsed = time.monotonic() - started
    assert done == [digest] * 6
    assert elapsed >= 0.55, "six requests of 0.2 s, two at a time, take three round trips"


def test_retry_after_beyond_the_time_cap_fails_at_once(registry: Registry, proxy) -> None:
    proxy.inject(429, headers={"Retry-After": "3600"})
    sleeps = Sleeps()
    with client_for(proxy.host, max_wait=60, sleep=sleeps) as client:
        with pytest.raises(RateLimitError):
            client.head_manifest("lib/app", "1.0")
    assert sleeps == []


def test_5xx_and_dropped_connections_are_retried_with_backoff(registry: Registry, proxy) -> None:
    digest = sha(push_image(registry, "lib/app", "1.0"))
    proxy.inject(503, method="HEAD", times=2)
    proxy.inject(method="HEAD", drop=True)
    sleeps = Sleeps()
    with client_for(proxy.host, sleep=sleeps) as client:
        assert client.head_manifest("lib/app", "1.0").digest == digest
    assert len(sleeps) == 3
    # Exponential with jitter: attempt n waits between 0.5 and 1 times 0.5 * 2**n seconds.
    for n, waited in enumerate(sleeps):
        assert 0.25 * 2**n <= waited <= 0.5 * 2**n


def test_persistent_5xx_gives_up_with_status(registry: Registry, proxy) -> None:
    proxy.inject(502, times=100)
    sleeps = Sleeps()
    with client_for(proxy.host, max_retries=2, sleep=sleeps) as client:
        with pytest.raises(RegistryError) as info:
            client.get_blob("lib/app", sha(b"x"))
    assert info.value.status == 502 and "answered 502" in str(info.value)
    assert len(sleeps) == 2


# --- pure helpers ----------------------------------------------------------------------------


def test_parse_ratelimit() -> None:
    assert parse_ratelimit("100;w=21600", "0;w=21600") == RateLimit(100, 0, 21600)
    assert parse_ratelimit("200", "150") == RateLimit(200, 150, None)
    assert parse_ratelimit(None, "1") is None
    assert parse_ratelimit("lots", "1") is None


def test_parse_retry_after() -> None:
    now = time.time()
    assert parse_retry_after("12", now) == 12.0
    assert parse_retry_after(formatdate(now - 100, usegmt=True), now) == 0.0
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("soon", now) is None


def test_parse_challenge() -> None:
    hub = (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/nginx:pull",error="insufficient_scope"'
    )
    challenge = parse_challenge(hub)
    assert challenge is not None and challenge.scheme == "bearer"
    assert challenge.params["realm"] == "https://auth.docker.io/token"
    assert challenge.params["scope"] == "repository:library/nginx:pull"
    basic = parse_challenge('Basic realm="syncer-test"')
    assert basic is not None and basic.scheme == "basic"
    assert parse_challenge("Negotiate abc") is None and parse_challenge(None) is None


def test_list_platforms_ignores_single_manifests() -> None:
    single = Manifest("sha256:" + "0" * 64, OCI_MANIFEST, b"{}", {})
    assert list_platforms(single) == []


def test_docker_hub_connects_to_registry_1() -> None:
    assert RegistryClient("docker.io").endpoint == "registry-1.docker.io"
    assert RegistryClient("docker.io", endpoint="127.0.0.1:5000").endpoint == "127.0.0.1:5000"
    assert RegistryClient("ghcr.io").endpoint == "ghcr.io"


def test_proxy_and_ca_bundle_environment_is_honoured_once_per_host(monkeypatch, registry):
    """requests no longer reads the environment per request; the client does, per host."""
    from syncer.tools.registry import RegistryClient

    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/custom-bundle.pem")
    client = RegistryClient("docker.io", endpoint=registry.host, tls_verify=False)
    assert client._proxies_for(f"http://{registry.host}") == {}  # NO_PROXY wins
    assert client._proxies_for("http://auth.example.com")["http"] == "http://proxy.example.invalid:3128"
    # Reached directly: through the (nonexistent) proxy this would be a network error.
    from syncer.errors import NotFoundError

    with pytest.raises(NotFoundError):
        client.head_manifest("library/none", "1")
    verified = RegistryClient("registry.example.com", tls_verify=True)
    assert verified._requests_verify == "/etc/ssl/certs/custom-bundle.pem"
    with_ca = RegistryClient("registry.example.com", tls_verify=True, ca_file="/tmp/ca.crt")
    assert with_ca._requests_verify == "/tmp/ca.crt"
