"""Discovery: what upstream has now, found as cheaply as the registry allows.

Per catalog entry: one tag listing when the entry has a ``match`` (explicit tags need none),
then one ``HEAD`` per selected tag to resolve its digest. Never a manifest ``GET``: Docker
Hub counts those as pulls. Errors stay with their entry so one bad entry never stops the
others.

A no-op run is a round trip per tracked tag, so what bounds it is how many requests are in
flight: each registry client lets its host's ``concurrency`` (settings.yaml) through, fewer
after a 429 (``syncer.tools.throttle``). Discovery keeps that many threads on one queue of
listings and HEADs, across entries and within one, so an entry of 500 tags is as fast as 50
entries of 10.
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable, Iterable

from syncer.core.model import Catalog, EntryDiscovery, ImageEntry, UpstreamTag
from syncer.core.selection import needs_listing, select_tags
from syncer.errors import NotFoundError, SyncerError, failure_text
from syncer.stages.ports import ClientFactory
from syncer.tools.endpoints import Endpoint, source_endpoint
from syncer.tools.registry import DEADLINE_DEFAULT, ManifestRef, RegistryClient

DROPPED_SHOWN = 5  # entries named in the warning about a tag list's non-tags


class Sources:
    """One registry client per upstream host, shared by every entry from that host."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        anonymous_if_unset: bool = False,
        deadline: float = DEADLINE_DEFAULT,
        clients: ClientFactory = Endpoint.client,
    ):
        self._catalog = catalog
        self._anonymous_if_unset = anonymous_if_unset
        self._deadline = deadline
        self._make_client = clients
        self._clients: dict[str, RegistryClient] = {}
        self._endpoints: dict[str, Endpoint] = {}

    def endpoint(self, host: str) -> Endpoint:
        if host not in self._endpoints:
            self._endpoints[host] = source_endpoint(
                self._catalog.settings, host, anonymous_if_unset=self._anonymous_if_unset
            )
        return self._endpoints[host]

    def anonymous(self) -> list[str]:
        """Hosts that have credentials configured but are asked anonymously (none set)."""
        return sorted(
            h
            for h, ep in self._endpoints.items()
            if ep.credentials is None
            and (src := self._catalog.settings.sources.get(h)) is not None
            and (src.auth.username_env or src.auth.password_env)
        )

    def used(self) -> list[Endpoint]:
        """The endpoints asked so far, by host."""
        return [self._endpoints[h] for h in sorted(self._endpoints)]

    def client(self, host: str) -> RegistryClient:
        if host not in self._clients:
            self._clients[host] = self._make_client(self.endpoint(host), self._deadline)
        return self._clients[host]


def _listed(entry: ImageEntry, client: RegistryClient) -> tuple[EntryDiscovery, tuple[str, ...]]:
    """The entry's listing (when it has a ``match``) and the tags to resolve; none when the
    listing failed, which is then the entry's error."""
    result = EntryDiscovery(entry=entry)
    upstream: list[str] | None = None
    if needs_listing(entry):
        try:
            listing = client.list_tags(entry.source_path)
        except SyncerError as err:
            result.errors.append(f"cannot list tags of {entry.source}: {err}")
            result.ratelimit = client.ratelimit
            return result, ()
        upstream = listing.tags
        if listing.dropped:
            shown = ", ".join(listing.dropped[:DROPPED_SHOWN])
            more = len(listing.dropped) - DROPPED_SHOWN
            result.warnings.append(
                f"the tag list of {entry.source} holds {len(listing.dropped)} "
                f"entr{'ies' if len(listing.dropped) != 1 else 'y'} that "
                f"{'are' if len(listing.dropped) != 1 else 'is'} not a tag, ignored: {shown}"
                + (f" and {more} more" if more > 0 else "")
            )
        result.listed = frozenset(upstream)
    selection = select_tags(entry, upstream)
    result.missing.extend(selection.missing_explicit)
    return result, selection.tags


