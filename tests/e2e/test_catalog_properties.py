"""The catalog loader never crashes: hypothesis mutates the shipped catalog (lines inserted,
deleted, duplicated; random bytes; deep nesting; aliases; huge values) and ``syncer validate``
must exit 0 or 2, print no traceback, and stay within bounds of CPU time and memory.

Most examples run in-process for speed; a few go through the real command line. The examples
are derandomized and no database is kept, so every run tries the same ones.
"""

from __future__ import annotations

import contextlib
import io
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncer.cli import main

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "catalog"
FILES = sorted(str(p.relative_to(SHIPPED)) for p in SHIPPED.rglob("*.yaml"))
CPU_SECONDS = 5
MEMORY_BYTES = 200 * 2**20

# Lines a careless author or a hostile one might add: YAML oddities, wrong types, aliases.
HOSTILE_LINES = [
    "signers: 1",
    "signers: [1, null, {a: b}]",
    "images: 7",
    "images: [7, null, [x]]",
    "match: 'a{99999999999}'",
    "match: '^(a+)+$'",
    "match: '(a)\\1'",
    "match: '(?=x)'",
    "exclude: ['[abc']",
    "tags: [1.10, .5, -1]",
    "newest: 1e999",
    "newest: " + "9" * 5000,
    "expires: 2027-02-30",
    "expires: !!timestamp nope",
    "x: !!int 1.5",
    "x: !!binary zz",
    "x: !!python/object:os.system ls",
    "x: !!set {a, b}",
    "x: !!omap [a: 1]",
    "? [a, b]\n: c",
    "? {a: b}\n: c",
    "~: null",
    "<<: *nope",
    "x: &a [*a]",
    "x: &m\n  <<: *m",
    "&x y: *x",
    "groups: {anonymous: {pull: 1}}",
    "target: {registry: 'http://x'}",
    "\ufeff",
    "---",
    "--- !!str\n...",
    "%YAML 1.1",
    "%TAG ! tag:x,2000:",
    "key: |\n  text",
    "key: >-\n  text",
    "'unterminated",
    '"\\x',
    "- -\n - -",
    "\t\ttabbed: x",
    "{",
    "}",
    "[",
    "]",
    "&",
    "*",
    "!",
    "|",
    ">",
    "@",
    "`",
    "%",
]


