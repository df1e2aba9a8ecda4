"""Discovery against a faked registry boundary: what counts as missing and what as vanished."""

from __future__ import annotations

import threading
import time

from syncer.core.model import ImageEntry
from syncer.errors import NotFoundError
from syncer.stages.discover import discover
from syncer.tools.endpoints import Endpoint
from syncer.tools.registry import ManifestRef, TagListing


class FakeUpstream:
    """Lists ``listed``; answers HEAD for ``present`` only; counts calls by method."""

    ratelimit = None

    def __init__(self, listed, present):
        self.listed, self.present = listed, present
        self.calls: list[str] = []
        self.expected: list[str] = []

    def expect_pulls(self, repositories):
        self.expected = list(repositories)

    def list_tags(self, repository):
        self.calls.append("list")
        return TagListing(list(self.listed))

    def head_manifest(self, repository, tag):
        self.calls.append("HEAD")
        if tag not in self.present:
            raise NotFoundError(f"{repository}:{tag} not found")
        return ManifestRef(
            digest="sha256:" + "a" * 64, media_type="application/vnd.oci.image.manifest.v1+json", size=1
        )


def test_explicit_tags_need_no_listing_and_a_missing_one_is_reported():
    entry = ImageEntry(source="docker.io/library/nginx", name="nginx", tags=("1.0", "9.9"))
    up = FakeUpstream(listed=[], present={"1.0"})
    [found] = discover([entry], OneHost(up, 1))
    assert up.calls == ["HEAD", "HEAD"]
    assert [t.tag for t in found.tags] == ["1.0"] and found.missing == ["9.9"]
    assert found.listed is None


def test_a_matched_tag_deleted_between_listing_and_head_is_vanished_not_missing():
    entry = ImageEntry(source="docker.io/library/nginx", name="nginx", match=r"1\.\d+")
    up = FakeUpstream(listed=["1.0", "1.1"], present={"1.0"})
    [found] = discover([entry], OneHost(up, 1))
    assert [t.tag for t in found.tags] == ["1.0"]
    assert found.missing == [] and found.errors == []
    assert found.listed == frozenset({"1.0"})


class BrokenUpstream(FakeUpstream):
    """Raises what no boundary maps: a bug below discovery."""

    def list_tags(self, repository):
        raise TypeError("'int' object is not iterable")


class FixedSources:
    def __init__(self, clients):
        self._clients = clients

    def client(self, host):
        return self._clients[host]

    def endpoint(self, host):
        return Endpoint(name=host, address=host, concurrency=2)


def test_an_entry_whose_discovery_raises_anything_fails_alone_with_the_error_named():
    broken = ImageEntry(source="bad.example/x/y", name="y", match=r".*")
    fine = ImageEntry(source="docker.io/library/nginx", name="nginx", tags=("1.0",))
    sources = FixedSources({"bad.example": BrokenUpstream([], set()), "docker.io": FakeUpstream([], {"1.0"})})
    first, second = discover([broken, fine], sources)
    assert first.errors == [
        "cannot discover bad.example/x/y: internal error: TypeError: 'int' "
        "object is not iterable; this is a bug in syncer, please report it "
        "with this message"
    ]
    assert [t.tag for t in second.tags] == ["1.0"] and not second.errors


class SlowUpstream(FakeUpstream):
    """Every HEAD takes a while; records how many were in flight at once."""

    def __init__(self, listed, present):
        super().__init__(listed, present)
        self.in_flight = self.peak = 0
        self._lock = threading.Lock()

    def head_manifest(self, repository, tag):
        with self._lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        time.sleep(0.02)
        try:
            return super().head_manifest(repository, tag)
        finally:
            with self._lock:
                self.in_flight -= 1


class OneHost:
    """``Sources`` for one upstream client with ``concurrency`` requests in flight."""

    def __init__(self, client, concurrency):
        self._client, self._concurrency = client, concurrency

    def client(self, host):
        return self._client

    def endpoint(self, host):
        return Endpoint(name=host, address=host, concurrency=self._concurrency)


def test_the_heads_of_one_entry_go_out_concurrently_and_results_keep_their_order():
    tags = tuple(f"1.{i}" for i in range(40))
    entry = ImageEntry(source="docker.io/library/nginx", name="nginx", tags=tags)
    up = SlowUpstream(listed=[], present=set(tags) - {"1.7"})
    [found] = discover([entry], OneHost(up, 8))
    assert [t.tag for t in found.tags] == [t for t in tags if t != "1.7"]
    assert found.missing == ["1.7"]
    assert 1 < up.peak <= 8
    assert up.expected == ["library/nginx"], "the client was told which repositories follow"


class BuggyHeads(FakeUpstream):
    """A HEAD of tag ``1.3`` raises what no boundary maps."""

    def head_manifest(self, repository, tag):
        if repository == "library/bad" and tag == "1.3":
            raise KeyError("digest")
        return super().head_manifest(repository, tag)


def test_a_head_that_raises_anything_fails_its_entry_alone_and_every_other_finishes():
    tags = tuple(f"1.{i}" for i in range(6))
    names = [f"app{i}" for i in range(30)] + ["bad"]
    entries = [ImageEntry(source=f"docker.io/library/{n}", name=n, match=r"1\.\d+") for n in names]
    up = BuggyHeads(listed=list(tags), present=set(tags))
    found = discover(entries, OneHost(up, 3))
    assert [f.entry.name for f in found] == names, "results keep the entries' order"
    assert all([t.tag for t in f.tags] == list(tags) and not f.errors for f in found[:-1])
    assert found[-1].errors == [
        "cannot discover docker.io/library/bad: internal error: KeyError: 'digest'; this is a "
        "bug in syncer, please report it with this message"
    ]
    assert up.calls.count("list") == len(names) and up.calls.count("HEAD") == len(names) * len(tags) - 1


def test_no_entries_discover_nothing():
    assert discover([], OneHost(FakeUpstream([], set()), 4)) == []