def _resolved(
    result: EntryDiscovery, tags: tuple[str, ...], heads: list[object], client: RegistryClient
) -> EntryDiscovery:
    """``result`` completed with the answers to the HEADs of ``tags``, in order: a
    ManifestRef, a SyncerError, or any other exception (a bug), which fails the entry."""
    entry = result.entry
    for tag, head in zip(tags, heads, strict=True):
        if isinstance(head, NotFoundError):
            if tag in entry.tags:
                result.missing.append(tag)
            elif result.listed is not None:
                # Listed a moment ago, gone now: deleted upstream in between, i.e. vanished.
                result.listed = result.listed - {tag}
            continue
        if isinstance(head, SyncerError):
            result.errors.append(f"{entry.source}:{tag}: {head}")
            continue
        if not isinstance(head, ManifestRef):
            assert isinstance(head, BaseException)
            raise head
        result.tags.append(
            UpstreamTag(
                name=entry.name,
                tag=tag,
                digest=head.digest,
                media_type=head.media_type,
                source=f"{entry.source}:{tag}@{head.digest}",
            )
        )
    result.ratelimit = client.ratelimit
    return result


class _Workers:
    """``count`` threads running tasks from one queue until none is left; a task may add
    more. No futures: on a two-core runner a no-op run is CPU-bound, and two thread pools
    (one for entries, one for their HEADs, each HEAD a future an entry thread waited on)
    cost about a quarter of a millisecond per HEAD (benchmarks/README.md). Tasks must not
    raise: each catches what it records."""

    def __init__(self, count: int):
        self._count = max(1, count)
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._left = 0  # tasks added and not yet finished
        self._lock = threading.Lock()

    def add(self, tasks: Iterable[Callable[[], None]]) -> None:
        tasks = list(tasks)
        with self._lock:
            self._left += len(tasks)
        for task in tasks:
            self._queue.put(task)

    def run(self) -> None:
        """Runs until every task, those added meanwhile included, has finished."""
        if not self._left:
            return
        threads = [threading.Thread(target=self._work, daemon=True) for _ in range(self._count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _work(self) -> None:
        while (task := self._queue.get()) is not None:
            task()
            with self._lock:
                self._left -= 1
                last = not self._left
            if last:
                for _ in range(self._count):
                    self._queue.put(None)


def discover(entries: list[ImageEntry], sources: Sources) -> list[EntryDiscovery]:
    """Discover every entry; results keep the entries' order."""
    # Clients are created up front so that worker threads share them instead of racing, and
    # told which repositories follow, so their tokens can be asked for together.
    workers = 0
    for host in sorted({e.source_host for e in entries}):
        try:
            client = sources.client(host)
        except SyncerError:
            continue  # reported per entry by list_one()
        client.expect_pulls(e.source_path for e in entries if e.source_host == host)
        workers += sources.endpoint(host).concurrency
    # As many threads as requests may be in flight, listings and HEADs alike: the clients'
    # throttles, not the threads, decide how many are.
    work = _Workers(workers)
    results: list[EntryDiscovery | None] = [None] * len(entries)

    def failed(index: int, err: BaseException) -> None:
        entry = entries[index]
        results[index] = EntryDiscovery(
            entry=entry, errors=[f"cannot discover {entry.source}: {failure_text(err)}"]
        )

    def list_one(index: int) -> None:
        entry = entries[index]
        try:
            client = sources.client(entry.source_host)
        except SyncerError as err:  # e.g. a credential variable that is not set
            results[index] = EntryDiscovery(entry=entry, errors=[str(err)])
            return
        try:
            result, tags = _listed(entry, client)
            if not tags:
                results[index] = _resolved(result, tags, [], client)
                return
        except Exception as err:  # noqa: BLE001 - one entry's failure must not stop the others
            failed(index, err)
            return
        heads: list[object] = [None] * len(tags)
        left = [len(tags)]
        lock = threading.Lock()

        def head_one(slot: int) -> None:
            try:
                heads[slot] = client.head_manifest(entry.source_path, tags[slot])
            except Exception as err:  # noqa: BLE001 - kept for _resolved, as the entry's
                heads[slot] = err
            with lock:
                left[0] -= 1
                if left[0]:
                    return
            try:
                results[index] = _resolved(result, tags, heads, client)
            except Exception as err:  # noqa: BLE001 - one entry's failure must not stop the others
                failed(index, err)

        work.add(functools.partial(head_one, slot) for slot in range(len(tags)))

    work.add(functools.partial(list_one, index) for index in range(len(entries)))
    work.run()
    found = [r for r in results if r is not None]
    assert len(found) == len(entries), "every task records its entry's result"
    return found
