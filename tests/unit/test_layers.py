"""syncer.stages.layers: diff_ids checked against layer bytes, from a real registry, and the cache of
verified pairs."""

from __future__ import annotations

import hashlib
import io
import tarfile

import pytest
import zstandard

from syncer.stages.layers import CorruptLayer, read_layer
from tests.harness.images import alpine_files, debian_files, gzip_bytes, tar_layer

DEBIAN = debian_files()
APP = {"app/main.py": "print('hello')\n"}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# --- one layer's bytes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "compress",
    [
        gzip_bytes,
        lambda tar: tar,
        lambda tar: zstandard.ZstdCompressor().compress(tar),
        # Several gzip members and several zstd frames are one stream to Go's readers too.
        lambda tar: gzip_bytes(tar[:1000]) + gzip_bytes(tar[1000:]),
        lambda tar: (
            zstandard.ZstdCompressor().compress(tar[:1000]) + zstandard.ZstdCompressor().compress(tar[1000:])
        ),
    ],
    ids=["gzip", "uncompressed", "zstd", "gzip-members", "zstd-frames"],
)
@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_the_diff_id_is_the_hash_of_the_uncompressed_tar(compress, chunk):
    tar = tar_layer({**DEBIAN, **alpine_files()})
    diff_id, package_dbs = read_layer(chunked(compress(tar), chunk))
    assert diff_id == sha256(tar)
    assert package_dbs == {"var/lib/dpkg/status", "lib/apk/db/installed"}


def test_package_databases_are_noted_by_path_and_whiteouts_are_not():
    tar = tar_layer(
        {
            "var/lib/rpm/Packages": "rpm",
            "usr/lib/sysimage/rpm/rpmdb.sqlite": "rpm",
            "var/lib/dpkg/status.d/libc6": "distroless",
            "var/lib/dpkg/status.d/.wh.libssl3": "",
            "var/lib/dpkg/status-old": "not the database",
            "usr/share/doc/var/lib/dpkg/status": "not at the root",
        }
    )
    _, package_dbs = read_layer([gzip_bytes(tar)])
    assert package_dbs == {
        "var/lib/rpm/Packages",
        "usr/lib/sysimage/rpm/rpmdb.sqlite",
        "var/lib/dpkg/status.d/libc6",
    }


@pytest.mark.parametrize(
    "fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT], ids=["gnu", "pax", "ustar"]
)
def test_package_databases_are_found_behind_long_names_in_every_tar_format(fmt):
    deep = "var/lib/dpkg/status.d/" + "x" * 80 + "/" + "y" * 60  # ustar: in the prefix field
    longer = "var/lib/rpm/" + "z" * 120  # no ustar field holds it: GNU L and PAX path only
    members = {"etc/os-release": b"ID=debian\n", deep: b"a", "var/lib/dpkg/status": b"b" * 5000}
    if fmt != tarfile.USTAR_FORMAT:
        members[longer] = b"c"
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            if fmt == tarfile.PAX_FORMAT:
                info.pax_headers = {"comment": "ä" * 300}
            tar.addfile(info, io.BytesIO(data))
    diff_id, package_dbs = read_layer([gzip_bytes(out.getvalue())])
    assert diff_id == sha256(out.getvalue())
    assert package_dbs == set(members) - {"etc/os-release"}


def test_content_that_is_no_tar_still_has_a_diff_id():
    data = b"not a tar at all" * 100
    assert read_layer([gzip_bytes(data)]) == (sha256(data), frozenset())


@pytest.mark.parametrize(
    "damage",
    [
        lambda gz: gz[:-20],  # truncated
        lambda gz: gz[:30] + bytes(b ^ 0xFF for b in gz[30:60]) + gz[60:],  # flipped bits
    ],
    ids=["truncated", "corrupt"],
)
def test_a_damaged_gzip_stream_is_corrupt(damage):
    with pytest.raises(CorruptLayer):
        read_layer([damage(gzip_bytes(tar_layer(DEBIAN)))])
