"""A scan analyses the bytes it is about: every layer's diff_id is checked before Trivy runs.

Trivy (go-containerregistry) keys its layer cache by the diff_id an image's config claims
(``rootfs.diff_ids``) and never checks that claim against the layer. Scan slots keep that
cache across scans (syncer/tools/trivy.py), so a layer claiming the diff_id of a clean layer
scanned earlier is reported clean unread, and two layers of one image claiming one diff_id
may be analysed once. ``check_image`` downloads each layer from the trusted registry (its
compressed digest checked), decompresses it as go-containerregistry does, by its first bytes
(gzip, zstd, else uncompressed, whatever the media type says: that is what Trivy analyses),
hashes it, and compares. A disagreement is a ``LayerError``: the image is held unscanned.

Verified (compressed digest -> diff_id) pairs are facts about content, true forever, so they
are kept in ``<trivy cache>/verified-layers.json`` and a re-scan downloads no layer twice.
The same pass notes which OS package databases each layer holds.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import json
import os
import re
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, cast

import zstandard

from syncer.errors import SyncerError
from syncer.tools.registry import IMAGE_TYPES, Manifest, RegistryClient
from syncer.trail.atomic import write_atomic

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

CACHE_FILE = "verified-layers.json"
# Bump when what is noted per layer changes: pairs of an older version are not read.
_CACHE_VERSION = 1
# Larger files are not read (and are replaced by the next write): a cache, not a liability.
_CACHE_MAX_BYTES = 64 << 20
# Configs are small (a few KiB); one this large is not an image config syncer reads.
_CONFIG_MAX_BYTES = 8 << 20

_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")
_LAYER_TYPES = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.diff.tar",
    }
)
# Non-distributable ("foreign") layers: registries need not hold them, and Trivy takes one
# from the URLs in its descriptor when the registry does not: bytes from outside the trusted
# registry, which syncer neither verifies nor lets Trivy scan.
_FOREIGN = re.compile(
    r"application/vnd\.(oci\.image\.layer\.nondistributable\.v1\.tar"
    r"|docker\.image\.rootfs\.foreign\.diff\.tar)"
)
# go-containerregistry's compression.PeekCompression: these first bytes decide, not the type.
_GZIP_MAGIC = b"\x1f\x8b\x08"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# What Trivy's OS package analysers read (dpkg, apk, rpm), as tar member paths.
_PACKAGE_DB_FILES = frozenset({"var/lib/dpkg/status", "lib/apk/db/installed"})
_PACKAGE_DB_DIRS = ("var/lib/dpkg/status.d/", "var/lib/rpm/", "usr/lib/sysimage/rpm/")
_CHUNK = 1 << 20


class LayerError(SyncerError):
    """An image's layers are not what its config says, or cannot be checked. A verdict on
    content, which its digest fixes: the same image fails the same way on every run."""


@dataclass(frozen=True)
class VerifiedLayer:
    digest: str  # the compressed blob, as the manifest names it
    diff_id: str  # sha256 of its content as Trivy reads it, computed here
    package_dbs: frozenset[str]  # OS package databases in it, e.g. var/lib/dpkg/status


@dataclass(frozen=True)
class LayerCheck:
    verified: tuple[VerifiedLayer, ...]  # the image's layers, bottom first

    @property
    def package_dbs(self) -> frozenset[str]:
        """Every OS package database in any layer."""
        return frozenset().union(*(layer.package_dbs for layer in self.verified))


def check_image(
    client: RegistryClient,
    repository: str,
    digest: str,
    cache_dir: str | os.PathLike,
    manifest: Manifest | None = None,
) -> LayerCheck:
    """Checks image manifest ``repository@digest`` of ``client``'s registry: as many layers
    as config diff_ids, each diff_id the sha256 of its layer's content. ``cache_dir`` is the
    Trivy cache, which keeps the verified pairs. ``manifest`` is that manifest when the caller
    has fetched it already. LayerError names the first layer that fails."""
    ref = f"{client.host}/{repository}@{digest}"
    manifest = manifest or client.get_manifest(repository, digest)
    if manifest.media_type not in IMAGE_TYPES:
        raise LayerError(
            f"{ref} is a {manifest.media_type or 'manifest without a media type'}, "
            f"not an image manifest: {_NOT_SCANNED}; syncer scans container "
            "images only"
        )
    descriptors = _layer_descriptors(manifest.json, ref)
    claims = _diff_ids(client, repository, manifest.json, ref)
    if len(claims) != len(descriptors):
        raise LayerError(
            f"{ref} has {len(descriptors)} layers but its config lists "
            f"{len(claims)} diff_ids, so Trivy could not tell which analysis "
            f"belongs to which layer: {_MALFORMED}"
        )
    store = _store(Path(cache_dir) / CACHE_FILE)
    known = store.read()
    # Each pair is stored as soon as it is verified, true whatever the claims are: a re-run
    # reaches the same verdict without downloads.
    new: dict[str, VerifiedLayer] = {}
    verified = []
    for n, ((layer_digest, media_type), claimed) in enumerate(zip(descriptors, claims, strict=True), 1):
        where = f"layer {n} of {len(descriptors)} ({layer_digest}) of {ref}"
        _check_media_type(media_type, where)
        layer = known.get(layer_digest) or new.get(layer_digest)
        if layer is None:
            # Checks of images sharing a layer at once: one downloads, the others wait.
            with _turn(layer_digest):
                layer = store.read().get(layer_digest)
                if layer is None:
                    layer = _verify(client, repository, layer_digest, where)
                    store.add([layer])
            new[layer_digest] = layer
        if layer.diff_id != claimed:
            raise LayerError(
                f"{where} has diff_id {layer.diff_id}, but the image config claims "
                f"{claimed}; Trivy would take its analysis from whatever layer has that "
                f"diff_id: {_MALFORMED}"
            )
        verified.append(layer)
    return LayerCheck(tuple(verified))


_NOT_SCANNED = "the image is not scanned and nothing is promoted"
_MALFORMED = (
    f"{_NOT_SCANNED}; the upstream image is malformed or forged: report it to its publisher and do not use it"
)


def _layer_descriptors(doc: dict, ref: str) -> list[tuple[str, str]]:
    layers = doc.get("layers")
    if not isinstance(layers, list) or not all(
        isinstance(d, dict) and isinstance(d.get("digest"), str) and isinstance(d.get("mediaType"), str)
        for d in layers
    ):
        raise LayerError(f"the manifest of {ref} has no readable list of layer descriptors: {_MALFORMED}")
    return [(d["digest"], d["mediaType"]) for d in layers]


def _diff_ids(client: RegistryClient, repository: str, doc: dict, ref: str) -> list[str]:
    config = doc.get("config")
    digest = config.get("digest") if isinstance(config, dict) else None
    if not isinstance(digest, str):
        raise LayerError(f"the manifest of {ref} names no config: {_MALFORMED}")
    data = bytearray()
    for chunk in client.iter_blob(repository, digest):
        data += chunk
        if len(data) > _CONFIG_MAX_BYTES:
            raise LayerError(
                f"the config of {ref} is larger than {_CONFIG_MAX_BYTES >> 20} MiB: {_MALFORMED}"
            )
    try:
        diff_ids = json.loads(data)["rootfs"]["diff_ids"]
    except (ValueError, KeyError, TypeError):
        diff_ids = None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise LayerError(f"the config of {ref} ({digest}) has no list of rootfs.diff_ids: {_MALFORMED}")
    return diff_ids


def _check_media_type(media_type: str, where: str) -> None:
    if _FOREIGN.match(media_type):
        raise LayerError(
            f"{where} is non-distributable ({media_type}): its bytes may come from "
            "outside the trusted registry, and syncer scans only what that "
            f"registry holds: {_NOT_SCANNED}; use an image without "
            "non-distributable layers"
        )
    if media_type not in _LAYER_TYPES:
        raise LayerError(
            f"{where} has media type {media_type}, not an image layer (tar, "
            f"tar+gzip or tar+zstd): {_NOT_SCANNED}; ask its publisher for an "
            "image of standard layers"
        )


def _verify(client: RegistryClient, repository: str, digest: str, where: str) -> VerifiedLayer:
    try:
        diff_id, package_dbs = read_layer(client.iter_blob(repository, digest))
    except CorruptLayer as err:
        raise LayerError(f"{where} cannot be decompressed ({err}): {_MALFORMED}") from None
    return VerifiedLayer(digest, diff_id, package_dbs)


# --- reading one layer -------------------------------------------------------------------------


class CorruptLayer(ValueError):
    """The layer's bytes do not decompress (a truncated or damaged stream)."""


