"""Discovery: what upstream has now, found as cheaply as the registry allows.

Per catalog entry: one tag listing when the entry has a ``match`` (explicit tags need none),
then one ``HEAD`` per selected tag to resolve its digest. Never a manifest ``GET``: Docker
Hub counts those as pulls. Errors stay with their entry so one bad entry never stops the
others.

A no-op run is a round trip per tracked tag, so what bounds it is how many requests are in
flight: each registry client lets its host's ``concurrency`` (settings.yaml) through, fewer
after a 429 (``syncer.tools.throttle``). Discovery keeps that many listings and that many HEADs
waiting for it, across entries and within one, so an entry of 500 tags is as fast as 50
entries of 10.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

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


# Runs a function over items, results in order: ``map`` itself, or a thread pool's.
Mapper = Callable[
    [Callable[[str], "ManifestRef | SyncerError"], Iterable[str]], Iterator["ManifestRef | SyncerError"]
]


def discover_entry(entry: ImageEntry, client: RegistryClient, heads: Mapper = map) -> EntryDiscovery:
    """``heads`` sends the entry's HEADs: one after another by default, or a pool's map."""
    result = EntryDiscovery(entry=entry)
    upstream: list[str] | None = None
    if needs_listing(entry):
        try:
            listing = client.list_tags(entry.source_path)
        except SyncerError as err:
            result.errors.append(f"cannot list tags of {entry.source}: {err}")
            result.ratelimit = client.ratelimit
            return result
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

    def resolve(tag: str) -> ManifestRef | SyncerError:
        try:
            return client.head_manifest(entry.source_path, tag)
        except SyncerError as err:
            return err

    for tag, head in zip(selection.tags, heads(resolve, selection.tags), strict=True):
        if isinstance(head, NotFoundError):
            if tag in entry.tags:
                result.missing.append(tag)
            elif result.listed is not None:
                # Listed a moment ago, gone now: deleted upstream in between, i.e. vanished.
                result.listed = result.listed - {tag}
            continue
        if not isinstance(head, ManifestRef):
            result.errors.append(f"{entry.source}:{tag}: {head}")
            continue
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


def discover(entries: list[ImageEntry], sources: Sources) -> list[EntryDiscovery]:
    """Discover every entry; results keep the entries' order."""
    # Clients are created up front so that worker threads share them instead of racing, and
    # told which repositories follow, so their tokens can be asked for together.
    workers = 0
    for host in sorted({e.source_host for e in entries}):
        try:
            client = sources.client(host)
        except SyncerError:
            continue  # reported per entry by one()
        client.expect_pulls(e.source_path for e in entries if e.source_host == host)
        workers += sources.endpoint(host).concurrency
    # As many threads as requests may be in flight, for listings and for HEADs each: the
    # clients' throttles, not the pools, decide how many are.
    with (
        ThreadPoolExecutor(max_workers=max(1, workers)) as entry_pool,
        ThreadPoolExecutor(max_workers=max(1, workers)) as head_pool,
    ):

        def one(entry: ImageEntry) -> EntryDiscovery:
            try:
                client = sources.client(entry.source_host)
            except SyncerError as err:  # e.g. a credential variable that is not set
                return EntryDiscovery(entry=entry, errors=[str(err)])
            try:
                return discover_entry(entry, client, head_pool.map)
            except Exception as err:  # noqa: BLE001 - one entry's failure must not stop the others
                return EntryDiscovery(
                    entry=entry, errors=[f"cannot discover {entry.source}: {failure_text(err)}"]
                )

        return list(entry_pool.map(one, entries))
