"""Read the names of a bbolt file's top-level buckets, without a Go toolchain.

Trivy's vulnerability DB (``<cache>/db/trivy.db``) is a bbolt file whose top-level buckets
name the advisory sources it holds: ``debian 12``, ``alpine 3.20``, ``pip::GitHub Security
Advisory pip`` …. Knowing them tells whether Trivy *could* match an image's packages at all:
Trivy silently reports zero findings for an OS release or ecosystem it has no bucket for,
and zero findings must not read as clean.

Only the root bucket's pages are read (a few pages of a file that can be a gigabyte), from a
memory map. The page layout follows go.etcd.io/bbolt (internal/common/page.go, meta.go):
the same facts ``syncer.demo.trivydb`` writes by, and the file is treated as hostile:
any inconsistency is a ``BboltError``, never an exception from ``struct`` or ``mmap``.
"""

from __future__ import annotations

import mmap
import os
import struct

_MAGIC = 0xED0CDAED
_BRANCH, _LEAF = 0x01, 0x02
_BUCKET_LEAF_FLAG = 0x01
_HEADER = struct.Struct("<QHHI")  # page id, flags, count, overflow
_LEAF_ELEMENT = struct.Struct("<IIII")  # flags, pos, ksize, vsize; pos counts from the element
_BRANCH_ELEMENT = struct.Struct("<IIQ")  # pos, ksize, child page id
_META = struct.Struct("<IIIIQQQQQQ")  # magic, version, page size, flags, root, sequence,
#                                       freelist, high-water page, txid, checksum
# A root bucket has at most a few thousand keys; a deeper tree than this is a loop or damage.
_MAX_DEPTH = 16


class BboltError(Exception):
    """The file is not a readable bbolt database."""


def _fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def root_buckets(path: str | os.PathLike) -> frozenset[str]:
    """The names of the top-level buckets of the bbolt file at ``path``."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 2 * 4096:
                raise BboltError(f"{path} is too small to be a bbolt database ({size} bytes)")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return _Reader(data, str(path)).buckets()
    except OSError as err:
        raise BboltError(f"{path} cannot be read: {err.strerror}") from None


class _Reader:
    def __init__(self, data: mmap.mmap, path: str):
        self.data = data
        self.path = path
        self.page_size, self.root, self.pages = self._meta()

    def _fail(self, problem: str) -> BboltError:
        return BboltError(f"{self.path} is not a readable bbolt database: {problem}")

    def _meta(self) -> tuple[int, int, int]:
        """(page size, root page, page count) of the newest valid meta page: meta 0 sits at
        byte 0, meta 1 one page later (a page size meta 0 gives, else the usual 4096)."""
        metas = [m for m in (self._meta_at(0),) if m]
        metas += [m for m in (self._meta_at(metas[0][1] if metas else 4096),) if m]
        if not metas:
            raise self._fail("no valid meta page")
        _, page_size, root, high = max(metas)
        return page_size, root, min(high, len(self.data) // page_size)

    def _meta_at(self, start: int) -> tuple[int, int, int, int] | None:
        body = self.data[start + _HEADER.size : start + _HEADER.size + _META.size]
        if len(body) < _META.size:
            return None
        magic, version, page_size, _, root, _, _, high, txid, checksum = _META.unpack(body)
        if magic != _MAGIC or version != 2 or _fnv1a64(body[:-8]) != checksum:
            return None
        if page_size < 512 or page_size & (page_size - 1):
            return None
        return txid, page_size, root, high

    def _page(self, pgid: int) -> tuple[int, int, memoryview]:
        if not 2 <= pgid < self.pages:
            raise self._fail(f"page {pgid} is outside the file")
        start = pgid * self.page_size
        header = self.data[start : start + _HEADER.size]
        page_id, flags, count, overflow = _HEADER.unpack(header)
        if page_id != pgid:
            raise self._fail(f"page {pgid} says it is page {page_id}")
        end = start + (overflow + 1) * self.page_size
        if end > len(self.data):
            raise self._fail(f"page {pgid} runs past the end of the file")
        return flags, count, memoryview(self.data)[start + _HEADER.size : end]

    def buckets(self) -> frozenset[str]:
        names: set[str] = set()
        self._walk(self.root, names, 0)
        return frozenset(names)

    def _walk(self, pgid: int, names: set[str], depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise self._fail("the root bucket's tree is deeper than any real one")
        flags, count, body = self._page(pgid)
        if flags & _BRANCH:
            for i in range(count):
                pos, ksize, child = _BRANCH_ELEMENT.unpack_from(body, i * _BRANCH_ELEMENT.size)
                self._walk(child, names, depth + 1)
        elif flags & _LEAF:
            for i in range(count):
                at = i * _LEAF_ELEMENT.size
                elem_flags, pos, ksize, _ = _LEAF_ELEMENT.unpack_from(body, at)
                if not elem_flags & _BUCKET_LEAF_FLAG:
                    continue
                key = bytes(body[at + pos : at + pos + ksize])
                if len(key) != ksize:
                    raise self._fail(f"a key on page {pgid} runs past its page")
                names.add(key.decode("utf-8", "replace"))
        else:
            raise self._fail(f"page {pgid} is neither a branch nor a leaf (flags {flags:#x})")