def read_layer(chunks: Iterable[bytes]) -> tuple[str, frozenset[str]]:
    """The diff_id of a compressed layer and the OS package databases in it, from its bytes
    in chunks, read to the end (so that ``RegistryClient.iter_blob`` checks their digest)
    in bounded memory. CorruptLayer when its compression is damaged."""
    raw = _ChunkReader(iter(chunks))
    magic = raw.peek(len(_ZSTD_MAGIC))
    if magic.startswith(_GZIP_MAGIC):
        plain: io.IOBase | zstandard.ZstdDecompressionReader = gzip.GzipFile(fileobj=raw, mode="rb")
    elif magic.startswith(_ZSTD_MAGIC):
        # Concatenated frames, as Go's decoder reads them. The stubs want IO[bytes]; read() is
        # all the reader calls, which a raw stream has.
        plain = zstandard.ZstdDecompressor().stream_reader(
            cast(IO[bytes], raw), read_across_frames=True, closefd=False
        )
    else:
        plain = raw
    hashed = _HashingReader(plain)
    # Tar headers are read 512 bytes at a time: from a buffer, not through the decompressor.
    tar = io.BufferedReader(hashed, _CHUNK)
    try:
        package_dbs = _package_dbs(tar)
        while tar.read(_CHUNK):
            pass
    except CorruptLayer:
        while raw.read(_CHUNK):  # a blob that is not what its digest says fails as that
            pass
        raise
    while raw.read(_CHUNK):  # bytes after the compressed stream count for the digest
        pass
    return f"sha256:{hashed.hasher.hexdigest()}", package_dbs


