"""Issue 13: what checking every layer's diff_id before Trivy runs costs, per image.

Pushes IMAGES images of three layers each (distinct content: a base layer of many small files
and a large file, half random and half text, so it compresses about as real layers do; a
middle and a small top layer) into a target registry, behind the harness's latency proxy
(every request to the trusted registry delayed by ``--latency-ms``). Then, in each round, with
a fresh Trivy cache holding an empty database and no verified pairs:

1. first scan: ``syncer.stages.layers.check_image`` of every image (downloads and hashes each
   layer), then ``syncer.tools.trivy.scan_image`` of every image (the calls syncer/stages/scan.py makes,
   in that order);
2. re-scan, as after a database update: the same again, the check reading its verified
   pairs and Trivy its layer cache.

Bytes are the blob GETs the proxy forwarded, summed by the blobs' sizes. The peak of Python
allocations during one first check (tracemalloc, straight to the registry: the proxy holds
whole answers in memory) shows the memory the check needs.

    .venv/bin/python benchmarks/layer_check.py [--small] [--repeat N] [--keep] [--latency-ms MS]
"""

from __future__ import annotations

import random
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c

from syncer.stages import layers
from syncer.tools import trivy
from syncer.tools.registry import RegistryClient
from tests.harness.faultproxy import FaultProxy
from tests.harness.images import Image, build_image, debian_files

MIB = 1 << 20


def filler(rng: random.Random, size: int) -> bytes:
    """Half random bytes, half text: compresses to a bit more than half, like binaries."""
    words = b" ".join(
        rng.choice((b"lib", b"usr", b"share", b"config", b"data", b"0x1f")) for _ in range(size // 8)
    )
    return rng.randbytes(size // 2) + words[: size - size // 2]


def bench_image(i: int, scale: int) -> Image:
    rng = random.Random(i)
    base = {
        **debian_files(),
        "usr/lib/big.so": filler(rng, 12 * MIB // scale),
        **{f"usr/share/doc/pkg-{n:04d}/README": filler(rng, 2048) for n in range(2000 // scale)},
    }
    middle = {"opt/app/app.bin": filler(rng, 4 * MIB // scale)}
    top = {"etc/app.conf": filler(rng, 64 * 1024), "etc/bench-id": f"{i}\n"}
    return build_image([base, middle, top])


def blob_bytes(proxy: FaultProxy, start: int, sizes: dict[str, int]) -> int:
    return sum(
        sizes.get(s.uri.rsplit("/", 1)[-1], 0)
        for s in proxy.seen[start:]
        if s.method == "GET" and "/blobs/" in s.uri and s.status == 200
    )


def main() -> int:
    p = c.parser(__doc__.split("\n\n")[0])
    p.add_argument(
        "--latency-ms",
        type=float,
        default=10.0,
        metavar="MS",
        help="added to every request to the trusted registry (default: %(default)s)",
    )
    args = p.parse_args()
    count, scale = (2, 4) if args.small else (6, 1)
    images = [bench_image(i, scale) for i in range(count)]
    sizes = {b.digest: len(b.data) for image in images for b in image.blobs}
    layer_mb = sum(len(layer.data) for image in images for layer in image.layers) / count / MIB
    print(
        f"layer_check: {count} images of 3 layers, {layer_mb:.1f} MiB of compressed layers "
        f"each, {args.latency_ms:g} ms per request to the trusted registry"
    )
    print(f"machine: {c.machine()}")

    phases: dict[str, list[tuple[float, float, int]]] = {}  # (seconds, cpu, bytes) per image
    peak = 0
    with c.Workspace("layers", keep=args.keep) as ws:
        target = ws.registry("target")
        for i, image in enumerate(images):
            c.upload(target, f"quarantine/bench-{i}", image, ["1"])
        with (
            FaultProxy(target.url, latency=args.latency_ms / 1000) as proxy,
            RegistryClient(proxy.host, tls_verify=False) as client,
        ):
            for n in range(c.repeats(args)):
                cache = ws.trivy_db(f"trivy-cache-{n}").cache_dir
                if n == 0:  # once, past the proxy, which holds whole answers in memory
                    peak = _peak_allocations(target, images[0], ws.root / "tracemalloc-cache")
                for scan in ("first scan", "re-scan"):
                    for what, run in (("check", _check), ("trivy", _trivy)):
                        start, cpu, mark = time.perf_counter(), c.cpu_now(), len(proxy.seen)
                        for i, image in enumerate(images):
                            run(client, proxy, f"quarantine/bench-{i}", image.digest, cache)
                        phases.setdefault(f"{scan}: {what}", []).append(
                            (
                                (time.perf_counter() - start) / count,
                                (c.cpu_now() - cpu) / count,
                                blob_bytes(proxy, mark, sizes) // count,
                            )
                        )
                print(
                    f"  round {n + 1}: " + ", ".join(f"{k} {v[-1][0]:.2f} s" for k, v in phases.items()),
                    flush=True,
                )

    c.heading(f"per image ({count} images, {layer_mb:.1f} MiB of layers each)")
    for scan in ("first scan", "re-scan"):
        check, scanned = phases[f"{scan}: check"], phases[f"{scan}: trivy"]
        wall = c.Spread(tuple(s for s, _, _ in check))
        trivy_wall = c.Spread(tuple(s for s, _, _ in scanned))
        c.line(f"{scan}: layer check, wall", wall.text(digits=3))
        c.line(f"{scan}: layer check, CPU", c.Spread(tuple(u for _, u, _ in check)).text(digits=3))
        c.line(f"{scan}: layer check, blob bytes", f"{check[0][2] / MIB:.2f} MiB")
        c.line(f"{scan}: trivy scan, wall", trivy_wall.text(digits=3))
        c.line(f"{scan}: trivy scan, blob bytes", f"{scanned[0][2] / MIB:.2f} MiB")
        c.line(f"{scan}: check / trivy (wall)", c.ratio(wall, trivy_wall))
    c.line("peak Python allocations during one first check", f"{peak / MIB:.1f} MiB")
    return 0


def _peak_allocations(target, image: Image, cache: Path) -> int:
    with RegistryClient(target.host, tls_verify=False) as direct:
        tracemalloc.start()
        layers.check_image(direct, "quarantine/bench-0", image.digest, cache)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def _check(client: RegistryClient, proxy: FaultProxy, repository: str, digest: str, cache: Path) -> None:
    layers.check_image(client, repository, digest, cache)


def _trivy(client: RegistryClient, proxy: FaultProxy, repository: str, digest: str, cache: Path) -> None:
    result = trivy.scan_image(f"{proxy.host}/{repository}@{digest}", cache_dir=cache, insecure=True)
    if result.image_id == "":
        raise SystemExit(f"trivy scanned no image config for {repository}@{digest}")


if __name__ == "__main__":
    sys.exit(main())