def bomb(levels: int) -> str:
    lines = ["b0: &b0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"b{i}: &b{i} [" + ", ".join([f"*b{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + f"\nbomb: *b{levels}"


def insert(text: str, where: int, new: str) -> str:
    lines = text.split("\n")
    lines.insert(where % (len(lines) + 1), new)
    return "\n".join(lines)


def apply(text: bytes, mutation: tuple) -> bytes:
    kind, where, arg = mutation
    if kind == "bytes":
        at = where % (len(text) + 1)
        return text[:at] + arg + text[at + len(arg) // 2 :]
    if kind == "truncate":
        return text[: where % (len(text) + 1)]
    decoded = text.decode("utf-8", "surrogateescape")
    lines = decoded.split("\n")
    index = where % len(lines)
    if kind == "delete":
        del lines[index]
        changed = "\n".join(lines)
    elif kind == "duplicate":
        changed = insert(decoded, index, lines[index])
    elif kind == "indent":
        lines[index] = " " * arg + lines[index].lstrip(" ")
        changed = "\n".join(lines)
    else:  # insert a line: hostile, random text, nesting, an alias bomb or a huge value
        changed = insert(decoded, index, arg)
    return changed.encode("utf-8", "surrogateescape")


def nesting(depth: int, style: str) -> str:
    if style == "flow":
        return "x: " + "[" * depth + "]" * depth
    if style == "mapping":
        return "x: " + "{a: " * depth + "}" * depth
    if style == "sequence":
        return "x:\n  " + "- " * depth + "a"
    return "".join(" " * i + f"k{i}:\n" for i in range(depth))


_lines = st.one_of(
    st.sampled_from(HOSTILE_LINES),
    st.text(max_size=40),
    st.builds(nesting, st.integers(10, 3000), st.sampled_from(["flow", "mapping", "sequence", "indent"])),
    st.builds(bomb, st.integers(1, 9)),
    st.builds(
        lambda key, n, c: f"{key}: '{c * n}'",
        st.sampled_from(["match", "source", "x"]),
        st.integers(1000, 200_000),
        st.sampled_from("a(\\{"),
    ),
    st.builds(lambda n: "# c\n" * n, st.integers(1000, 100_000)),
)
_mutation = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, 10_000), _lines),
    st.tuples(st.sampled_from(["delete", "duplicate"]), st.integers(0, 10_000), st.none()),
    st.tuples(st.just("indent"), st.integers(0, 10_000), st.integers(0, 9)),
    st.tuples(st.just("bytes"), st.integers(0, 10_000), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("truncate"), st.integers(0, 10_000), st.none()),
)
_catalog_edits = st.lists(st.tuples(st.sampled_from(FILES), _mutation), min_size=1, max_size=4)


def mutated_catalog(directory: Path, edits: list[tuple[str, tuple]]) -> Path:
    root = directory / "catalog"
    shutil.copytree(SHIPPED, root)
    for relative, mutation in edits:
        path = root / relative
        path.write_bytes(apply(path.read_bytes(), mutation))
    return root


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


@settings(
    max_examples=120,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(_catalog_edits)
def test_validate_in_process_exits_0_or_2_within_bounds(edits):
    # ru_maxrss is a high-water mark: an example that needed more than the budget raises it.
    baseline = _baseline_rss()
    with tempfile.TemporaryDirectory() as tmp:
        root = mutated_catalog(Path(tmp), edits)
        out, err = io.StringIO(), io.StringIO()
        start = time.process_time()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["validate", "--catalog", str(root)])
        seconds = time.process_time() - start
    printed = out.getvalue() + err.getvalue()
    assert code in (0, 2), printed
    assert "Traceback" not in printed
    assert seconds < CPU_SECONDS, (seconds, printed[-2000:])
    assert peak_rss() - baseline < MEMORY_BYTES
    if code == 2:
        # Every problem names its file, and each error a reason after "error: ".
        errors = [line for line in printed.splitlines() if ": error: " in line]
        assert errors, printed
        assert all(line.startswith(str(root)) and line.split(": error: ", 1)[1] for line in errors)


_BASELINE: list[int] = []


def _baseline_rss() -> int:
    if not _BASELINE:
        _BASELINE.append(peak_rss())
    return _BASELINE[0]


# `syncer ARGS` that writes its own peak resident memory, in KiB, to the file in argv[1].
_CHILD = """
import sys
from syncer.cli import main
try:
    code = main(sys.argv[2:])
finally:
    status = open("/proc/self/status").read()
    open(sys.argv[1], "w").write(status.split("VmHWM:")[1].split()[0])
sys.exit(code)
"""


@settings(
    max_examples=6,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(_catalog_edits)
def test_validate_through_the_cli_exits_0_or_2_within_bounds(edits):
    with tempfile.TemporaryDirectory() as tmp:
        root = mutated_catalog(Path(tmp), edits)
        env = {k: v for k, v in os.environ.items() if k != "GITHUB_ACTIONS"}
        # Output to files, not pipes: a long report must not fill a pipe nobody reads yet.
        # The child reports its own peak memory (VmHWM): wait4's ru_maxrss also counts the
        # forking test process's, which Linux carries across exec.
        hwm = Path(tmp) / "hwm"
        with open(Path(tmp) / "out", "w+") as out, open(Path(tmp) / "err", "w+") as err:
            proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(hwm), "validate", "--catalog", str(root)],
                cwd=tmp,
                env=env,
                stdout=out,
                stderr=err,
            )
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0), err.seek(0)
            printed, stderr = out.read(), err.read()
        peak = int(hwm.read_text()) * 1024
    assert proc.returncode in (0, 2), printed + stderr
    assert "Traceback" not in stderr
    assert usage.ru_utime + usage.ru_stime < 2 * CPU_SECONDS  # interpreter start included
    assert peak < MEMORY_BYTES