def _package_dbs(stream: io.BufferedIOBase) -> frozenset[str]:
    """The OS package databases among the members of a tar stream, from their headers alone:
    tarfile takes about 40 µs per member, and a layer may have 10^5 of them. Follows ustar,
    GNU (long names, sparse extensions) and PAX (path, size); stops quietly at a block that
    is not a header, since the diff_id does not depend on it and Trivy fails on a broken tar."""
    found: set[str] = set()
    path: bytes | None = None  # the next member's, from a GNU long name or PAX header
    size: int | None = None  # the next member's, from a PAX header
    while len(header := _read_exact(stream, _BLOCK)) == _BLOCK and header != _ZERO_BLOCK:
        if not _checksum_ok(header):
            break
        kind = header[156:157]
        if kind == b"S" and header[482]:  # old GNU sparse: extension blocks before the data
            while len(ext := _read_exact(stream, _BLOCK)) == _BLOCK and ext[504]:
                pass
        if size is None and (size := _number(header[124:136])) is None:
            break
        if kind in (b"L", b"x"):
            if size > _SPECIAL_MAX:  # Go's archive/tar refuses these too
                break
            data = _read_exact(stream, size)
        else:
            _skip(stream, size)
        _skip(stream, -size % _BLOCK)
        size = None
        if kind == b"L":  # GNU long name
            path = data.split(b"\0", 1)[0]
        elif kind == b"x":  # PAX extended header
            try:
                path, size = _pax_records(data, path)
            except ValueError:
                break
        elif kind not in (b"g", b"K"):  # global PAX headers and GNU long link names: not names
            name = (path or _ustar_name(header)).decode("utf-8", "surrogateescape")
            name = name.lstrip("/").removeprefix("./")
            path = None
            if kind != b"5" and _is_package_db(name):  # 5: a directory
                found.add(name)
    return frozenset(found)


_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)
_SPECIAL_MAX = 1 << 20  # the largest long name or PAX header read


def _checksum_ok(header: bytes) -> bool:
    # The checksum field counts as eight spaces; some old tars summed signed bytes.
    stored = _number(header[148:156])
    unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:])
    if stored == unsigned:
        return True
    return stored == unsigned - 256 * sum(1 for b in header if b > 127)


def _number(field: bytes) -> int | None:
    """A tar number: octal text, or base-256 when the high bit is set (sizes from 8 GiB)."""
    if field[:1] and field[0] & 0x80:
        if field[0] == 0xFF:  # negative: no size
            return None
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        return None


def _ustar_name(header: bytes) -> bytes:
    name = header[:100].split(b"\0", 1)[0]
    if header[257:263] == b"ustar\0":  # POSIX ustar: a prefix directory (GNU uses it otherwise)
        prefix = header[345:500].split(b"\0", 1)[0]
        if prefix:
            return prefix + b"/" + name
    return name


def _pax_records(data: bytes, path: bytes | None) -> tuple[bytes | None, int | None]:
    """The path and size that PAX records (``"%d %s=%s\\n"``) give the next member;
    ValueError if they are malformed."""
    size = None
    while data.strip(b"\0"):
        length, _, _ = data.partition(b" ")
        n = int(length)
        key, sep, value = data[len(length) + 1 : n].removesuffix(b"\n").partition(b"=")
        if n <= len(length) or not sep:
            raise ValueError("malformed PAX record")
        if key == b"path":
            path = value
        elif key == b"size":
            size = int(value)
        data = data[n:]
    return path, size


def _read_exact(stream: io.BufferedIOBase, size: int) -> bytes:
    parts, left = [], size
    while left > 0 and (part := stream.read(min(left, _CHUNK))):
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _skip(stream: io.BufferedIOBase, size: int) -> None:
    while size > 0 and (part := stream.read(min(size, _CHUNK))):
        size -= len(part)


class _ChunkReader(io.RawIOBase):
    """A raw stream over an iterator of byte chunks."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._rest = memoryview(b"")

    def readable(self) -> bool:
        return True

    def peek(self, size: int) -> bytes:
        """At least ``size`` bytes from the start, unless the stream is shorter; not consumed."""
        head = bytes(self._rest)
        while len(head) < size and (chunk := next(self._chunks, None)) is not None:
            head += chunk
        self._rest = memoryview(head)
        return head[:size]

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer)
        while not self._rest:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._rest = memoryview(chunk)
        n = min(len(view), len(self._rest))
        view[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n


class _HashingReader(io.RawIOBase):
    """Hashes what is read through it; any decompression failure becomes CorruptLayer."""

    def __init__(self, source: io.IOBase | zstandard.ZstdDecompressionReader):
        self._source = source
        self.hasher = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer)
        try:
            data = self._source.read(len(view))
        except (OSError, EOFError, zlib.error, zstandard.ZstdError) as err:
            raise CorruptLayer(str(err) or type(err).__name__) from None
        self.hasher.update(data)
        view[: len(data)] = data
        return len(data)


# --- the verified-pair cache -------------------------------------------------------------------


class _Store:
    """``{"version": 1, "layers": {digest: {"diff_id", "package_dbs"}}}``, read as hostile
    input: entries of the wrong shape are skipped, a bad file counts as empty, and what is
    skipped is verified again. Writers merge under a lock and replace the file atomically."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._pairs: dict[str, VerifiedLayer] = {}

    def read(self) -> dict[str, VerifiedLayer]:
        """The pairs on disk, parsed again only when the file changed (a run checks many
        images, and a DB update re-scans all of them)."""
        with self._lock:
            try:
                st = self.path.stat()
                stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            except OSError:
                stamp = None
            if stamp != self._stamp:
                self._pairs = _parse(self.path) if stamp else {}
                self._stamp = stamp
            return self._pairs

    def add(self, layers: Iterable[VerifiedLayer]) -> None:
        layers = list(layers)
        if not layers:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Another process (a shard of the same run) may write too: merge what is on disk now.
        with self._lock, open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            pairs = {**_parse(self.path), **{layer.digest: layer for layer in layers}}
            write_atomic(
                self.path,
                json.dumps(
                    {
                        "version": _CACHE_VERSION,
                        "layers": {
                            d: {"diff_id": p.diff_id, "package_dbs": sorted(p.package_dbs)}
                            for d, p in sorted(pairs.items())
                        },
                    },
                    separators=(",", ":"),
                ).encode(),
            )
            self._stamp = None  # re-read on next use, with what others added


def _parse(path: Path) -> dict[str, VerifiedLayer]:
    try:
        with path.open("rb") as f:
            data = f.read(_CACHE_MAX_BYTES + 1)
        doc = json.loads(data) if len(data) <= _CACHE_MAX_BYTES else None
    except (OSError, ValueError):
        return {}
    if (
        not isinstance(doc, dict)
        or doc.get("version") != _CACHE_VERSION
        or not isinstance(doc.get("layers"), dict)
    ):
        return {}
    pairs = {}
    for digest, entry in doc["layers"].items():
        if not (_SHA256.fullmatch(digest) and isinstance(entry, dict)):
            continue
        diff_id, dbs = entry.get("diff_id"), entry.get("package_dbs")
        if not (
            isinstance(diff_id, str)
            and _SHA256.fullmatch(diff_id)
            and isinstance(dbs, list)
            and all(isinstance(n, str) and _is_package_db(n) for n in dbs)
        ):
            continue
        pairs[digest] = VerifiedLayer(digest, diff_id, frozenset(dbs))
    return pairs


def _is_package_db(name: str) -> bool:
    if name.rsplit("/", 1)[-1].startswith(".wh."):
        return False  # a whiteout deletes a file of a lower layer: it holds no packages
    return name in _PACKAGE_DB_FILES or (name.startswith(_PACKAGE_DB_DIRS) and ".." not in name)


_stores: dict[Path, _Store] = {}
_stores_lock = threading.Lock()
_turns: dict[str, threading.Lock] = {}


def _turn(digest: str) -> threading.Lock:
    """The lock of one layer's check in this process."""
    with _stores_lock:
        return _turns.setdefault(digest, threading.Lock())


def _store(path: Path) -> _Store:
    """One store per file and process, so that its parse is shared by the scans of a run."""
    with _stores_lock:
        return _stores.setdefault(path.absolute(), _Store(path.absolute()))
